"""Local development environment: a real control plane and an embedded PostgreSQL."""
