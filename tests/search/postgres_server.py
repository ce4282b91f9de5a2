"""A real PostgreSQL server for the tests about shared (distributed) search studies.

Debian's `postgresql` package (scripts/setup.sh installs it when missing) gives the binaries;
`initdb` and the server refuse to run as root, and the tests may run as root (CI does), so the
data folder is handed to the `postgres` system user and both run through `runuser`. The server
listens on 127.0.0.1 at a free port with its socket in the data folder, trusts local
connections, and is stopped (fast shutdown) and removed when the context ends.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator


def postgres_bin() -> str | None:
    """The folder of the newest installed PostgreSQL server binaries, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_server(timeout_s: float = 30.0) -> Iterator[str]:
    """Start a throw-away server; yields its SQLAlchemy URL (psycopg 3 driver, database `postgres`)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (Debian package postgresql)")
    as_root = os.geteuid() == 0
    wrap = ["runuser", "-u", "postgres", "--"] if as_root else []
    tmp = tempfile.mkdtemp(prefix="hwnas-pg-")
    data = os.path.join(tmp, "data")
    os.mkdir(data, 0o700)
    if as_root:
        shutil.chown(tmp, "postgres")
        shutil.chown(data, "postgres")
    port = _free_port()
    user = "postgres" if as_root else os.environ.get("USER", "postgres")
    try:
        subprocess.run([*wrap, f"{bin_dir}/initdb", "-A", "trust", "-U", user, "-D", data],
                       check=True, capture_output=True, timeout=timeout_s)
        options = f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off -c max_connections=50"
        subprocess.run([*wrap, f"{bin_dir}/pg_ctl", "-D", data, "-o", options, "-l", f"{data}/log", "-w", "start"],
                       check=True, capture_output=True, timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:  # pg_ctl -w waits for the socket; check TCP as well
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/postgres"
    finally:
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run([*wrap, f"{bin_dir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=timeout_s)
        shutil.rmtree(tmp, ignore_errors=True)
