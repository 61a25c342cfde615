"""Where the store URL comes from, and how it is shown (password masked).

``--storage``, else ``SWEEP_STORAGE``, else the file named by ``SWEEP_STORAGE_FILE`` (a URL with
a password kept out of the environment of a batch job and out of ``ps``: a file only its owner
reads), else ``sqlite:///sweeps.db`` in the working folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from sweep.errors import StorageError

DEFAULT_URL = "sqlite:///sweeps.db"


def resolve_url(url: str | None) -> str:
    """The storage URL in use: ``url``, else ``SWEEP_STORAGE``, else ``SWEEP_STORAGE_FILE``'s text, else the default."""
    if url:
        return url
    if os.environ.get("SWEEP_STORAGE"):
        return os.environ["SWEEP_STORAGE"]
    named = os.environ.get("SWEEP_STORAGE_FILE", "")
    return _read_url_file(named) if named else DEFAULT_URL


def _read_url_file(named: str) -> str:
    try:
        text = Path(named).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
        raise StorageError(f"SWEEP_STORAGE_FILE names {named!r}, which cannot be read ({reason}); expected a file "
                           "holding the storage URL; fix the path or its permissions, or set SWEEP_STORAGE") from None
    if not text:
        raise StorageError(f"SWEEP_STORAGE_FILE names {named!r}, which is empty; expected the storage URL in it "
                           "(e.g. postgresql://user:password@host:5432/db); write it there or set SWEEP_STORAGE")
    return text


def mask(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
