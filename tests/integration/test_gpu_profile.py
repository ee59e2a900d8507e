"""The gpu-h100 repository as rendered, served by the real Triton on this CPU with the CPU engine standing in for
`backend: "tensorrtllm"` (it keeps the backend's contract, cpu_engine/upstream_contract.toml), and the
orchestrator in front of it, called with the `openai` SDK through the ensemble and the BLS.

Only what a CPU cannot have is swapped: the `tensorrt_llm` backend, the container paths (engine, tokenizer) and
the KV-cache size. The tokenizer folder is laid out like a Hugging Face instruct checkpoint (Qwen2.5-Instruct):
the chat template lives in tokenizer_config.json and there is no chat_template.jinja.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from model_assets import llm
from stack.orchestrator_process import OrchestratorProcess
from stack.render import render
from stack.triton import TritonServer
from stack.valkey import ValkeyServer

ENGINE_TEMPLATE = Path(__file__).parents[2] / "model_repository" / "tensorrt_llm" / "1"
#: Per-slot context on this machine: the profile's 64 slots x 512 tokens (the GPU sizes KV from its memory).
KV_TOKENS = 64 * 512
MODEL_NAME = "Qwen2.5-0.5B-Instruct"


def hf_tokenizer_folder(target: Path) -> Path:
    """SmolLM2's tokenizer in a checkpoint's layout: tokenizer.json + tokenizer_config.json carrying the chat
    template (as Qwen2.5-Instruct, Llama 3 and most instruct checkpoints ship it)."""
    source = llm.tokenizer_dir()
    target.mkdir(parents=True)
    shutil.copy(source / "tokenizer.json", target / "tokenizer.json")
    config = {"chat_template": (source / "chat_template.jinja").read_text(), "eos_token": "<|im_end|>",
              "pad_token": "<|im_end|>", "model_max_length": 8192, "tokenizer_class": "Qwen2Tokenizer"}
    (target / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return target


def swap_for_cpu(repository: Path, tokenizer: Path) -> None:
    """The CPU engine in place of TensorRT-LLM's backend; local paths in place of the container's mounts."""
    for config_path in repository.glob("*/config.pbtxt"):
        text = config_path.read_text().replace('string_value: "/tokenizer"', f'string_value: "{tokenizer}"')
        config_path.write_text(text)
    engine_config = repository / "tensorrt_llm" / "config.pbtxt"
    text = engine_config.read_text().replace('backend: "tensorrtllm"', 'backend: "python"')
    text = re.sub(r'(key: "gpt_model_path"\s*value: \{ string_value: )"[^"]*"', rf'\1"{llm.gguf_path()}"',
                  text)
    text += f'\nparameters: {{ key: "max_tokens_in_paged_kv_cache" value: {{ string_value: "{KV_TOKENS}" }} }}\n'
    engine_config.write_text(text)
    shutil.copytree(ENGINE_TEMPLATE, repository / "tensorrt_llm" / "1", ignore=shutil.ignore_patterns("__pycache__"),
                    dirs_exist_ok=True)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hf_tokenizer_folder(tmp_path_factory.mktemp("checkpoint") / MODEL_NAME)


@pytest.fixture(scope="module")
def gpu_triton(tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    base = tmp_path_factory.mktemp("gpu-profile")
    repository = render("gpu-h100", base / "repository")
    swap_for_cpu(repository, tokenizer)
    with TritonServer(repository, log_path=base / "triton.log") as server:
        yield server


@pytest.fixture(scope="module", params=["ensemble", "tensorrt_llm_bls"])
def gpu_client(request: pytest.FixtureRequest, gpu_triton: TritonServer, tokenizer: Path, valkey: ValkeyServer,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    env = {"ORCH_API__KEYS": json.dumps({"sk-gpu": {"tenant": "gpu"}}),
           "ORCH_REDIS__KEY_PREFIX": f"gpu-{uuid.uuid4().hex[:8]}",
           "ORCH_TRITON__LLM_MODEL": request.param,
           "ORCH_MODEL__NAME": MODEL_NAME,
           "ORCH_MODEL__TOKENIZER_DIR": str(tokenizer)}
    log_path = tmp_path_factory.mktemp("logs") / f"orchestrator-{request.param}.log"
    with OrchestratorProcess(gpu_triton.grpc_url, valkey.url, env=env, log_path=log_path) as server:
        yield openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="sk-gpu", max_retries=0, timeout=60)


def test_chat_through_the_gpu_repository(gpu_client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": f"What is the capital of France? ({uuid.uuid4().hex[:6]})"}]
    whole = gpu_client.chat.completions.with_raw_response.create(
        model=MODEL_NAME, messages=messages, max_tokens=16, temperature=0)
    answer = whole.parse()
    assert whole.headers["x-cache"] == "miss"
    assert answer.choices[0].message.content and answer.usage.completion_tokens > 0
    assert answer.usage.prompt_tokens > 5

    again = gpu_client.chat.completions.with_raw_response.create(
        model=MODEL_NAME, messages=messages, max_tokens=16, temperature=0)
    assert again.headers["x-cache"] == "exact"
    assert again.parse().choices[0].message.content == answer.choices[0].message.content


def test_streaming_chat_through_the_gpu_repository(gpu_client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": f"Name a river in Europe. ({uuid.uuid4().hex[:6]})"}]
    stream = gpu_client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=16, temperature=0,
                                                stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text and finish in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
