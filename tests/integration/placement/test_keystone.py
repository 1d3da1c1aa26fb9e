"""Kova Placement behind a real OpenStack Keystone.

A Keystone (SQLite, fernet tokens, bootstrapped with an admin) and
keystonemiddleware's auth_token in front of ``kova placement serve
--auth-strategy keystone`` run from the virtualenv of
``hack/install-keystone.sh`` (run by ``hack/setup.sh``); the test fails,
never skips, when it is missing.  Tokens are issued by Keystone for users
with real role assignments; the policy decisions are Kova's, from the
identity headers auth_token sets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, stop_process, wait_for

VENV = Path(os.environ.get("KOVA_CACHE", Path.home() / ".cache" / "kova")) / "keystone"
PYTHON = VENV / "bin" / "python"
SERVERS = Path(__file__).resolve().parent / "keystone_servers.py"
ROOT = Path(__file__).resolve().parents[3]

CONF = """[DEFAULT]
log_file = {d}/keystone.log
[database]
connection = sqlite:///{d}/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = {d}/fernet
[fernet_receipts]
key_repository = {d}/fernet
[credential]
key_repository = {d}/credential
"""


def _start(cmd: list[str], log: Path, url: str, what: str) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT)

    def up():
        assert proc.poll() is None, f"{what} exited: {log.read_text()[-3000:]}"
        try:
            httpx.get(url, timeout=3)
            return True
        except httpx.TransportError:
            return False

    wait_for(up, 120, 0.3, what)
    return proc


class Keystone:
    def __init__(self, d: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v3"
        conf = d / "keystone.conf"
        conf.write_text(CONF.format(d=d))
        (d / "fernet").mkdir()
        (d / "credential").mkdir()
        manage = [str(VENV / "bin" / "keystone-manage"), "--config-file", str(conf)]
        for args in (["db_sync"], ["fernet_setup", "--keystone-user", "root",
                                   "--keystone-group", "root"],
                     ["credential_setup", "--keystone-user", "root", "--keystone-group", "root"],
                     ["bootstrap", "--bootstrap-password", "secret", "--bootstrap-region-id",
                      "RegionOne", "--bootstrap-public-url", self.url,
                      "--bootstrap-internal-url", self.url, "--bootstrap-admin-url", self.url]):
            subprocess.run(manage + args, check=True, capture_output=True, timeout=300)
        self.proc = _start([str(PYTHON), str(SERVERS), "keystone", str(self.port), str(conf)],
                           d / "keystone-server.log", self.url, "keystone")
        self.http = httpx.Client(base_url=self.url, timeout=60)
        self.admin = self.token("admin", "secret", project="admin")

    def token(self, user: str, password: str, project: str | None = None,
              system: bool = False) -> str:
        scope = {"system": {"all": True}} if system else {
            "project": {"name": project, "domain": {"id": "default"}}}
        r = self.http.post("/auth/tokens", json={"auth": {"identity": {
            "methods": ["password"], "password": {"user": {
                "name": user, "domain": {"id": "default"}, "password": password}}},
            "scope": scope}})
        assert r.status_code == 201, r.text
        return r.headers["x-subject-token"]

    def _post(self, path: str, body: dict) -> dict:
        r = self.http.post(path, json=body, headers={"x-auth-token": self.admin})
        assert r.status_code == 201, r.text
        return r.json()

    def role_id(self, name: str) -> str:
        r = self.http.get("/roles", params={"name": name}, headers={"x-auth-token": self.admin})
        found = r.json()["roles"]
        if found:
            return found[0]["id"]
        return self._post("/roles", {"role": {"name": name}})["role"]["id"]

    def user_with_role(self, user: str, project: str, role: str) -> str:
        pid = self._post("/projects", {"project": {"name": project,
                                                    "domain_id": "default"}})["project"]["id"]
        uid = self._post("/users", {"user": {"name": user, "password": "pw",
                                             "domain_id": "default"}})["user"]["id"]
        r = self.http.put(f"/projects/{pid}/users/{uid}/roles/{self.role_id(role)}",
                          headers={"x-auth-token": self.admin})
        assert r.status_code == 204, r.text
        return pid

    def stop(self) -> None:
        self.http.close()
        stop_process(self.proc)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    assert PYTHON.exists(), f"{PYTHON} missing: run hack/install-keystone.sh"
    d = tmp_path_factory.mktemp("keystone")
    keystone = Keystone(d)
    procs = []
    try:
        port = free_port()
        placement = f"http://127.0.0.1:{port}"
        procs.append(_start([sys.executable, "-m", "kova.cli", "placement", "serve",
                             "--database-url", f"sqlite:///{d}/placement.db", "--port", str(port),
                             "--auth-strategy", "keystone", "--log-level", "warning"],
                            d / "placement.log", placement, "placement"))
        proxy_port = free_port()
        proxy = f"http://127.0.0.1:{proxy_port}"
        procs.append(_start([str(PYTHON), str(SERVERS), "proxy", str(proxy_port),
                             keystone.url, placement], d / "proxy.log", proxy, "auth_token"))
        yield keystone, httpx.Client(base_url=proxy, timeout=60, headers={
            "accept": "application/json", "openstack-api-version": "placement latest"})
    finally:
        for proc in procs:
            stop_process(proc)
        keystone.stop()


def test_no_or_bad_token_is_401_even_with_forged_headers(cloud):
    _keystone, c = cloud
    assert c.get("/").status_code == 200
    assert c.get("/resource_providers").status_code == 401
    forged = {"x-identity-status": "Confirmed", "x-user-id": "me", "x-roles": "admin",
              "x-project-id": "p"}
    assert c.get("/resource_providers", headers=forged).status_code == 401
    assert c.get("/resource_providers", headers={"x-auth-token": "bogus"}).status_code == 401


def test_roles_from_keystone_decide(cloud):
    keystone, c = cloud
    admin = {"x-auth-token": keystone.admin}
    assert c.get("/resource_providers", headers=admin).status_code == 200
    r = c.post("/resource_providers", json={"name": "behind-keystone"}, headers=admin)
    assert r.status_code == 200, r.text
    demo = keystone.user_with_role("reader1", "demo", "reader")
    reader = {"x-auth-token": keystone.token("reader1", "pw", project="demo")}
    assert c.get(f"/usages?project_id={demo}", headers=reader).status_code == 200
    assert c.get("/usages?project_id=someone-else", headers=reader).status_code == 403
    r = c.post("/resource_providers", json={"name": "nope"}, headers=reader)
    assert r.status_code == 403
    assert "placement:resource_providers:create" in r.json()["errors"][0]["detail"]
    keystone.user_with_role("nova", "service", "service")
    service = {"x-auth-token": keystone.token("nova", "pw", project="service")}
    r = c.post("/reshaper", json={"inventories": {}, "allocations": {}}, headers=service)
    assert r.status_code == 400  # past the policy (service role), a bad body
    system_admin = {"x-auth-token": keystone.token("admin", "secret", system=True)}
    assert c.get("/resource_providers", headers=system_admin).status_code == 403
