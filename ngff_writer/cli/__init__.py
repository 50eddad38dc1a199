"""The ``ngff-writer`` command line: ``info``, ``status``, ``validate``, ``finalize``,
``repair``, ``watch``, ``view`` and ``demo`` (see the guide's "Command line").

An edge of the package: it uses the public API and the readers only, and the core never
imports it. ``main`` is the console script; ``python -m ngff_writer.cli`` runs it too.
"""

from ._commands import EXIT_NO_IMAGE, EXIT_PROBLEM, EXIT_STORE, EXIT_USAGE, cli, main

__all__ = ["EXIT_NO_IMAGE", "EXIT_PROBLEM", "EXIT_STORE", "EXIT_USAGE", "cli", "main"]
