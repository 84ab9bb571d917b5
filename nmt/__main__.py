"""Allows ``python -m nmt ...`` (and ``torchrun -m nmt ...``) as an alias of the ``nmt`` command."""

from nmt.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
