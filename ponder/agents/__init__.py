"""Ponder agents (see docs/architecture.md)."""
