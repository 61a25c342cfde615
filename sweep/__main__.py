"""``python -m sweep`` is the ``sweep`` command (used to start local worker processes)."""

from sweep.cli import main

if __name__ == "__main__":
    main(prog_name="sweep")
