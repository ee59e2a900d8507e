"""Triton Python model (decoupled): text → tensorrt_llm → text in one model (upstream's BLS interface).

Each request runs on its own thread: tokenize, call tensorrt_llm through BLS (decoupled), turn the streamed
ids into text deltas with an incremental detokenizer, and pass the KV/timing outputs through when the engine
writes them. The engine request carries this request's id, so a caller may end it with upstream's `stop`
request sent straight to tensorrt_llm; when the client cancels, the BLS sends that stop itself (an ensemble does
not pass cancellation on in Triton 2.51). What is sent and read is cpu_engine.engine_calls, checked against the
tensorrt_llm config at render time.
"""

import json
import threading
import uuid

import numpy as np
import triton_python_backend_utils as pb_utils

from cpu_engine import engine_calls, tokenizer
from cpu_engine.detokenize import IncrementalDetokenizer

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
#: Summed over the engine responses a BLS response covers (upstream counts the tokens of each response).
COUNTED = "num_output_tokens"


def _strings(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return []
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in tensor.as_numpy().reshape(-1)]


def _scalar(request, name, default=None):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return tensor.as_numpy().reshape(-1)[0] if tensor is not None else default


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.tokenizer = tokenizer.load(parameters.get("tokenizer_dir", {}).get("string_value", ""))
        self.end_id = self.tokenizer.token_to_id(parameters["end_token"]["string_value"])
        self.pad_id = self.tokenizer.token_to_id(parameters["pad_token"]["string_value"])

    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self._serve, args=(request,), daemon=True).start()
        return None

    def _serve(self, request):
        sender = request.get_response_sender()
        try:
            engine_request_id = request.request_id() or f"bls-{uuid.uuid4().hex}"
            engine_request = self._engine_request(request, engine_request_id)
        except (ValueError, UnicodeDecodeError) as error:
            self._fail(sender, f"tensorrt_llm_bls: {error}", pb_utils.TritonError.INVALID_ARG)
            return
        streaming = bool(_scalar(request, "stream", False))
        detokenizer = IncrementalDetokenizer(lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True))
        passthrough, parts = {}, []
        stop_sent = False
        for response in engine_request.exec(decoupled=True):
            if sender.is_cancelled() and not stop_sent:
                self._stop(engine_request_id)
                stop_sent = True
            if stop_sent:
                continue
            if response.has_error():
                self._fail(sender, response.error().message(), pb_utils.TritonError.INTERNAL)
                return
            ids = pb_utils.get_output_tensor_by_name(response, "output_ids")
            if ids is None:
                continue
            length = int(pb_utils.get_output_tensor_by_name(response, "sequence_length").as_numpy().reshape(-1)[0])
            text = detokenizer.push(ids.as_numpy().reshape(-1)[:length].tolist())
            passthrough = self._passthrough(response, passthrough)
            if streaming and text:
                sender.send(self._response(text, passthrough))
                passthrough.pop(COUNTED, None)
            elif text:
                parts.append(text)
        if stop_sent:
            self._fail(sender, "tensorrt_llm_bls: request cancelled", pb_utils.TritonError.CANCELLED)
            return
        parts.append(detokenizer.flush())
        if not streaming and not bool(_scalar(request, "exclude_input_in_output", True)):
            parts.insert(0, _strings(request, "text_input")[0])
        sender.send(self._response("".join(parts), passthrough), flags=FINAL)

    @staticmethod
    def _passthrough(response, previous):
        """The engine's optional outputs on this response; token counts not yet sent on are added up."""
        latest = {name: tensor.as_numpy() for name in engine_calls.PASSTHROUGH_OUTPUTS
                  if (tensor := pb_utils.get_output_tensor_by_name(response, name)) is not None}
        if COUNTED in latest and COUNTED in previous:
            latest[COUNTED] = latest[COUNTED] + previous[COUNTED]
        return {**previous, **latest}

    def _engine_request(self, request, request_id):
        ids = tokenizer.encode_prompt(self.tokenizer, _strings(request, "text_input"))
        max_tokens = _scalar(request, "max_tokens")
        if max_tokens is None:
            raise ValueError("max_tokens: required input missing")
        tensors = {
            "input_ids": np.array([ids], dtype=np.int32),
            "input_lengths": np.array([[len(ids)]], dtype=np.int32),
            "request_output_len": np.array([[max_tokens]], dtype=np.int32),
            "end_id": np.array([[_scalar(request, "end_id", self.end_id)]], dtype=np.int32),
            "pad_id": np.array([[_scalar(request, "pad_id", self.pad_id)]], dtype=np.int32),
            "stop_words_list": tokenizer.word_list(self.tokenizer, _strings(request, "stop_words"))[None],
            "bad_words_list": tokenizer.word_list(self.tokenizer, _strings(request, "bad_words"))[None],
            **{flag: np.array([[True]], dtype=np.bool_) for flag in engine_calls.TRUE_FLAGS},
        }
        for name, engine_name in engine_calls.FORWARDED.items():
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                tensors[engine_name] = tensor.as_numpy()
        return pb_utils.InferenceRequest(
            model_name="tensorrt_llm",
            inputs=[pb_utils.Tensor(name, value) for name, value in tensors.items()],
            requested_output_names=[*engine_calls.REQUIRED_OUTPUTS, *engine_calls.PASSTHROUGH_OUTPUTS],
            request_id=request_id)

    @staticmethod
    def _stop(request_id):
        """Cancel the engine request: Triton 2.51's BLS response iterator cannot, so use upstream's `stop` input."""
        values = {"input_ids": np.array([[0]], dtype=np.int32), "request_output_len": np.array([[1]], dtype=np.int32),
                  "stop": np.array([[True]], dtype=np.bool_)}
        stop = pb_utils.InferenceRequest(
            model_name="tensorrt_llm", request_id=request_id, requested_output_names=[],
            inputs=[pb_utils.Tensor(name, values[name]) for name in engine_calls.STOP_SENT])
        for _ in stop.exec(decoupled=True):
            pass

    @staticmethod
    def _response(text, passthrough):
        tensors = [pb_utils.Tensor("text_output", np.array([[text.encode("utf-8")]], dtype=np.object_))]
        tensors += [pb_utils.Tensor(name, value) for name, value in passthrough.items()]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    @staticmethod
    def _fail(sender, message, code):
        sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)), flags=FINAL)
