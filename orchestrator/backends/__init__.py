"""Clients of what the orchestrator calls: Triton's LLM and embedding models, and an in-process embedder."""
