"""``qa-serving``: every subcommand, one module each (argparse and printing only; each calls the library)."""

from qa_serving.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
