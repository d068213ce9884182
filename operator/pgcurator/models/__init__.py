"""Pydantic models for the custom resources: the one source for handlers and CRDs."""
