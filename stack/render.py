"""Render a deployment profile into a ready Triton model repository.

Every model folder under `model_repository/` is a template: `config.pbtxt` with `${placeholders}` and, for
Python-backend models, the files of version `1/`. A profile (`model_repository/profiles/NAME.toml`) is the
single source of truth for every value: one table per model to deploy, whose keys are exactly the template's
placeholders, plus an optional `parameters` table rendered into `parameters { key value }` blocks.

The result is validated before it is written: no placeholder left, no unknown key, each config parses as
`inference.ModelConfig`, the `tensorrt_llm` parameter keys are TensorRT-LLM backend keys, the models keep the
backend's contract, and `pair_verifier` is the model the orchestrator calls (stack/contract.py). Any failure is
one line naming the profile file, the model and the key; contract violations are listed one per line.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import tomlkit
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from cpu_engine import contract as upstream
from stack import contract, paths

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
PARAMETERS_PLACEHOLDER = "parameters"
Scalar = str | int | float | bool

#: Keys only the CPU reference engine reads (threads, context); everything else must be an upstream key.
CPU_ENGINE_PARAMETER_PREFIX = "cpu_"
TRTLLM_MODEL = "tensorrt_llm"


class ProfileError(ValueError):
    """A profile value that cannot be rendered; str() is the one-line message for the operator."""

    def __init__(self, profile: Path, model: str | None, key: str | None, problem: str) -> None:
        where = [_display(profile)]
        if model:
            where.append(f"model '{model}'")
        if key:
            where.append(f"key '{key}'")
        super().__init__(f"{', '.join(where)}: {problem}")
        self.profile, self.model, self.key = profile, model, key


@dataclass(frozen=True)
class RenderedModel:
    name: str
    config_text: str
    config: model_config_pb2.ModelConfig
    template_dir: Path


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(paths.PROJECT_ROOT))
    except ValueError:
        return str(path)


def profile_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        return candidate
    return paths.PROFILES_DIR / f"{name_or_path}.toml"


def load_profile(path: Path) -> dict:
    if not path.exists():
        available = ", ".join(sorted(p.stem for p in paths.PROFILES_DIR.glob("*.toml")))
        raise ProfileError(path, None, None, f"no such profile (available: {available})")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ProfileError(path, None, None, f"not valid TOML: {error}") from None


def format_value(value: object) -> str:
    """How a TOML value appears in config.pbtxt: booleans lower-case, lists comma-separated."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in value):
        return ", ".join(str(v) for v in value)
    raise TypeError(f"unsupported value {value!r} (use a number, a string, a boolean or a list of numbers)")


def render_parameters(parameters: dict[str, Scalar]) -> str:
    blocks = []
    for key, value in parameters.items():
        escaped = format_value(value).replace("\\", "\\\\").replace('"', '\\"')
        blocks.append(f'parameters: {{\n  key: "{key}"\n  value: {{ string_value: "{escaped}" }}\n}}')
    return "\n".join(blocks)


def _key_on_line(template: str, line_number: int) -> str | None:
    lines = template.splitlines()
    if 1 <= line_number <= len(lines):
        found = PLACEHOLDER.findall(lines[line_number - 1])
        if found:
            return found[0]
    return None


def render_model(profile: Path, model: str, values: dict) -> RenderedModel:
    template_dir = paths.MODEL_REPOSITORY / model
    template_file = template_dir / "config.pbtxt"
    if not template_file.exists():
        raise ProfileError(profile, model, None, f"no template {_display(template_file)}")
    template = template_file.read_text()
    wanted = set(PLACEHOLDER.findall(template))
    given = dict(values)
    parameters = given.pop(PARAMETERS_PLACEHOLDER, {})
    if PARAMETERS_PLACEHOLDER in wanted:
        wanted.discard(PARAMETERS_PLACEHOLDER)
        if not isinstance(parameters, dict):
            raise ProfileError(profile, model, PARAMETERS_PLACEHOLDER, "must be a table of key = value")
    elif parameters:
        raise ProfileError(profile, model, PARAMETERS_PLACEHOLDER, "the template takes no parameters table")
    for key in sorted(set(given) - wanted):
        raise ProfileError(profile, model, key, f"unknown key (the template has no ${{{key}}})")
    for key in sorted(wanted - set(given)):
        raise ProfileError(profile, model, key, "missing value (the template needs it)")
    if model == TRTLLM_MODEL:
        for key in parameters:
            if key not in upstream.load().known_parameters and not key.startswith(CPU_ENGINE_PARAMETER_PREFIX):
                raise ProfileError(profile, model, f"parameters.{key}",
                                   "not a TensorRT-LLM backend parameter (CPU-engine-only keys start with 'cpu_')")

    rendered_values = {PARAMETERS_PLACEHOLDER: render_parameters(parameters)}
    for key, value in given.items():
        try:
            rendered_values[key] = format_value(value)
        except TypeError as error:
            raise ProfileError(profile, model, key, str(error)) from None
    text = PLACEHOLDER.sub(lambda m: rendered_values[m.group(1)], template)

    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        line = getattr(error, "GetLine", lambda: None)()
        key = _key_on_line(template, line) if line else None
        raise ProfileError(profile, model, key, f"config.pbtxt does not parse: {error}") from None
    if config.name != model:
        raise ProfileError(profile, model, None, f"config name '{config.name}' differs from the folder name")
    return RenderedModel(model, text, config, template_dir)


def render_profile(profile: Path) -> list[RenderedModel]:
    data = load_profile(profile)
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise ProfileError(profile, None, "models", "the profile has no [models.NAME] tables")
    rendered = [render_model(profile, name, values) for name, values in models.items()]
    broken = contract.violations({model.name: model.config for model in rendered})
    if broken:
        raise ProfileError(profile, None, None, "breaks the tensorrtllm backend contract "
                           "(cpu_engine/upstream_contract.toml):\n" + "\n".join(f"  {line}" for line in broken))
    broken = contract.verifier_violations({model.name: model.config for model in rendered})
    if broken:
        raise ProfileError(profile, None, None, "breaks the orchestrator's pair_verifier calls:\n"
                           + "\n".join(f"  {line}" for line in broken))
    return rendered


def write_repository(models: list[RenderedModel], out_dir: Path) -> Path:
    """Write the rendered models; Python-backend models get their template's version folders."""
    staging = out_dir.with_name(out_dir.name + ".rendering")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for model in models:
        target = staging / model.name
        target.mkdir()
        (target / "config.pbtxt").write_text(model.config_text)
        if model.config.backend == "python":
            for version_dir in model.template_dir.iterdir():
                if version_dir.is_dir() and version_dir.name.isdigit():
                    shutil.copytree(version_dir, target / version_dir.name,
                                    ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (target / "1").mkdir()
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir


def profile_variant(profile_name: str, parameters: Mapping[str, Mapping[str, Scalar]], out: Path) -> Path:
    """A copy of a profile, written to `out`, with some models' parameters set ({model: {key: value}}): the
    variants a benchmark compares stay profiles, rendered and validated like the original."""
    document = tomlkit.parse(profile_path(profile_name).read_text())
    for model, values in parameters.items():
        document["models"][model]["parameters"].update(values)
    out.write_text(tomlkit.dumps(document))
    return out


def render(profile_name: str, out_dir: Path) -> Path:
    """Render and validate every model of a profile, then write the repository to out_dir."""
    return write_repository(render_profile(profile_path(profile_name)), out_dir)
