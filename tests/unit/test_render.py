"""Rendering profiles: every shipped profile renders and parses; bad values fail with one clear line."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from stack import paths
from stack.render import ProfileError, profile_path, profile_variant, render, render_profile

PROFILES = sorted(p.stem for p in paths.PROFILES_DIR.glob("*.toml"))


def test_profiles_cpu_and_gpu_exist() -> None:
    assert {"cpu", "gpu-h100"} <= set(PROFILES)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_renders_to_parsed_configs(profile: str, tmp_path: Path) -> None:
    models = render_profile(profile_path(profile))
    assert "embedding" in {m.name for m in models}
    out = render(profile, tmp_path / profile)
    for model in models:
        text = (out / model.name / "config.pbtxt").read_text()
        assert "${" not in text
        assert model.config.name == model.name
        assert (out / model.name / "1").is_dir()
        if model.config.backend == "python":
            assert (out / model.name / "1" / "model.py").exists()


def test_embedding_values_come_from_the_profile(tmp_path: Path) -> None:
    values = tomllib.loads(profile_path("cpu").read_text())["models"]["embedding"]
    (embedding,) = [m for m in render_profile(profile_path("cpu")) if m.name == "embedding"]
    batcher = embedding.config.dynamic_batching
    assert embedding.config.max_batch_size == values["max_batch_size"]
    assert list(batcher.preferred_batch_size) == values["preferred_batch_size"]
    assert batcher.max_queue_delay_microseconds == values["max_queue_delay_microseconds"]
    assert batcher.default_queue_policy.max_queue_size == values["max_queue_size"]
    assert [g.count for g in embedding.config.instance_group] == [values["instance_count"]]
    assert embedding.config.parameters["intra_op_num_threads"].string_value == \
        str(values["parameters"]["intra_op_num_threads"])


def edited_profile(tmp_path: Path, old: str, new: str, source: str = "cpu") -> Path:
    text = profile_path(source).read_text()
    assert old in text, f"fixture text {old!r} not in the {source} profile"
    path = tmp_path / f"{source}-edited.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def render_error(profile: Path) -> ProfileError:
    with pytest.raises(ProfileError) as caught:
        render_profile(profile)
    message = str(caught.value)
    assert "\n" not in message and str(profile.name) in message
    return caught.value


def test_misspelt_key_names_file_model_and_key(tmp_path: Path) -> None:
    error = render_error(edited_profile(tmp_path, "max_queue_size = 256", "max_queue_sise = 256"))
    assert (error.model, error.key) == ("embedding", "max_queue_sise")
    assert "unknown key" in str(error)


def test_missing_value_names_the_key(tmp_path: Path) -> None:
    error = render_error(edited_profile(tmp_path, "max_queue_size = 256", ""))
    assert (error.model, error.key) == ("embedding", "max_queue_size")
    assert "missing value" in str(error)


def test_bad_enum_value_is_traced_to_its_key(tmp_path: Path) -> None:
    error = render_error(edited_profile(tmp_path, 'instance_kind = "KIND_CPU"', 'instance_kind = "KIND_CUP"'))
    assert (error.model, error.key) == ("embedding", "instance_kind")


def test_wrong_type_is_traced_to_its_key(tmp_path: Path) -> None:
    error = render_error(edited_profile(tmp_path, "max_batch_size = 32", 'max_batch_size = "many"'))
    assert (error.model, error.key) == ("embedding", "max_batch_size")


def test_unknown_tensorrt_llm_parameter_is_refused(tmp_path: Path) -> None:
    text = profile_path("cpu").read_text()
    assert "[models.tensorrt_llm.parameters]" in text
    path = tmp_path / "cpu-bad-param.toml"
    path.write_text(text.replace("[models.tensorrt_llm.parameters]",
                                 "[models.tensorrt_llm.parameters]\nenable_kv_cache_resue = \"true\"", 1))
    error = render_error(path)
    assert (error.model, error.key) == ("tensorrt_llm", "parameters.enable_kv_cache_resue")
    assert "TensorRT-LLM" in str(error)


def test_model_without_template_is_refused(tmp_path: Path) -> None:
    error = render_error(edited_profile(tmp_path, "[models.embedding]\n", "[models.embeding]\n"))
    assert error.model == "embeding"


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    profile = edited_profile(tmp_path, "max_queue_size = 256", "max_queue_sise = 256")
    result = subprocess.run(
        [sys.executable, str(paths.PROJECT_ROOT / "scripts" / "render_repository.py"),
         "--profile", str(profile), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "model 'embedding', key 'max_queue_sise': unknown key" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_profile_variant_sets_parameters_and_leaves_the_profile_alone(tmp_path) -> None:
    original = (paths.PROFILES_DIR / "cpu.toml").read_text()
    variant = profile_variant("cpu", {"tensorrt_llm": {"cpu_threads": 1, "cpu_spin_count": 300000}},
                              tmp_path / "variant.toml")
    config = (render(str(variant), tmp_path / "repository") / "tensorrt_llm" / "config.pbtxt").read_text()
    assert 'key: "cpu_threads"\n  value: { string_value: "1" }' in config
    assert 'key: "cpu_spin_count"\n  value: { string_value: "300000" }' in config
    assert (paths.PROFILES_DIR / "cpu.toml").read_text() == original
