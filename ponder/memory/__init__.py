"""Ponder memory (see docs/architecture.md)."""
