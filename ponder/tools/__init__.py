"""Ponder tools (see docs/architecture.md)."""
