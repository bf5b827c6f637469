"""Ponder apps (see docs/architecture.md)."""
