"""Bring the real `tensorrt_llm` to a full queue: every slot generating, the one queue place taken.

Shared by the engine's own admission test and the orchestrator's end-to-end overload test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import tritonclient.grpc.aio as grpcaio

from cpu_engine import tokenizer
from cpu_engine.client import Generation, config_override, generate, id_inputs, model_config
from model_assets.chat import format_chat


def prompt_ids(question: str) -> list[int]:
    return tokenizer.encode(tokenizer.load(), format_chat([{"role": "user", "content": question}]))


def request(max_tokens: int) -> list:
    """A generation that runs its full length (no end token)."""
    return id_inputs(prompt_ids("Write a poem about autumn."), max_tokens, streaming=True, end_id=-1)


@dataclass
class FullQueue:
    running: list[asyncio.Future[Generation]]
    #: The queued request: it runs once release() frees the slots.
    waiting: asyncio.Future[Generation]

    def release(self) -> None:
        """Cancel the long generations (closing their streams cancels them in the engine)."""
        for task in self.running:
            task.cancel()


@asynccontextmanager
async def full_queue(client: grpcaio.InferenceServerClient, long_tokens: int = 400) -> AsyncIterator[FullQueue]:
    """tensorrt_llm with max_queue_size 1, its slots busy with long generations and one request queued; on
    exit the long ones are cancelled, the queued one finished, and the rendered config restored."""
    async with config_override(client, "tensorrt_llm", dynamic_batching={"max_queue_size": 1}):
        slots = (await model_config(client, "tensorrt_llm"))["max_batch_size"]
        running: list[asyncio.Future[Generation]] = []
        waiting: asyncio.Future[Generation] | None = None
        try:
            for _ in range(slots):  # one by one: Triton's own queue holds max_queue_size too
                started = asyncio.Event()

                async def on_response(generation, started=started):
                    started.set()

                running.append(asyncio.ensure_future(generate(client, "tensorrt_llm", request(long_tokens),
                                                              on_response=on_response)))
                await asyncio.wait_for(started.wait(), 120)
            waiting = asyncio.ensure_future(generate(client, "tensorrt_llm", request(4)))
            await asyncio.sleep(0.5)
            yield FullQueue(running, waiting)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, *([waiting] if waiting else []), return_exceptions=True)
