"""Triton Python model: output ids → text, each request decoded on its own (sequence_length ids per beam)."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from cpu_engine import tokenizer


def _beams(tokens: np.ndarray) -> np.ndarray:
    """[batch, beam, T] (or [beam, T]) → one row per beam; works for T = 0 too."""
    return tokens.reshape(int(np.prod(tokens.shape[:-1])), tokens.shape[-1])


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.tokenizer = tokenizer.load(parameters.get("tokenizer_dir", {}).get("string_value", ""))

    def execute(self, requests):
        responses = []
        for request in requests:
            tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH").as_numpy()
            lengths = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH").as_numpy()
            texts = [self.tokenizer.decode(beam[:length].tolist(), skip_special_tokens=True).encode("utf-8")
                     for beam, length in zip(_beams(tokens), lengths.reshape(-1))]
            output = pb_utils.Tensor("OUTPUT", np.array(texts, dtype=np.object_).reshape(1, -1))
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses
