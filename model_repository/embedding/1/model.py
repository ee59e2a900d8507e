"""Triton Python model: sentence embeddings for every request of a dynamic batch in one ONNX run."""

import numpy as np
import triton_python_backend_utils as pb_utils

from model_assets.minilm import OnnxMiniLM


class TritonPythonModel:
    def initialize(self, args):
        import json

        parameters = json.loads(args["model_config"]).get("parameters", {})
        threads = int(parameters.get("intra_op_num_threads", {}).get("string_value", "1"))
        self.embedder = OnnxMiniLM(intra_op_threads=threads)

    def execute(self, requests):
        texts, counts, responses = [], [], []
        for request in requests:
            batch = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            texts.extend(t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t) for t in batch)
            counts.append(len(batch))
        vectors = self.embedder.encode(texts)
        start = 0
        for count in counts:
            output = pb_utils.Tensor("embedding", np.ascontiguousarray(vectors[start:start + count]))
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
            start += count
        return responses
