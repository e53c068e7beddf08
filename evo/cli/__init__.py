"""The ``fooling`` command: :func:`main` and one module per command group (parsing only)."""

from fooling.evo.cli.main import build_parser, main, run_command

__all__ = ["build_parser", "main", "run_command"]
