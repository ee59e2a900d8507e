"""The client half of scripts/gpu_smoke.sh: Valkey and the orchestrator as local processes in front of a Triton
that is already serving, then the demo's scripted conversation (stack/demo.py STEPS) through the orchestrator
with the openai SDK. Prints the table and the answers; exits 1 when a request fails, an answer is empty, or a
step is answered from another cache layer than the demo expects. Stops what it started.

    .venv/bin/python scripts/gpu_smoke_client.py --triton-url 127.0.0.1:8001 --model-name Qwen2.5-0.5B-Instruct \\
        --tokenizer-dir /srv/hf/Qwen2.5-0.5B-Instruct
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import openai
from rich.console import Console
from rich.table import Table

from stack.demo import STEPS, Step
from stack.orchestrator_process import OrchestratorProcess
from stack.valkey import ValkeyServer


def converse(client: openai.OpenAI, model: str, console: Console) -> list[str]:
    """Send every step, print one table row each; the problems found, one line each."""
    table = Table(title=f"{model} through the orchestrator (openai SDK)")
    for column in ("#", "request", "expected", "layer", "ms", "tokens saved", "KV blocks reused"):
        table.add_column(column)
    problems, answers = [], []
    for number, step in enumerate(STEPS, 1):
        layer, elapsed_ms, saved, reused, answer = ask(client, model, step)
        if layer != step.expect:
            problems.append(f"#{number} {step.label}: answered from '{layer}', expected '{step.expect}'")
        elif not answer.strip():
            problems.append(f"#{number} {step.label}: empty answer")
        table.add_row(str(number), step.label, step.expect, layer, f"{elapsed_ms:,.0f}", saved, reused)
        answers.append(f"#{number} {answer.strip()}")
    console.print(table)
    console.print("Answers:\n" + "\n".join(answers), highlight=False)
    return problems


def ask(client: openai.OpenAI, model: str, step: Step) -> tuple[str, float, str, str, str]:
    started = time.perf_counter()
    try:
        completion = client.chat.completions.create(model=model, messages=step.messages, max_tokens=96,
                                                    temperature=0)
    except openai.APIError as error:
        return f"error: {error}", (time.perf_counter() - started) * 1000, "", "", ""
    cache = (completion.model_extra or {}).get("cache", {})
    return (cache.get("layer", "?"), (time.perf_counter() - started) * 1000, str(cache.get("tokens_saved", 0)),
            str(cache.get("kv_cache_reused_blocks", "")), completion.choices[0].message.content or "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triton-url", required=True, help="Triton's gRPC address, host:port")
    parser.add_argument("--model-name", required=True, help="the name clients send (ORCH_MODEL__NAME)")
    parser.add_argument("--tokenizer-dir", required=True, type=Path,
                        help="the served model's Hugging Face folder (tokenizer and chat template), as Triton's")
    args = parser.parse_args(argv)
    console = Console()
    env = {"ORCH_MODEL__NAME": args.model_name, "ORCH_MODEL__TOKENIZER_DIR": str(args.tokenizer_dir.resolve())}
    with ExitStack() as stack:
        valkey = stack.enter_context(ValkeyServer())
        console.print(f"Valkey on {valkey.url}")
        orchestrator = stack.enter_context(OrchestratorProcess(args.triton_url, valkey.url, env=env))
        console.print(f"Orchestrator ready on {orchestrator.http_url} (Triton {args.triton_url})")
        client = openai.OpenAI(base_url=f"{orchestrator.http_url}/v1", api_key="local", max_retries=0, timeout=300)
        problems = converse(client, args.model_name, console)
    for problem in problems:
        console.print(f"[red]{problem}[/]", highlight=False)
    console.print("[red]smoke test failed[/]" if problems else "[green]smoke test passed[/]")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
