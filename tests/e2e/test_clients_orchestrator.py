"""`python -m clients chat` and `load --target http|grpc` against the real orchestrator (in front of the real
Triton and Valkey): streamed answers, the cache layer of each, and the load summary's hits by layer."""

from __future__ import annotations

import json
import uuid

import pytest
from typer.testing import CliRunner

from clients.cli import app
from stack.orchestrator_process import OrchestratorProcess

pytestmark = pytest.mark.integration
runner = CliRunner()
KEY = "sk-e2e-beta"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_chat_shows_the_layer(orchestrator: OrchestratorProcess, protocol: str) -> None:
    topic = {"http": "Name one colour of the sky", "grpc": "Which metal is liquid at room temperature"}[protocol]
    question = f"{topic} ({uuid.uuid4().hex[:6]})?"
    url = orchestrator.http_url if protocol == "http" else orchestrator.grpc_target
    args = ["chat", "--protocol", protocol, "--url", url, "--api-key", KEY, "--max-tokens", "8", "--message", question]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    # A question never asked before is generated (or, at most, answered from a paraphrase of another test's).
    assert ("[miss]" in first.stdout or "[semantic]" in first.stdout) and "first token" in first.stdout
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "[exact]" in again.stdout


def test_chat_reports_a_refused_key(orchestrator: OrchestratorProcess) -> None:
    result = runner.invoke(app, ["chat", "--url", orchestrator.http_url, "--api-key", "sk-wrong", "--message", "hi"])
    assert result.exit_code == 0 and "401" in result.output
    result = runner.invoke(app, ["chat", "--protocol", "grpc", "--url", orchestrator.grpc_target,
                                 "--api-key", "sk-wrong", "--message", "hi"])
    assert result.exit_code == 0 and "UNAUTHENTICATED" in result.output


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_load_counts_hits_by_layer(orchestrator: OrchestratorProcess, protocol: str) -> None:
    url = orchestrator.http_url if protocol == "http" else orchestrator.grpc_target
    result = runner.invoke(app, ["load", "--target", protocol, "--url", url, "--api-key", KEY,
                                 "--concurrency", "2", "--requests", "16", "--mix", "exact=0.5,fresh=0.5",
                                 "--seed", "7" if protocol == "http" else "8", "--max-tokens", "8", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] == summary["requests"] == 16 and summary["errors"] == {}
    assert set(summary["hit_rate"]) <= {"exact", "semantic", "miss"}
    assert summary["hit_rate"].get("exact", 0) > 0 and summary["hit_rate"].get("miss", 0) > 0
    # Only a repeat can be an exact hit.
    assert summary["hit_rate"]["exact"] * 16 <= summary["by_kind"].get("exact", 0) + 1e-9
    assert summary["ttft_ms"]["p50"] <= summary["latency_ms"]["p50"] + 1e-9
