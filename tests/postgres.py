"""A throw-away PostgreSQL server for the tests and benchmarks of search workers."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot start here (not installed, no driver, no ``postgres`` user as root)."""


def _binaries() -> tuple[Path, Path]:
    found = shutil.which("pg_ctl"), shutil.which("initdb")
    if all(found):
        return Path(found[0]), Path(found[1])
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "pg_ctl").exists() and (folder / "initdb").exists():
            return folder / "pg_ctl", folder / "initdb"
    raise PostgresUnavailable("PostgreSQL is not installed (apt-get install -y postgresql)")


@contextmanager
def postgres_server(folder: Path) -> Iterator[str]:
    """Start PostgreSQL in ``folder`` on a free port of 127.0.0.1 and yield its SQLAlchemy URL.

    PostgreSQL refuses to run as root: as root, the cluster is created and run by the ``postgres``
    user of the Debian package. The server is stopped on exit.
    """
    pg_ctl, initdb = _binaries()
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise PostgresUnavailable("psycopg is not installed (pip install 'lightning-nas[postgres]')") from None
    user: str | None = None
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable("running as root and there is no 'postgres' user to run PostgreSQL") from None
        user = "postgres"
        os.chown(folder, account.pw_uid, account.pw_gid)
        for parent in Path(folder).resolve().parents:  # the server must reach its directory
            if parent == Path(tempfile.gettempdir()) or parent == Path("/"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o711)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = Path(folder) / "data"
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    try:
        subprocess.run(
            [initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
            user=user,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [pg_ctl, "-D", data, "-o", options, "-l", Path(folder) / "server.log", "-w", "start"],
            user=user,
            check=True,
            capture_output=True,
        )
    except subprocess.CalledProcessError as err:
        message = (err.stderr or err.stdout or b"").decode().strip()[-300:]
        raise PostgresUnavailable(f"PostgreSQL did not start: {message}") from None
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"  # SQLAlchemy 2.1: psycopg
    finally:
        subprocess.run([pg_ctl, "-D", data, "-m", "immediate", "stop"], user=user, capture_output=True)
