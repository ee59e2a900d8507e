"""The render-time contract check: one test per kind of violation, each on the rendered gpu-h100 profile with
one thing broken, plus the contract data itself."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tritonclient.grpc import model_config_pb2

from cpu_engine import contract as upstream
from cpu_engine import engine_calls
from stack import contract
from stack.render import profile_path, render_profile

Models = dict[str, model_config_pb2.ModelConfig]


def rendered(profile: str = "gpu-h100") -> Models:
    return {model.name: model.config for model in render_profile(profile_path(profile))}


def broken(change: Callable[[Models], None]) -> list[str]:
    models = rendered()
    change(models)
    return contract.violations(models)


def _drop(container, name: str) -> None:
    for index, tensor in enumerate(container):
        if tensor.name == name:
            del container[index]
            return
    raise AssertionError(f"{name} not found")


@pytest.mark.parametrize("profile", ["cpu", "gpu-h100"])
def test_shipped_profiles_keep_the_contract(profile: str) -> None:
    assert contract.violations(rendered(profile)) == []


def test_a_missing_required_parameter_is_named_with_upstreams_load_error() -> None:
    found = broken(lambda m: m["tensorrt_llm"].parameters.pop("xgrammar_tokenizer_info_path"))
    assert len(found) == 1
    assert "parameters.xgrammar_tokenizer_info_path" in found[0]
    assert "Cannot find parameter with name: xgrammar_tokenizer_info_path" in found[0]


def test_an_unknown_model_type_and_no_engine_path_are_refused_for_the_gpu_backend() -> None:
    def change(models: Models) -> None:
        models["tensorrt_llm"].parameters["gpt_model_type"].string_value = "continuous"
        models["tensorrt_llm"].parameters["gpt_model_path"].string_value = ""

    found = broken(change)
    assert any("gpt_model_type 'continuous'" in line for line in found)
    assert any("gpt_model_path is empty" in line for line in found)


def test_an_output_written_under_a_sent_flag_must_be_declared() -> None:
    found = broken(lambda m: _drop(m["tensorrt_llm"].output, "acceptance_rate"))
    assert found and all("'acceptance_rate'" in line and "'return_perf_metrics'" in line for line in found)
    assert {"ensemble", "tensorrt_llm_bls"} == {caller for caller in ("ensemble", "tensorrt_llm_bls")
                                                 if any(caller in line for line in found)}


def test_an_input_the_ensemble_sends_must_be_declared() -> None:
    def change(models: Models) -> None:
        _drop(models["tensorrt_llm"].input, "runtime_top_k")

    found = broken(change)
    assert any(line.startswith("ensemble: sends input 'runtime_top_k'") for line in found)
    assert any(line.startswith("tensorrt_llm_bls: sends input 'runtime_top_k'") for line in found)


def test_an_output_a_caller_reads_must_be_produced() -> None:
    def change(models: Models) -> None:
        step = next(s for s in models["ensemble"].ensemble_scheduling.step if s.model_name == "tensorrt_llm")
        del step.input_map["return_num_output_tokens"]

    found = broken(change)
    assert found == ["ensemble: reads output 'num_output_tokens', written only when 'return_num_output_tokens' "
                     "is true, which ensemble never sends"]


def test_an_output_the_bls_reads_must_be_declared() -> None:
    found = broken(lambda m: _drop(m["tensorrt_llm"].output, "sequence_length"))
    assert any("'sequence_length' is written on every response but not declared" in line for line in found)
    assert any(line.startswith("tensorrt_llm_bls: reads output 'sequence_length'") for line in found)


def test_a_declared_input_of_the_wrong_type_is_named() -> None:
    def change(models: Models) -> None:
        next(t for t in models["tensorrt_llm"].input if t.name == "seed").data_type = model_config_pb2.TYPE_INT64

    assert broken(change) == ["tensorrt_llm: input 'seed' is declared TYPE_INT64, the backend reads TYPE_UINT64"]


def test_streaming_needs_a_decoupled_engine() -> None:
    def change(models: Models) -> None:
        models["tensorrt_llm"].model_transaction_policy.decoupled = False

    found = broken(change)
    assert "tensorrt_llm_bls: sends 'streaming', which needs tensorrt_llm to be decoupled" in found


def test_an_ensemble_step_mapping_an_undeclared_tensor_is_named() -> None:
    def change(models: Models) -> None:
        step = next(s for s in models["ensemble"].ensemble_scheduling.step if s.model_name == "postprocessing")
        step.output_map["DETOKENIZED"] = "text_output"

    assert broken(change) == ["ensemble: maps output 'DETOKENIZED' that postprocessing does not declare"]


def test_rendering_a_broken_profile_fails_with_one_line_per_violation(tmp_path) -> None:
    from stack.render import ProfileError

    source = profile_path("gpu-h100").read_text()
    profile = tmp_path / "gpu-broken.toml"
    profile.write_text(source.replace('guided_decoding_backend = ""\n', "").replace(
        'xgrammar_tokenizer_info_path = ""\n', ""))
    with pytest.raises(ProfileError) as raised:
        render_profile(profile)
    lines = str(raised.value).splitlines()
    assert "breaks the tensorrtllm backend contract" in lines[0]
    assert [line.split(" is required")[0].strip() for line in lines[1:]] == [
        "tensorrt_llm: parameters.xgrammar_tokenizer_info_path", "tensorrt_llm: parameters.guided_decoding_backend"]


def test_contract_outputs_by_flag_and_request() -> None:
    terms = upstream.load()
    assert terms.written_outputs({}, {"output_ids", "sequence_length", "num_input_tokens"}) == \
        ["output_ids", "sequence_length"]
    with_counts = terms.written_outputs({"return_num_input_tokens": True}, {"num_input_tokens"})
    assert "num_input_tokens" in with_counts and "kv_cache_reused_blocks" not in with_counts
    perf = terms.written_outputs({"return_perf_metrics": True}, set())
    assert {"acceptance_rate", "total_draft_tokens", "kv_cache_reused_blocks", "arrival_time_ns"} <= set(perf)
    assert terms.missing_parameters({"gpt_model_type": "V1"}) == [
        terms.missing_message.format(key=key) for key in ("tokenizer_dir", "xgrammar_tokenizer_info_path",
                                                          "guided_decoding_backend")]


def test_the_bls_only_asks_for_outputs_the_contract_knows() -> None:
    terms = upstream.load()
    assert set(engine_calls.REQUIRED_OUTPUTS) | set(engine_calls.PASSTHROUGH_OUTPUTS) <= set(terms.outputs)
    assert engine_calls.sent_inputs() <= set(terms.inputs)


@pytest.mark.parametrize("profile", ["cpu", "gpu-h100"])
def test_both_profiles_serve_the_pair_verifier_as_the_orchestrator_calls_it(profile: str) -> None:
    models = rendered(profile)
    assert contract.VERIFIER in models and contract.verifier_violations(models) == []


def test_a_verifier_that_breaks_the_orchestrators_calls_is_named() -> None:
    models = rendered("cpu")
    verifier = models[contract.VERIFIER]
    verifier.output[0].data_type = model_config_pb2.TYPE_FP16
    verifier.ClearField("dynamic_batching")
    verifier.max_batch_size = 1
    _drop(verifier.input, "query")
    found = contract.verifier_violations(models)
    assert found == ["pair_verifier: input 'query' must be declared TYPE_STRING (found nothing)",
                     "pair_verifier: output 'score' must be declared TYPE_FP32 (found TYPE_FP16)",
                     "pair_verifier: needs dynamic_batching (concurrent lookups share one ONNX run)",
                     "pair_verifier: max_batch_size 1 is below semantic.candidates (3): one lookup's candidates "
                     "must fit one request"]
