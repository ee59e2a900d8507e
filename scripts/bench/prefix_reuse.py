#!/usr/bin/env python
"""Prefix KV reuse through Triton: time to first token for a request whose long system prompt is cached vs.
the same request with reuse off (enable_kv_cache_reuse=false), in one run on one Triton.

The request goes through the ensemble (text in, streamed text out). With reuse on, a first request with
another question warms the prefix; each measured request then shares the whole system prompt. With reuse
off the model is reloaded with the override and the same requests run cold. Greedy output must be identical.
Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

import tritonclient.grpc.aio as grpcaio

from cpu_engine import tokenizer
from cpu_engine.client import config_override, generate, text_inputs
from model_assets.chat import format_chat
from llm_bench import MACHINE, median_ms, render_llm_repository
from stack.triton import TritonServer

RULES = ["Refunds are issued within {n} days when the receipt is shown.",
         "Support tickets marked urgent are answered within {n} hours.",
         "Employees may work remotely up to {n} days per month.",
         "Travel above {n} euros needs a manager's written approval.",
         "Passwords rotate every {n} days and may not repeat the last five.",
         "Meeting rooms are booked in slots of {n} minutes."]
QUESTIONS = ["How many days do I have to ask for a refund, and what do I need to show?",
             "When will an urgent support ticket be answered according to the handbook?",
             "How often must passwords be changed, and can I reuse an old one?",
             "What approval is needed for travel above the limit in the handbook?"]


def system_prompt(tokens: int) -> str:
    vocabulary = tokenizer.load()
    lines, n = ["You are the assistant of Example Corp. Answer only from this handbook."], 0
    while len(tokenizer.encode(vocabulary, "\n".join(lines))) < tokens:
        lines.append(f"Rule {n + 1}. " + RULES[n % len(RULES)].format(n=3 + (7 * n) % 40))
        n += 1
    return "\n".join(lines)


def chat(system: str, question: str) -> str:
    return format_chat([{"role": "system", "content": system}, {"role": "user", "content": question}])


async def measure(client, system: str, questions: list[str], max_tokens: int) -> list:
    results = []
    for question in questions:
        result = await generate(client, "ensemble", text_inputs(chat(system, question), max_tokens, stream=True,
                                                                temperature=0.0))
        if result.error is not None:
            raise SystemExit(f"request failed: {result.error}")
        results.append(result)
    return results


async def run(url: str, args) -> dict:
    system = system_prompt(args.prefix_tokens)
    vocabulary = tokenizer.load()
    questions = QUESTIONS[:args.repeats]
    client = grpcaio.InferenceServerClient(url)
    try:
        await measure(client, system, ["Who wrote this handbook?"], 4)
        reuse = await measure(client, system, questions, args.max_tokens)
        async with config_override(client, "tensorrt_llm", parameters={"enable_kv_cache_reuse": False}):
            no_reuse = await measure(client, system, questions, args.max_tokens)
    finally:
        await client.close()
    ttft_reuse = median_ms([r.ttft_s for r in reuse])
    ttft_no_reuse = median_ms([r.ttft_s for r in no_reuse])
    for question, warm, cold in zip(questions, reuse, no_reuse):
        print(f"{question[:50]:50s} reuse {warm.ttft_s * 1000:8.1f} ms ({warm.outputs['kv_cache_reused_blocks']} "
              f"blocks)  no reuse {cold.ttft_s * 1000:8.1f} ms  same text: {warm.text == cold.text}")
    return {
        "bench": "prefix_reuse",
        "machine": MACHINE,
        "prefix_tokens": len(tokenizer.encode(vocabulary, system)),
        "prompt_tokens": reuse[0].outputs["num_input_tokens"],
        "requests": len(questions),
        "ttft_no_reuse_ms": ttft_no_reuse,
        "ttft_reuse_ms": ttft_reuse,
        "speedup": round(ttft_no_reuse / ttft_reuse, 1),
        "reused_blocks": min(r.outputs["kv_cache_reused_blocks"] for r in reuse),
        "no_reuse_reused_blocks": max(r.outputs["kv_cache_reused_blocks"] for r in no_reuse),
        "identical_output": all(w.text == c.text for w, c in zip(reuse, no_reuse)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix-tokens", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, choices=range(1, len(QUESTIONS) + 1))
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repository = render_llm_repository(Path(tmp) / "repository")
        with TritonServer(repository, model_control_mode="explicit", load_models=("*",),
                          log_path=Path(tmp) / "triton.log") as server:
            result = asyncio.run(run(server.grpc_url, args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
