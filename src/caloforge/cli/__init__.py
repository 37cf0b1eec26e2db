"""Command-line interface (``caloforge COMMAND ...``)."""

from .main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
