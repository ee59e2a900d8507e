"""The orchestrator's two front doors: an OpenAI-compatible HTTP API and the typed gRPC service.

Both translate their wire formats into the service's types (orchestrator.schemas), authenticate callers
into tenants (auth), and map the service's errors to their status codes (errors); the service behind them
never sees HTTP or protobuf.
"""
