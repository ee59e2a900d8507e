"""What a load run sends: a mix of exact repeats, paraphrases, fresh prompts and shared-prefix prompts.

Each kind exercises a different part of the stack: exact repeats the exact cache, paraphrases the semantic
cache, fresh prompts the model, shared-prefix prompts the engine's KV-cache reuse. The generator is seeded,
so a run can be repeated; a file (JSONL with `prompt` and optional `kind`/`system`, or plain text lines)
replaces it with a fixed list.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KINDS = ("exact", "paraphrase", "fresh", "shared_prefix")

TOPICS = (
    "photosynthesis", "the French revolution", "black holes", "compound interest", "the immune system",
    "plate tectonics", "machine translation", "the stock market", "climate change", "quantum computing",
    "the Roman empire", "vaccines", "electric cars", "the water cycle", "inflation", "neural networks",
    "coral reefs", "the printing press", "solar panels", "antibiotics", "volcanoes", "cryptography",
    "the Renaissance", "supply chains", "sleep", "jazz", "glaciers", "bees", "the internet", "tides",
)
ASPECTS = (
    "how does {t} work", "why does {t} matter", "what are the main risks of {t}",
    "what is the history of {t}", "how is {t} measured", "what are common myths about {t}",
    "how will {t} change in the next decade", "what should a beginner know about {t}",
)
#: Surface forms of one question; a paraphrase reuses a seen (topic, aspect) with another form.
PHRASINGS = (
    "{q}?", "Can you explain {q}?", "Please tell me {q}.", "In simple words, {q}?", "I'd like to know {q}.",
    "Quick question: {q}?",
)
AUDIENCES = ("a child", "a student", "an engineer", "a journalist", "a farmer", "a nurse", "a retiree")
SHARED_PREFIX = (
    "You are a support assistant for a solar-panel installer. Company facts: panels carry a 25-year "
    "performance warranty and a 10-year workmanship warranty; inverters are covered for 12 years; "
    "installation takes one to three days; permits are handled by the company; monitoring is done through "
    "the mobile app; cleaning is recommended twice a year; batteries are optional and sized on request. "
    "Answer briefly and only from these facts."
)


@dataclass(frozen=True)
class WorkItem:
    prompt: str
    kind: str = "fresh"
    system: str | None = None

    def text(self) -> str:
        """The item as one string, for models that take plain text (embedding, preprocessing)."""
        return f"{self.system}\n\n{self.prompt}" if self.system else self.prompt

    def messages(self) -> list[dict[str, str]]:
        """The item as chat messages, for the OpenAI-compatible API."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + [{"role": "user", "content": self.prompt}]


def parse_mix(text: str) -> dict[str, float]:
    """`exact=0.3,paraphrase=0.2,fresh=0.4,shared_prefix=0.1` → normalised weights."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, value = part.partition("=")
        if kind not in KINDS:
            raise ValueError(f"mix: unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
        try:
            weights[kind] = float(value)
        except ValueError:
            raise ValueError(f"mix: {part!r} needs a number after '='") from None
        if weights[kind] < 0:
            raise ValueError(f"mix: weight of {kind} is negative")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("mix: the weights add up to zero")
    return {k: w / total for k, w in weights.items()}


class GeneratedWorkload:
    """An endless, seeded stream of work items drawn from the mix."""

    def __init__(self, mix: dict[str, float], seed: int = 0) -> None:
        self.mix = mix
        self.random = random.Random(seed)
        self.seen: list[tuple[str, str, str]] = []  # (prompt, topic, aspect) of every question sent
        self.counter = 0

    def _question(self, topic: str, aspect: str) -> str:
        question = aspect.format(t=topic)
        return self.random.choice(PHRASINGS).format(q=question)

    def _fresh(self) -> WorkItem:
        self.counter += 1
        topic, aspect = self.random.choice(TOPICS), self.random.choice(ASPECTS)
        audience = self.random.choice(AUDIENCES)
        prompt = f"{self._question(topic, aspect)} Answer for {audience} (#{self.counter})."
        self.seen.append((prompt, topic, aspect))
        return WorkItem(prompt, "fresh")

    def __next__(self) -> WorkItem:
        kind = self.random.choices(list(self.mix), weights=list(self.mix.values()))[0]
        if kind == "shared_prefix":
            self.counter += 1
            topic = self.random.choice(TOPICS)
            return WorkItem(f"A customer asks about {topic} (ticket {self.counter}). What do you reply?",
                            "shared_prefix", SHARED_PREFIX)
        if kind == "fresh" or not self.seen:
            return self._fresh()
        prompt, topic, aspect = self.random.choice(self.seen)
        if kind == "exact":
            return WorkItem(prompt, "exact")
        paraphrase = self._question(topic, aspect)
        return WorkItem(paraphrase, "paraphrase")

    def __iter__(self) -> Iterator[WorkItem]:
        return self


class FileWorkload:
    """Work items from a file, cycled in order."""

    def __init__(self, path: Path) -> None:
        self.items = [self._parse(line, n, path) for n, line in enumerate(path.read_text().splitlines(), 1)
                      if line.strip()]
        if not self.items:
            raise ValueError(f"{path}: no prompts")
        self.position = 0

    @staticmethod
    def _parse(line: str, number: int, path: Path) -> WorkItem:
        if not line.lstrip().startswith("{"):
            return WorkItem(line.strip(), "file")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON: {error}") from None
        if not isinstance(record.get("prompt"), str) or not record["prompt"]:
            raise ValueError(f"{path}:{number}: field 'prompt' must be a non-empty string")
        return WorkItem(record["prompt"], str(record.get("kind", "file")), record.get("system"))

    def __next__(self) -> WorkItem:
        item = self.items[self.position % len(self.items)]
        self.position += 1
        return item

    def __iter__(self) -> Iterator[WorkItem]:
        return self


def workload(mix: str = "fresh=1", file: Path | None = None, seed: int = 0) -> Iterator[WorkItem]:
    return FileWorkload(file) if file else GeneratedWorkload(parse_mix(mix), seed)
