"""The entrypoint of the bundled PostgreSQL image built here
(``hack/images/postgres-entrypoint.sh``) run with the machine's PostgreSQL 15
binaries -- the same Debian packages the image holds -- as the ``postgres``
user, the way the chart runs the container (uid 999 there)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

ENTRYPOINT = Path(__file__).resolve().parents[3] / "hack" / "images" / "postgres-entrypoint.sh"
BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def workdir():
    if not (BIN / "postgres").exists():
        pytest.fail(f"PostgreSQL 15 binaries missing in {BIN} (hack/install-system-packages.sh)")
    d = Path(tempfile.mkdtemp(prefix="kova-pg-entrypoint-"))
    d.chmod(0o755)
    shutil.chown(d, "postgres", "postgres")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _start(workdir: Path, port: int) -> subprocess.Popen:
    env = {"PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "PGDATA": str(workdir / "data" / "pgdata"), "POSTGRES_USER": "placement",
           "POSTGRES_PASSWORD": "s3cret", "POSTGRES_DB": "placement"}
    return subprocess.Popen(
        ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
         "sh", str(ENTRYPOINT), "-p", str(port), "-c", f"unix_socket_directories={workdir}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _connect(proc: subprocess.Popen, port: int, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(host="127.0.0.1", port=port, user="placement",
                                   password="s3cret", dbname="placement", connect_timeout=2)
        except psycopg.OperationalError:
            if proc.poll() is not None:
                raise AssertionError(f"PostgreSQL exited ({proc.returncode}):\n"
                                     f"{proc.stdout.read()}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)  # the image's stop signal: fast shutdown
    out, _ = proc.communicate(timeout=60)
    return out


def test_initialises_once_and_restarts_on_a_group_opened_data_directory(workdir):
    port = _free_port()
    proc = _start(workdir, port)
    try:
        with _connect(proc, port) as conn:  # password authentication over TCP
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('survives a restart')")
            conn.commit()
    finally:
        out = _stop(proc)
    assert "kova-postgres: initialising" in out
    pgdata = workdir / "data" / "pgdata"
    # what a volume's fsGroup handling does to it: group rwx + setgid
    os.chmod(pgdata, 0o2770)
    proc = _start(workdir, port)
    try:
        with _connect(proc, port) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == ("survives a restart",)
    finally:
        out = _stop(proc)
    assert "initialising" not in out
    assert oct(pgdata.stat().st_mode & 0o777) == "0o700"


def test_refuses_an_empty_data_directory_without_a_password(workdir):
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "PGDATA": str(workdir / "pgdata")}
    out = subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                          "sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "POSTGRES_PASSWORD is not set" in out.stderr
