"""Every tensor type the LLM models exchange survives the Python backend with its values intact."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient


VALUES = {
    "INT32": (np.array([5, 1, 2, 3, -7, 2**31 - 1], dtype=np.int32), "INT32"),
    "INT64": (np.array([5, 1, 2**40, -3], dtype=np.int64), "INT64"),
    "FP32": (np.array([0.5, -1.25, 3.0e-8, 1e20], dtype=np.float32), "FP32"),
    "BYTES": (np.array(["hello".encode(), "Ünïcödé 🐦".encode(), b"", b"\x00\xff"], dtype=np.object_), "BYTES"),
    "BOOL": (np.array([True, False, False, True], dtype=np.bool_), "BOOL"),
}


def test_every_type_round_trips_with_values(triton) -> None:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    inputs = []
    for name, (value, datatype) in VALUES.items():
        infer_input = grpcclient.InferInput(name, list(value.shape), datatype)
        infer_input.set_data_from_numpy(value)
        inputs.append(infer_input)
    result = client.infer("tensor_roundtrip", inputs)
    for name, (value, _) in VALUES.items():
        echoed = result.as_numpy(f"{name}_OUT")
        assert echoed.dtype == value.dtype or name == "BYTES"
        assert echoed.tolist() == value.tolist(), name
