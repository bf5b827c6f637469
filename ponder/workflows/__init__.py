"""Ponder workflows (see docs/architecture.md)."""
