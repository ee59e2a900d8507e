"""The caching orchestrator in front of Triton: exact cache, semantic cache, then the model."""
