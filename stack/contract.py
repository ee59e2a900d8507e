"""Render-time check of a repository against TensorRT-LLM's backend contract (cpu_engine/upstream_contract.toml).

What a GPU would reveal only when loading or serving, found while rendering: a required parameter missing, an
output the backend writes under the flags our callers send but the config does not declare (Triton core then
fails the response), an input the ensemble or BLS sends that the config does not declare, an output a caller
reads that nothing produces. Each violation is one line naming the model and the tensor or key.
"""

from __future__ import annotations

from collections.abc import Mapping

from tritonclient.grpc import model_config_pb2

from cpu_engine import contract as upstream
from cpu_engine import engine_calls
from model_assets import pair_verifier
from orchestrator.config import SemanticSettings

ENGINE = "tensorrt_llm"
VERIFIER = "pair_verifier"
BLS = "tensorrt_llm_bls"
ENSEMBLE = "ensemble"
TENSORRTLLM_BACKEND = "tensorrtllm"
DATA_TYPES = model_config_pb2.DataType


def _parameters(config: model_config_pb2.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def _parameter_violations(engine: model_config_pb2.ModelConfig, contract: upstream.Contract) -> list[str]:
    parameters = _parameters(engine)
    found = [f"{ENGINE}: parameters.{key} is required by the backend (it fails to load with "
             f"'{message}'); an empty string means off"
             for key, message in zip(contract.required_parameters, contract.missing_parameters([]), strict=True)
             if key not in parameters]
    if engine.backend == TENSORRTLLM_BACKEND:
        model_type = parameters.get("gpt_model_type")
        if model_type is not None and model_type not in contract.model_types:
            found.append(f"{ENGINE}: parameters.gpt_model_type '{model_type}' is not one of "
                         f"{', '.join(contract.model_types)}")
        if not any(parameters.get(key) for key in contract.model_paths):
            found.append(f"{ENGINE}: parameters.gpt_model_path is empty (the backend refuses: 'Both encoder and "
                         f"decoder model paths are empty')")
    return found


def _callers(models: Mapping[str, model_config_pb2.ModelConfig]) -> dict[str, tuple[set[str], set[str]]]:
    """caller → (engine inputs it sends, engine outputs it reads)."""
    callers: dict[str, tuple[set[str], set[str]]] = {}
    if BLS in models:
        callers[BLS] = (engine_calls.sent_inputs(),
                        set(engine_calls.REQUIRED_OUTPUTS) | set(engine_calls.PASSTHROUGH_OUTPUTS))
    if ENSEMBLE in models:
        for step in models[ENSEMBLE].ensemble_scheduling.step:
            if step.model_name == ENGINE:
                callers[ENSEMBLE] = (set(step.input_map), set(step.output_map))
    return callers


def _io_violations(engine: model_config_pb2.ModelConfig, models: Mapping[str, model_config_pb2.ModelConfig],
                   contract: upstream.Contract) -> list[str]:
    declared_inputs = {tensor.name: tensor for tensor in engine.input}
    declared_outputs = {tensor.name for tensor in engine.output}
    found = []
    for name, tensor in declared_inputs.items():
        spec = contract.inputs.get(name)
        if spec is not None and DATA_TYPES.Name(tensor.data_type) != spec["data_type"]:
            found.append(f"{ENGINE}: input '{name}' is declared {DATA_TYPES.Name(tensor.data_type)}, the backend "
                         f"reads {spec['data_type']}")
    for output in contract.outputs.values():
        if output.when == upstream.ALWAYS and output.name not in declared_outputs:
            found.append(f"{ENGINE}: output '{output.name}' is written on every response but not declared")
    for caller, (sent, read) in sorted(_callers(models).items()):
        for name in sorted(sent - set(declared_inputs)):
            found.append(f"{caller}: sends input '{name}' that {ENGINE} does not declare (Triton refuses the "
                         f"request)")
        for flag, outputs in sorted(contract.flag_outputs().items()):
            if flag not in sent:
                continue
            for name in outputs:
                if name not in declared_outputs:
                    found.append(f"{ENGINE}: writes output '{name}' whenever '{flag}' is true, which {caller} "
                                 f"sends, but does not declare it (Triton core fails the response)")
        for name in sorted(read):
            spec = contract.outputs.get(name)
            if name not in declared_outputs:
                found.append(f"{caller}: reads output '{name}' that {ENGINE} does not declare")
            elif spec is None:
                found.append(f"{caller}: reads output '{name}' that the backend never writes")
            elif spec.when != upstream.ALWAYS and spec.flag and spec.flag not in sent:
                found.append(f"{caller}: reads output '{name}', written only when '{spec.flag}' is true, which "
                             f"{caller} never sends")
        if "streaming" in sent and not engine.model_transaction_policy.decoupled:
            found.append(f"{caller}: sends 'streaming', which needs {ENGINE} to be decoupled")
    return sorted(set(found), key=found.index)


def _ensemble_step_violations(models: Mapping[str, model_config_pb2.ModelConfig]) -> list[str]:
    """Every ensemble step maps only tensors its model declares (Triton refuses to load the ensemble otherwise)."""
    if ENSEMBLE not in models:
        return []
    found = []
    for step in models[ENSEMBLE].ensemble_scheduling.step:
        model = models.get(step.model_name)
        if model is None or step.model_name == ENGINE:
            continue
        inputs, outputs = {t.name for t in model.input}, {t.name for t in model.output}
        found += [f"{ENSEMBLE}: maps input '{name}' that {step.model_name} does not declare"
                  for name in step.input_map if name not in inputs]
        found += [f"{ENSEMBLE}: maps output '{name}' that {step.model_name} does not declare"
                  for name in step.output_map if name not in outputs]
    return found


def violations(models: Mapping[str, model_config_pb2.ModelConfig]) -> list[str]:
    """Every way the rendered models break the backend contract; empty when they keep it (or serve no LLM)."""
    engine = models.get(ENGINE)
    if engine is None:
        return []
    contract = upstream.load()
    return (_parameter_violations(engine, contract) + _io_violations(engine, models, contract)
            + _ensemble_step_violations(models))


def verifier_violations(models: Mapping[str, model_config_pb2.ModelConfig]) -> list[str]:
    """The `pair_verifier` model as the orchestrator's client calls it (orchestrator/backends/pair_verifier.py):
    the tensors model_assets.pair_verifier names, with their types, a dynamic batcher, and room for one
    lookup's candidates in one request. Empty when the repository has no verifier."""
    model = models.get(VERIFIER)
    if model is None:
        return []
    inputs = {t.name: DATA_TYPES.Name(t.data_type) for t in model.input}
    outputs = {t.name: DATA_TYPES.Name(t.data_type) for t in model.output}
    wanted = [("input", inputs, pair_verifier.INPUT_CACHED, "TYPE_STRING"),
              ("input", inputs, pair_verifier.INPUT_QUERY, "TYPE_STRING"),
              ("output", outputs, pair_verifier.OUTPUT_SCORE, "TYPE_FP32")]
    found = [f"{VERIFIER}: {kind} '{name}' must be declared {data_type} (found {declared.get(name, 'nothing')})"
             for kind, declared, name, data_type in wanted if declared.get(name) != data_type]
    if not model.HasField("dynamic_batching"):
        found.append(f"{VERIFIER}: needs dynamic_batching (concurrent lookups share one ONNX run)")
    candidates = SemanticSettings().candidates
    if model.max_batch_size < candidates:
        found.append(f"{VERIFIER}: max_batch_size {model.max_batch_size} is below semantic.candidates "
                     f"({candidates}): one lookup's candidates must fit one request")
    return found
