"""``python -m ponder`` runs the CLI."""

from ponder.apps.cli import run

run()
