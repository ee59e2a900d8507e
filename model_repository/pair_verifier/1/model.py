"""Triton Python model: the pair verifier's scores for every request of a dynamic batch in one execute (each pair
scored alone: model_assets.pair_verifier.OnnxPairVerifier.score says why)."""

import numpy as np
import triton_python_backend_utils as pb_utils

from model_assets.pair_verifier import INPUT_CACHED, INPUT_QUERY, OUTPUT_SCORE, OnnxPairVerifier


def _texts(request, name):
    batch = pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)
    return [t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t) for t in batch]


class TritonPythonModel:
    def initialize(self, args):
        import json

        parameters = json.loads(args["model_config"]).get("parameters", {})
        threads = int(parameters.get("intra_op_num_threads", {}).get("string_value", "1"))
        self.verifier = OnnxPairVerifier(intra_op_threads=threads)

    def execute(self, requests):
        pairs, counts, responses = [], [], []
        for request in requests:
            cached, query = _texts(request, INPUT_CACHED), _texts(request, INPUT_QUERY)
            pairs.extend(zip(cached, query))
            counts.append(len(cached))
        scores = self.verifier.score(pairs)
        start = 0
        for count in counts:
            output = pb_utils.Tensor(OUTPUT_SCORE, np.ascontiguousarray(scores[start:start + count].reshape(-1, 1)))
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
            start += count
        return responses
