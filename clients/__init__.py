"""Clients of the stack: chat, load generation, dynamic-batcher sweeps and a perf_analyzer wrapper."""
