"""Cache layers: exact (Redis, SHA-256 of the canonical request) and semantic (embedding similarity)."""
