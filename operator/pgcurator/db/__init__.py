"""Connecting to target databases and running statements safely."""
