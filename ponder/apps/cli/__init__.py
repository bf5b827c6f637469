"""The ``ponder`` command line. ``main(argv) -> int`` is the testable entry point; ``run()``
is the console script. A command group is one module of this package: every module here
registers its commands on the app when the package is imported, so adding a command
touches only its own module."""

import importlib
import pkgutil

from ponder.apps.cli._app import (
    EXIT_ERROR,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    app,
    main,
    run,
)

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "_app":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["EXIT_ERROR", "EXIT_RUN_FAILED", "EXIT_USAGE", "app", "main", "run"]
