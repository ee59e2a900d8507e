"""TensorRT-LLM's Triton backend contract (upstream_contract.toml), as data plus the two questions asked of it.

The render-time check asks it which outputs a request may make the backend write; the CPU engine asks it the
same per request, so that it writes exactly what the GPU backend would and fails where the GPU would.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CONTRACT_FILE = Path(__file__).with_name("upstream_contract.toml")
ALWAYS, FLAG, REQUESTED = "always", "flag", "requested"


@dataclass(frozen=True)
class Output:
    name: str
    data_type: str
    when: str
    flag: str | None = None


@dataclass(frozen=True)
class Contract:
    required_parameters: tuple[str, ...]
    model_types: tuple[str, ...]
    model_paths: tuple[str, ...]
    known_parameters: frozenset[str]
    missing_message: str
    inputs: Mapping[str, Mapping]
    outputs: Mapping[str, Output]

    def missing_parameters(self, parameters: Collection[str]) -> list[str]:
        """Upstream's load error for each required parameter the config lacks (empty values are fine)."""
        return [self.missing_message.format(key=key) for key in self.required_parameters if key not in parameters]

    def written_outputs(self, flags: Mapping[str, bool], requested: Collection[str]) -> list[str]:
        """The outputs the backend writes on a response, given the request's boolean inputs and the names it
        requested (Triton requests every declared output when the client names none)."""
        written = []
        for output in self.outputs.values():
            flagged = output.flag is None or bool(flags.get(output.flag, False))
            if output.when == ALWAYS or (output.when == FLAG and flagged) or \
                    (output.when == REQUESTED and flagged and output.name in requested):
                written.append(output.name)
        return written

    def flag_outputs(self) -> dict[str, list[str]]:
        """flag → the outputs written unconditionally when it is true (they must then be declared)."""
        by_flag: dict[str, list[str]] = {}
        for output in self.outputs.values():
            if output.when == FLAG and output.flag:
                by_flag.setdefault(output.flag, []).append(output.name)
        return by_flag


@lru_cache(maxsize=1)
def load() -> Contract:
    data = tomllib.loads(CONTRACT_FILE.read_text())
    parameters = data["parameters"]
    return Contract(
        required_parameters=tuple(parameters["required"]),
        model_types=tuple(parameters["gpt_model_type"]),
        model_paths=tuple(parameters["one_of"]),
        known_parameters=frozenset(parameters["required"]) | frozenset(parameters["optional"]),
        missing_message=parameters["missing_message"],
        inputs=data["inputs"],
        outputs={name: Output(name, spec["data_type"], spec["when"], spec.get("flag"))
                 for name, spec in data["outputs"].items()},
    )
