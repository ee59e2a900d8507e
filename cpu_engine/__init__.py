"""CPU reference engine: llama.cpp (through xllamacpp, in-process) behind TensorRT-LLM's `tensorrt_llm` interface.

llama.cpp does the arithmetic, the continuous batching across its parallel slots and the prompt-prefix KV
reuse. This package is only the part around it: the mapping between upstream's tensors and llama.cpp requests
(`requests`), the admission policy of `gpt_model_type` (`admission`), KV block accounting (`kv_blocks`), the
engine wrapper (`engine`, `completion`), text helpers for the Python models (`detokenize`, `tokenizer`; the
chat template and the model files' locations are model_assets', shared with the orchestrator).
Everything except `engine` is importable and testable without llama.cpp or Triton.
"""
