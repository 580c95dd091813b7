"""The ``qa-serving`` subcommands that live beside the library: argparse and printing only.

Each module exposes ``add_parser(subparsers)`` and calls keyword-only library functions, so everything a
command does is also callable from Python without argparse.
"""
