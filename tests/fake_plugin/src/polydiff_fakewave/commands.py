"""The fake plugin's own command."""

from __future__ import annotations

import argparse


def hello(argv: list[str]) -> int:
    """``polydiff fakewave hello [--name NAME]``: print a greeting; exit 3 for ``--fail``."""
    parser = argparse.ArgumentParser(prog="polydiff fakewave hello")
    parser.add_argument("--name", default="world")
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args(argv)
    print(f"hello {args.name}")
    return 3 if args.fail else 0
