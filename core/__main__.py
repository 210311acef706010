"""``python -m polydiff``: the same command line as the ``polydiff`` script."""

from polydiff.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
