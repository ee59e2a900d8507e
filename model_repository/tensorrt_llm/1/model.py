"""Triton Python model (decoupled): the CPU reference engine behind TensorRT-LLM's `tensorrt_llm` interface.

Each request becomes one llama.cpp completion on its token ids (cpu_engine); `gpt_model_type` decides when it
may start (cpu_engine.admission). Streaming sends every new group of ids as it comes, then a last response with
the final flag; non-streaming sends one response. KV block outputs ride on every response, and Triton custom
metrics mirror nv_trt_llm_kv_cache_block_metrics and nv_trt_llm_request_metrics.
"""

import json
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import triton_python_backend_utils as pb_utils

from cpu_engine import tokenizer
from cpu_engine.admission import InflightAdmission, QueueFull, StaticBatchAdmission
from cpu_engine.completion import FINISH_CANCELLED, EngineError
from cpu_engine.config import EngineConfig
from cpu_engine.engine import GenerationOutcome, LlamaEngine, PromptTooLong
from cpu_engine.kv_blocks import RequestBlocks
from cpu_engine.requests import GenerationRequest, InvalidRequest
from stack import llm_assets

INPUTS = ("input_ids", "input_lengths", "request_output_len", "end_id", "pad_id", "stop_words_list",
          "bad_words_list", "beam_width", "temperature", "runtime_top_k", "runtime_top_p", "repetition_penalty",
          "presence_penalty", "frequency_penalty", "seed", "exclude_input_in_output", "streaming")
#: A request with `stop` true cancels the running request that has the same request id (upstream semantics).
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


@dataclass
class Job:
    request: GenerationRequest
    sender: object
    arrival_ns: int
    request_id: str
    #: Set by a `stop` request with the same request id (upstream's way to cancel from another caller).
    stopped: threading.Event = field(default_factory=threading.Event)

    def cancelled(self) -> bool:
        return self.stopped.is_set() or self.sender.is_cancelled()


def _int32(value) -> np.ndarray:
    return np.array([[value]], dtype=np.int32)


def _int64(value) -> np.ndarray:
    return np.array([[value]], dtype=np.int64)


def _error(sender, message: str, code) -> None:
    sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)), flags=FINAL)


