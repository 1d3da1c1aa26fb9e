"""OpenStack Placement's own functional tests (its gabbi files, vendored in
``tests/integration/placement/gabbits/``) against a live Kova Placement over HTTP.

For each database (SQLite and Postgres) the module starts ``kova placement
serve`` three times on one database: OpenStack's noauth2 mode with the
legacy default rules (``--no-enforce-new-defaults``) and a policy file the
"open policy" fixture rewrites; the secure-RBAC defaults; and the legacy
rules with CORS for ``http://valid.example.com``.  Every YAML file is one
test: its fixture (``gabbi_fixtures``) empties the database and builds its
providers through the REST API, then gabbi sends the file's requests in
order.  A request of the file that fails fails the test, unless it is in
``NOT_APPLICABLE`` with the reason (the same list is in docs/placement.md).
"""

from __future__ import annotations

import subprocess
import sys
import unittest
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.helpers import free_port, stop_process, wait_for
from tests.integration.placement import gabbi_fixtures

GABBITS = Path(__file__).resolve().parent / "gabbits"
FILES = sorted(p.stem for p in GABBITS.glob("*.yaml"))
ROOT = Path(__file__).resolve().parents[3]

#: (file, test name) -> why the upstream expectation does not apply to Kova.
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("basic-http", "bad content length not int"): (
        "gabbi's HTTP client (httpx) refuses to send a non-integer Content-Length over a "
        "socket (upstream runs it in-process through WSGI); over HTTP the server's parser "
        "answers it with 400 before Placement sees it: "
        "test_upstream_behaviour.py::test_non_integer_content_length_is_400"),
}

DATA_TABLES = ("allocations", "consumers", "inventories", "resource_provider_traits",
               "resource_provider_aggregates", "resource_providers")


class Server:
    def __init__(self, db_url: str, workdir: Path, name: str, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.policy_file = workdir / f"{name}-policy.yaml"
        self.policy_file.write_text("")
        self.log = open(workdir / f"{name}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kova.cli", "placement", "serve", "--database-url", db_url,
             "--port", str(self.port), "--auth-strategy", "noauth2",
             "--policy-file", str(self.policy_file), "--log-level", "warning", *args],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"placement {name} exited; see {self.log.name}")
            try:
                return httpx.get(self.url + "/", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 60, 0.2, f"placement {name}")

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.log.close()


class Harness:
    """What the fixtures need: reset the data, pick the server."""

    def __init__(self, db_url: str, workdir: Path) -> None:
        from kova.placement.db.engine import Database, upgrade

        upgrade(db_url)
        self.db = Database(db_url, pool_size=1)
        self.servers = {
            "legacy": Server(db_url, workdir, "legacy", "--no-enforce-new-defaults"),
            "secure": Server(db_url, workdir, "secure"),
            "cors": Server(db_url, workdir, "cors", "--no-enforce-new-defaults",
                           "--cors-allowed-origin", "http://valid.example.com",
                           "--cors-allow-headers", "openstack-api-version"),
        }
        self.current = "legacy"

    def reset(self, secure_rbac: bool, policy: dict[str, str]) -> None:
        from kova.placement.db.engine import touch_all

        with self.db.write() as conn:
            for name in DATA_TABLES:
                conn.execute(sa.text(f"DELETE FROM {name}"))
            for name in ("resource_classes", "traits"):
                conn.execute(sa.text(f"DELETE FROM {name} WHERE name LIKE 'CUSTOM\\_%' "
                                     "ESCAPE '\\'"))
            touch_all(conn)
        server = self.servers[self.current]
        text = "".join(f'"{k}": "{v}"\n' for k, v in policy.items())
        if server.policy_file.read_text() != text:
            server.policy_file.write_text(text)

    def url(self, secure_rbac: bool) -> str:
        return self.servers[self.current].url

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.db.dispose()


@pytest.fixture(scope="module", params=[
    "sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def harness(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"gabbi-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{workdir}/placement.db"
    else:
        from kova.dev.postgres import sqlalchemy_url

        url = sqlalchemy_url(request.getfixturevalue("pg_database"))
    h = Harness(url, workdir)
    try:
        yield h
    finally:
        h.stop()


def _server_for(suite_dict: dict) -> str:
    fixtures = suite_dict.get("fixtures") or []
    if "SecureRBACPolicyFixture" in fixtures:
        return "secure"
    if "CORSFixture" in fixtures:
        return "cors"
    return "legacy"


def run_file(h: Harness, name: str) -> tuple[list, list]:
    """Run one gabbi file; (failures, passes) as [(test name, message)]."""
    from gabbi import handlers, suitemaker, utils

    path = GABBITS / f"{name}.yaml"
    suite_dict = utils.load_yaml(yaml_file=str(path), safe=True)
    h.current = _server_for(suite_dict)
    server = h.servers[h.current]
    gabbi_fixtures.HARNESS = h
    suite = suitemaker.test_suite_from_dict(
        unittest.TestLoader(), name.replace("_", "-"), suite_dict, str(GABBITS), "127.0.0.1",
        server.port, gabbi_fixtures, None, prefix="",
        handlers=[handler() for handler in handlers.RESPONSE_HANDLERS],
        test_loader_name="kova")
    result = unittest.TestResult()
    suite.run(result)
    failed = [(t.test_data["name"], msg) for t, msg in result.failures + result.errors
              if hasattr(t, "test_data")]
    failed += [(str(t), msg) for t, msg in result.errors if not hasattr(t, "test_data")]
    failed += [(t.test_data["name"], "passed, but upstream marks it xfail")
               for t in result.unexpectedSuccesses]
    return failed, result.testsRun


@pytest.mark.parametrize("name", FILES)
def test_upstream_gabbi_file(harness, name):
    failed, ran = run_file(harness, name)
    assert ran > 0
    unexpected = [(test, msg) for test, msg in failed if (name, test) not in NOT_APPLICABLE]
    report = "\n\n".join(f"--- {test}\n{msg[-2500:]}" for test, msg in unexpected)
    assert not unexpected, f"{len(unexpected)} of {ran} requests of {name}.yaml failed:\n{report}"
