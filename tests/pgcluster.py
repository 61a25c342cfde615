"""A throwaway PostgreSQL cluster of a test's own, on a free port: to stop, start, or run in another language.

The shared test server (SWEEP_TEST_POSTGRES_URL) is never touched. Needs Debian's postgresql and root
(the server runs as the postgres user, as in .ci/postgres.sh); a test using it skips otherwise.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy

PASSWORD = "right-password"


@dataclass
class Cluster:
    bin: Path
    dir: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"),
                        "-l", str(self.dir / "server.log"), "-w", "-t", "60", *args],
                       check=True, capture_output=True, timeout=90, env={**os.environ, **self.env})

    def url(self, db: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql+psycopg://postgres:{password}@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        engine = sqlalchemy.create_engine(self.url())
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
        finally:
            engine.dispose()
        return self.url(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def german_locale(folder: Path) -> dict[str, str]:
    """de_DE.UTF-8 compiled into ``folder`` (glibc reads it through LOCPATH): no system locale is changed."""
    if shutil.which("localedef") is None or not Path("/usr/share/i18n/locales/de_DE").is_file():
        pytest.skip("needs glibc's localedef and Debian's locales package (scripts/install-debian.sh locales)")
    out = folder / "locales"
    out.mkdir()
    subprocess.run(["localedef", "-i", "de_DE", "-f", "UTF-8", str(out / "de_DE.UTF-8")], check=True,
                   capture_output=True, timeout=120)
    out.chmod(0o755)
    return {"LOCPATH": str(out)}


@contextlib.contextmanager
def cluster(*, german: bool = False) -> Iterator[Cluster]:
    """A started cluster (password auth, user postgres / PASSWORD); stopped and removed at the end."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if not bins or os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs Debian's postgresql (scripts/install-debian.sh postgresql) and root, as .ci/postgres.sh")
    folder = Path(tempfile.mkdtemp(prefix="sweep-own-pg-", dir="/var/tmp"))
    folder.chmod(0o755)
    try:
        c = Cluster(Path(bins[-1]), folder, free_port(), german_locale(folder) if german else {})
        data = folder / "data"
        data.mkdir(mode=0o700)
        shutil.chown(data, "postgres", "postgres")
        (folder / "pw").write_text(PASSWORD)
        subprocess.run(["runuser", "-u", "postgres", "--", str(c.bin / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={folder / 'pw'}", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=120)
        for name in ("server.log",):
            (folder / name).touch()
            shutil.chown(folder / name, "postgres", "postgres")
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {c.port}\nunix_socket_directories = '{data}'\n"
                       "fsync = off\nsynchronous_commit = off\nmax_connections = 60\n")
            if german:
                conf.write("lc_messages = 'de_DE.UTF-8'\n")
        c.pg_ctl("start")
        try:
            yield c
        finally:
            with contextlib.suppress(subprocess.SubprocessError):
                c.pg_ctl("stop", "-m", "immediate")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
