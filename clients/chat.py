"""Talk to the orchestrator: each answer streams in as it is generated and says which layer served it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import openai


@dataclass(frozen=True)
class Reply:
    text: str
    layer: str  # exact | semantic | miss (the x-cache header), "?" when absent
    ttft_s: float | None
    total_s: float
    finished: bool  # the stream ended with a finish_reason (not cut off)


async def chat_turn(client: openai.AsyncOpenAI, model: str, messages: list[dict[str, str]], max_tokens: int,
                    on_text: Callable[[str], None]) -> Reply:
    """Stream one answer over the OpenAI-compatible API, handing each piece of text to on_text."""
    start = time.perf_counter()
    ttft, pieces, finished = None, [], False
    async with client.chat.completions.with_streaming_response.create(
        model=model, messages=messages, max_tokens=max_tokens, stream=True,
    ) as response:
        layer = response.headers.get("x-cache", "?")
        async for chunk in await response.parse():
            for choice in chunk.choices:
                if choice.delta.content:
                    ttft = ttft if ttft is not None else time.perf_counter() - start
                    pieces.append(choice.delta.content)
                    on_text(choice.delta.content)
                finished = finished or bool(choice.finish_reason)
    return Reply("".join(pieces), layer, ttft, time.perf_counter() - start, finished)
