"""`python -m clients aiperf`: the input files mix what they claim, from disjoint pairs, and aiperf's summary is
read back; no aiperf process runs here."""

from __future__ import annotations

import json
from pathlib import Path

from clients.aiperf import BYPASS_HEADER, aiperf_command, build_mixes, load_pairs, read_summary


def test_each_mix_holds_its_share_of_repeats_paraphrases_and_new_questions(tmp_path: Path) -> None:
    pairs = load_pairs()
    warm, files = build_mixes(pairs, [0.0, 0.5, 0.9], 10, tmp_path)
    originals, paraphrases = {o for o, _ in pairs}, {s for _, s in pairs}
    assert [(f.exact, f.paraphrase, f.new) for f in files] == [(0, 0, 10), (2, 3, 5), (4, 5, 1)]
    seen: set[str] = set()
    for mix in files:
        texts = [json.loads(line)["text"] for line in mix.path.read_text().splitlines()]
        assert len(texts) == 10 and not seen & set(texts)  # no file holds another's questions
        seen |= set(texts)
        assert sum(t in warm for t in texts) == mix.exact
        assert sum(t in paraphrases and t not in originals for t in texts) == mix.paraphrase
        assert sum(t in originals and t not in warm for t in texts) == mix.new
    assert len(warm) == len(set(warm)) == 0 + 5 + 9


def test_the_command_is_lean_streams_and_bypasses_with_a_header(tmp_path: Path) -> None:
    command = aiperf_command("http://h:1", "m", "sk", tmp_path / "in.jsonl", 8, 2, 16, "builtin", tmp_path,
                             BYPASS_HEADER)
    assert command[command.index("--workers-max") + 1] == "1"
    assert command[command.index("--record-processors") + 1] == "1"
    assert "--streaming" in command and command[command.index("--ui") + 1] == "none"
    assert json.loads(command[command.index("--header") + 1]) == {"Cache-Control": "no-cache, no-store"}


def test_summary_reads_aiperfs_own_metrics(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "profile_export_aiperf.json").write_text(json.dumps({"records": {
        "time_to_first_token": {"unit": "ms", "avg": 12.345}, "inter_token_latency": {"unit": "ms", "avg": 40.0},
        "request_throughput": {"unit": "requests/sec", "avg": 1.5},
        "output_token_throughput": {"unit": "tokens/sec", "avg": 30.0}}}))
    assert read_summary(tmp_path) == {"ttft_ms": 12.35, "itl_ms": 40.0, "requests_per_s": 1.5, "output_tok_s": 30.0,
                                      "errors": 0}
