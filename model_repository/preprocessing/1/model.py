"""Triton Python model: text_input → input_ids, stop/bad words → upstream's [2, L] word lists.

The prompts of all requests in one execute() (what Triton's dynamic batcher merged) are tokenized in one batch
encode; a request whose prompt is malformed gets its own error and does not fail the others."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from cpu_engine import tokenizer


def _strings(request, name: str) -> list[str]:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return []
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in tensor.as_numpy().reshape(-1)]


def _optional_int(request, name: str, default: int) -> int:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return int(tensor.as_numpy().reshape(-1)[0]) if tensor is not None else default


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        directory = parameters.get("tokenizer_dir", {}).get("string_value", "")
        self.tokenizer = tokenizer.load(directory)
        self.end_id = self.tokenizer.token_to_id(parameters["end_token"]["string_value"])
        self.pad_id = self.tokenizer.token_to_id(parameters["pad_token"]["string_value"])

    def execute(self, requests):
        prompts, problems = {}, {}
        for index, request in enumerate(requests):
            try:
                prompts[index] = tokenizer.single_prompt(_strings(request, "QUERY"))
            except (ValueError, UnicodeDecodeError) as error:
                problems[index] = error
        # Every request the dynamic batcher merged into this call is tokenized in one batch encode.
        ids = dict(zip(prompts, tokenizer.encode_batch(self.tokenizer, list(prompts.values())), strict=True))
        responses = []
        for index, request in enumerate(requests):
            try:
                if index in problems:
                    raise problems[index]
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=self._preprocess(request, tokenizer.prompt_ids(ids[index]))))
            except (ValueError, UnicodeDecodeError) as error:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"preprocessing: {error}", pb_utils.TritonError.INVALID_ARG)))
        return responses

    def _preprocess(self, request, ids: list[int]):
        output_len = pb_utils.get_input_tensor_by_name(request, "REQUEST_OUTPUT_LEN").as_numpy().reshape(-1)
        tensors = {
            "INPUT_ID": np.array([ids], dtype=np.int32),
            "REQUEST_INPUT_LEN": np.array([[len(ids)]], dtype=np.int32),
            "BAD_WORDS_IDS": tokenizer.word_list(self.tokenizer, _strings(request, "BAD_WORDS_DICT"))[None],
            "STOP_WORDS_IDS": tokenizer.word_list(self.tokenizer, _strings(request, "STOP_WORDS_DICT"))[None],
            "REQUEST_OUTPUT_LEN": output_len.astype(np.int32).reshape(1, -1),
            "OUT_END_ID": np.array([[_optional_int(request, "END_ID", self.end_id)]], dtype=np.int32),
            "OUT_PAD_ID": np.array([[_optional_int(request, "PAD_ID", self.pad_id)]], dtype=np.int32),
        }
        return [pb_utils.Tensor(name, value) for name, value in tensors.items()]
