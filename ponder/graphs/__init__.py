"""Ponder graphs (see docs/architecture.md)."""
