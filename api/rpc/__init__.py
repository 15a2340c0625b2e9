"""Qdrant's gRPC API (port 6334) over the same route handlers as REST."""
