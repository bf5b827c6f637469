"""``python -m ponder.apps`` runs the CLI."""

from ponder.apps.cli import run

run()
