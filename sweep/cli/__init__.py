"""The ``sweep`` command: click commands (``commands.py``) and how they print (``output.py``).

Thin by design: each command opens, calls one library function and turns a ``SweepError``
into one line; nothing a library user needs lives here.
"""

from sweep.cli.commands import main

__all__ = ["main"]
