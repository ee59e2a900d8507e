"""Echo every input as `<name>_OUT` through as_numpy() and pb_utils.Tensor, the path the LLM models use."""

import triton_python_backend_utils as pb_utils

NAMES = ("INT32", "INT64", "FP32", "BYTES", "BOOL")


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            outputs = [pb_utils.Tensor(f"{name}_OUT", pb_utils.get_input_tensor_by_name(request, name).as_numpy())
                       for name in NAMES]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