class TritonPythonModel:
    def initialize(self, args):
        model_config = json.loads(args["model_config"])
        self.config = EngineConfig.from_model_config(model_config, default_model_path=str(llm_assets.gguf_path()))
        vocabulary = tokenizer.load(self.config.tokenizer_dir)
        self.engine = LlamaEngine(self.config, lambda text: tokenizer.encode(vocabulary, text))
        if self.config.inflight:
            self.admission = InflightAdmission(self.config.slots, self.config.max_queue_size, self._run)
        else:
            self.admission = StaticBatchAdmission(self.config.slots, self.config.max_queue_size, self._run)
        self._jobs: dict[str, Job] = {}
        self._jobs_lock = threading.Lock()
        self._create_metrics(args)
        self._stop = threading.Event()
        self._metrics_thread = threading.Thread(target=self._publish_metrics, daemon=True)
        self._metrics_thread.start()

    def execute(self, requests):
        for request in requests:
            arrival_ns = time.time_ns()
            sender = request.get_response_sender()
            stop = pb_utils.get_input_tensor_by_name(request, "stop")
            if stop is not None and bool(stop.as_numpy().reshape(-1)[0]):
                self._stop_request(request.request_id(), sender)
                continue
            inputs = {name: tensor.as_numpy() for name in INPUTS
                      if (tensor := pb_utils.get_input_tensor_by_name(request, name)) is not None}
            try:
                generation = GenerationRequest.from_inputs(inputs, self.config.exclude_input_in_output)
                self.engine.check_fits(generation)
            except (InvalidRequest, PromptTooLong) as error:
                _error(sender, f"tensorrt_llm: {error}", pb_utils.TritonError.INVALID_ARG)
                continue
            job = Job(generation, sender, arrival_ns, request.request_id())
            if job.request_id:
                with self._jobs_lock:
                    self._jobs[job.request_id] = job
            try:
                self.admission.submit(job)
            except QueueFull as error:
                _error(sender, f"tensorrt_llm: {error}", pb_utils.TritonError.UNAVAILABLE)
        return None

    def _stop_request(self, request_id: str, sender) -> None:
        with self._jobs_lock:
            job = self._jobs.get(request_id)
        if job is not None:
            job.stopped.set()
        sender.send(flags=FINAL)

    def _run(self, job: Job) -> None:
        try:
            self._generate(job)
        finally:
            with self._jobs_lock:
                if self._jobs.get(job.request_id) is job:
                    del self._jobs[job.request_id]

    def _generate(self, job: Job) -> None:
        request = job.request
        if job.cancelled():
            _error(job.sender, "tensorrt_llm: request cancelled", pb_utils.TritonError.CANCELLED)
            return

        def on_progress(progress):
            if request.streaming:
                job.sender.send(self._response(job, progress.new_ids, progress.blocks, None))

        try:
            outcome = self.engine.generate(request, on_progress, job.cancelled, job.arrival_ns)
        except PromptTooLong as error:
            _error(job.sender, f"tensorrt_llm: {error}", pb_utils.TritonError.INVALID_ARG)
            return
        except EngineError as error:
            _error(job.sender, f"tensorrt_llm: llama.cpp refused the request: {error}", pb_utils.TritonError.INTERNAL)
            return
        except Exception as error:  # noqa: BLE001 - a failed request must still get its final response
            _error(job.sender, f"tensorrt_llm: {type(error).__name__}: {error}", pb_utils.TritonError.INTERNAL)
            return
        if outcome.finish_reason == FINISH_CANCELLED:
            _error(job.sender, "tensorrt_llm: request cancelled", pb_utils.TritonError.CANCELLED)
            return
        if request.streaming:
            job.sender.send(self._response(job, [], outcome.blocks, outcome), flags=FINAL)
            return
        ids = outcome.output_ids if request.exclude_input_in_output else request.input_ids + outcome.output_ids
        job.sender.send(self._response(job, ids, outcome.blocks, outcome), flags=FINAL)

    def _response(self, job: Job, ids: list[int], blocks: RequestBlocks, outcome: GenerationOutcome | None):
        now = time.time_ns()
        tensors = {
            "output_ids": np.array([[ids]], dtype=np.int32).reshape(1, 1, len(ids)),
            "sequence_length": _int32(len(ids)),
            "kv_cache_alloc_new_blocks": _int32(blocks.new),
            "kv_cache_reused_blocks": _int32(blocks.reused),
            "kv_cache_alloc_total_blocks": _int32(blocks.total),
            "arrival_time_ns": _int64(job.arrival_ns),
            "first_scheduled_time_ns": _int64(outcome.first_scheduled_ns if outcome else job.arrival_ns),
            "first_token_time_ns": _int64(outcome.first_token_ns if outcome else now),
            "last_token_time_ns": _int64(outcome.last_token_ns if outcome else now),
            "num_input_tokens": _int32(len(job.request.input_ids)),
            "num_output_tokens": _int32(len(outcome.output_ids) if outcome else 0),
        }
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in tensors.items()])

    def _create_metrics(self, args):
        """Families and metrics live as long as this instance. While Triton reloads the model, two instances of
        the same model and version exist; Triton shares a metric between identical label sets and frees it with
        the first owner (which crashed the server), so each instance adds its own `instance` label."""
        labels = {"model": args["model_name"], "version": args["model_version"], "instance": uuid.uuid4().hex[:8]}
        self._kv_family = pb_utils.MetricFamily(
            name="nv_trt_llm_kv_cache_block_metrics",
            description="KV cache block metrics (CPU engine: derived from llama.cpp's token counts)",
            kind=pb_utils.MetricFamily.GAUGE)
        self._request_family = pb_utils.MetricFamily(
            name="nv_trt_llm_request_metrics", description="Request counts of the engine",
            kind=pb_utils.MetricFamily.GAUGE)
        self._kv_metrics = {kind: self._kv_family.Metric(labels={"kv_cache_block_type": kind, **labels})
                            for kind in ("max", "free", "used", "tokens_per", "reused", "fraction")}
        self._request_metrics = {kind: self._request_family.Metric(labels={"request_type": kind, **labels})
                                 for kind in ("active", "waiting", "max")}

    def _publish_metrics(self):
        period_s = self.config.stats_check_period_ms / 1000
        while not self._stop.wait(period_s):
            for kind, value in self.engine.kv_pool.snapshot().items():
                self._kv_metrics[kind].set(value)
            self._request_metrics["active"].set(self.admission.active)
            self._request_metrics["waiting"].set(self.admission.waiting)
            self._request_metrics["max"].set(self.config.slots)

    def finalize(self):
        self._stop.set()
        self._metrics_thread.join()
        self.admission.close()
        self.engine.close()
        del self._kv_metrics, self._request_metrics, self._kv_family, self._request_family
