"""Ponder eval (see docs/architecture.md)."""
