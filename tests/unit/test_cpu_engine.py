"""cpu_engine without llama.cpp or Triton: tensor mapping, chunk reading, KV blocks, admission, config."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from cpu_engine.admission import InflightAdmission, QueueFull, StaticBatchAdmission
from cpu_engine.completion import FINISH_LENGTH, FINISH_STOP, CompletionStream
from cpu_engine.config import ConfigError, EngineConfig
from cpu_engine.detokenize import IncrementalDetokenizer
from cpu_engine.kv_blocks import KvBlockPool, RequestBlocks
from cpu_engine.requests import GenerationRequest, InvalidRequest, parse_word_list

# --- requests -------------------------------------------------------------------------------------------------


def inputs(**extra) -> dict:
    base = {"input_ids": np.array([[5, 6, 7, 8]], dtype=np.int32), "request_output_len": np.array([[16]])}
    return {**base, **{k: np.array([[v]]) for k, v in extra.items()}}


def test_defaults_are_greedy_like_tensorrt_llm() -> None:
    request = GenerationRequest.from_inputs(inputs())
    llama = request.to_llama(cache_prompt=True)
    assert llama["prompt"] == [5, 6, 7, 8] and llama["n_predict"] == 16 and llama["temperature"] == 0.0
    assert llama["min_p"] == 0.0 and llama["cache_prompt"] is True and llama["stream"] is True


def test_sampling_inputs_map_to_llama_fields() -> None:
    request = GenerationRequest.from_inputs(inputs(temperature=0.7, runtime_top_k=40, runtime_top_p=0.9,
                                                   seed=2**40 + 3))
    llama = request.to_llama(cache_prompt=False)
    assert llama["temperature"] == pytest.approx(0.7) and llama["top_k"] == 40
    assert llama["top_p"] == pytest.approx(0.9) and llama["seed"] == 3 and llama["cache_prompt"] is False


def test_input_lengths_trims_padding_and_negative_end_id_ignores_eos() -> None:
    request = GenerationRequest.from_inputs(inputs(input_lengths=2, end_id=-1))
    assert request.input_ids == [5, 6] and request.to_llama(True)["ignore_eos"] is True


@pytest.mark.parametrize(("extra", "field"), [
    ({"request_output_len": 0}, "request_output_len"), ({"runtime_top_p": 1.5}, "runtime_top_p"),
    ({"temperature": -1.0}, "temperature"), ({"beam_width": 2}, "beam_width"), ({"input_lengths": 9}, "input_lengths"),
])
def test_invalid_inputs_name_the_tensor(extra: dict, field: str) -> None:
    with pytest.raises(InvalidRequest, match=field):
        GenerationRequest.from_inputs(inputs(**extra))


def test_word_lists_use_upstreams_ids_and_offsets() -> None:
    words = np.array([[[10, 11, 12, 13, 0], [2, 3, 4, -1, -1]]], dtype=np.int32)
    assert parse_word_list("stop_words_list", words) == [[10, 11], [12], [13]]
    assert parse_word_list("stop_words_list", np.array([[0], [-1]])) == []
    with pytest.raises(InvalidRequest, match="stop_words_list"):
        parse_word_list("stop_words_list", np.array([1, 2, 3]))


def test_multi_token_bad_words_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="bad_words_list"):
        GenerationRequest.from_inputs({**inputs(), "bad_words_list": np.array([[[3, 4], [2, -1]]])})
    request = GenerationRequest.from_inputs({**inputs(), "bad_words_list": np.array([[[3, 4], [1, 2]]])})
    assert request.to_llama(True)["logit_bias"] == [[3, False], [4, False]]


# --- reading llama.cpp chunks ---------------------------------------------------------------------------------


def chunk(tokens: list[int], content: str, predicted: int, finish: str | None = None, cache_n: int = 7) -> dict:
    return {"choices": [{"finish_reason": finish}], "timings": {"cache_n": cache_n},
            "__verbose": {"tokens": tokens, "content": content, "tokens_predicted": predicted,
                          "stop": finish is not None}}


def test_ids_skipped_inside_a_character_are_recovered_from_the_text() -> None:
    stream = CompletionStream(encode_text=lambda text: {"é": [901, 902]}[text])
    assert stream.feed(chunk([40], "a", 1)) == ([40], False)
    assert stream.feed(chunk([902], "é", 3)) == ([901, 902], False)
    assert stream.feed(chunk([], "", 3, finish="length")) == ([], False)
    assert stream.generated == [40, 901, 902] and stream.cached_tokens == 7 and stream.finish_reason == FINISH_LENGTH


def test_stop_words_match_on_ids_and_stay_in_the_output() -> None:
    stream = CompletionStream(encode_text=list, stop_words=[[3, 4]])
    assert stream.feed(chunk([3], "c", 1)) == ([3], False)
    assert stream.feed(chunk([4], "d", 2)) == ([4], True)
    assert stream.generated == [3, 4] and stream.finish_reason == FINISH_STOP


def test_end_id_ends_without_being_emitted_and_errors_are_kept() -> None:
    stream = CompletionStream(encode_text=list, end_id=2)
    assert stream.feed(chunk([9], "x", 1)) == ([9], False)
    assert stream.feed(chunk([2], "", 2)) == ([], True)
    failed = CompletionStream(encode_text=list)
    assert failed.feed({"error": {"message": "exceeds the available context size"}}) == ([], True)
    assert "context" in failed.error


# --- KV blocks ------------------------------------------------------------------------------------------------


def test_request_blocks_count_whole_reused_blocks() -> None:
    assert RequestBlocks.of(prompt_tokens=100, cached_tokens=70, generated_tokens=28, tokens_per_block=32) == \
        RequestBlocks(reused=2, new=2, total=4)
    assert RequestBlocks.of(10, 0, 0, 32) == RequestBlocks(reused=0, new=1, total=1)


def test_pool_snapshot_mirrors_upstream_block_types() -> None:
    pool = KvBlockPool(max_blocks=8, tokens_per_block=32)
    handle = pool.open(prompt_tokens=40)
    pool.update(handle, 70)
    pool.add_reused(1)
    snapshot = pool.snapshot()
    assert snapshot == {"max": 8, "free": 5, "used": 3, "tokens_per": 32, "reused": 1, "fraction": 3 / 8}
    pool.close(handle)
    assert pool.snapshot()["used"] == 0 and pool.snapshot()["reused"] == 1


# --- admission ------------------------------------------------------------------------------------------------


class Recorder:
    """A fake engine call: each job sleeps for its duration and records start and end times."""

    def __init__(self) -> None:
        self.spans: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, job: tuple[str, float]) -> None:
        name, duration = job
        start = time.monotonic()
        time.sleep(duration)
        with self._lock:
            self.spans[name] = (start, time.monotonic())

    def wait(self, count: int) -> None:
        deadline = time.monotonic() + 5
        while len(self.spans) < count:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def long_short_then_late(admission_class) -> dict:
    """Two slots: a long and a short request, then a late one once both run; the spans each ran in."""
    recorder = Recorder()
    admission = admission_class(slots=2, max_queue_size=0, run=recorder)
    admission.submit(("long", 0.5))
    admission.submit(("short", 0.05))
    time.sleep(0.1)
    admission.submit(("late", 0.05))
    recorder.wait(3)
    admission.close()
    return recorder.spans


def test_inflight_starts_a_request_as_soon_as_a_slot_frees() -> None:
    spans = long_short_then_late(InflightAdmission)
    assert spans["late"][0] < spans["long"][1]


def test_v1_admits_the_next_batch_only_after_the_whole_batch_ended() -> None:
    spans = long_short_then_late(StaticBatchAdmission)
    assert spans["late"][0] >= spans["long"][1]


@pytest.mark.parametrize("policy", ["inflight", "v1"])
def test_full_queue_rejects(policy: str) -> None:
    release = threading.Event()
    run = lambda job: release.wait(5)  # noqa: E731
    admission = InflightAdmission(1, 1, run) if policy == "inflight" else StaticBatchAdmission(1, 1, run)
    admission.submit("running")
    time.sleep(0.1)
    admission.submit("waiting")
    with pytest.raises(QueueFull, match="max_queue_size=1"):
        admission.submit("rejected")
    release.set()
    admission.close()


# --- config and text ------------------------------------------------------------------------------------------


def config(**parameters) -> dict:
    return {"max_batch_size": 4, "dynamic_batching": {"default_queue_policy": {"max_queue_size": 64}},
            "parameters": {k: {"string_value": str(v)} for k, v in parameters.items()}}


def test_config_reads_upstream_keys() -> None:
    engine = EngineConfig.from_model_config(config(gpt_model_type="V1", max_tokens_in_paged_kv_cache=8192,
                                                   enable_kv_cache_reuse="false", cpu_tokens_per_block=64))
    assert not engine.inflight and engine.slot_context_tokens == 2048 and engine.max_blocks == 4 * 32
    assert engine.max_queue_size == 64 and engine.enable_kv_cache_reuse is False


@pytest.mark.parametrize(("key", "value"), [("gpt_model_type", "V2"), ("batch_scheduler_policy", "fifo"),
                                            ("max_beam_width", 2), ("enable_kv_cache_reuse", "maybe")])
def test_config_errors_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        EngineConfig.from_model_config(config(**{key: value}))


def test_incremental_detokenizer_holds_back_partial_characters() -> None:
    pieces = {1: b"caf", 2: b"\xc3", 3: b"\xa9!"}
    decoder = IncrementalDetokenizer(lambda ids: b"".join(pieces[i] for i in ids).decode("utf-8", "replace"))
    assert decoder.push([1]) == "caf"
    assert decoder.push([2]) == ""
    assert decoder.push([3]) == "é!"
    assert decoder.flush() == ""
