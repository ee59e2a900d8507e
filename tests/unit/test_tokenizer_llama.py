"""The exported tokenizer gives llama.cpp's ids, and llama.cpp's HTTP side is closed to anyone without the key."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from cpu_engine import tokenizer
from cpu_engine.config import EngineConfig
from cpu_engine.engine import LlamaEngine
from model_assets import llm
from model_assets.chat import format_chat

TEXTS = [
    "The capital of France is Paris.",
    "  leading spaces, tabs\tand\nnewlines  ",
    "Ünïcödé: 東京, emoji 🐦🚀, math ∑∫",
    format_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there!"}]),
]


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


@pytest.fixture(scope="module")
def engine():
    config = EngineConfig.from_model_config(
        {"max_batch_size": 1, "parameters": {"max_tokens_in_paged_kv_cache": {"string_value": "1024"},
                                             "cpu_threads": {"string_value": "1"}}},
        default_model_path=str(llm.gguf_path()))
    vocabulary = tokenizer.load()
    engine = LlamaEngine(config, lambda text: tokenizer.encode(vocabulary, text))
    yield engine
    engine.close()


def _post(engine: LlamaEngine, path: str, body: dict, key: str | None) -> tuple[int, dict]:
    connection = UnixHTTPConnection(engine.listening_address.removeprefix("unix://"))
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    connection.request("POST", path, json.dumps(body), headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


@pytest.mark.parametrize("text", TEXTS)
def test_ids_match_llama_cpp(engine: LlamaEngine, text: str) -> None:
    status, body = _post(engine, "/tokenize", {"content": text, "add_special": False, "parse_special": True},
                         engine.api_key)
    assert status == 200
    assert tokenizer.encode(tokenizer.load(), text) == body["tokens"]


def test_llama_http_side_is_a_private_socket_with_a_key(engine: LlamaEngine) -> None:
    assert engine.listening_address.startswith("unix://")
    status, _ = _post(engine, "/tokenize", {"content": "hi"}, key=None)
    assert status == 401
