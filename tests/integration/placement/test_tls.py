"""Placement over TLS: ``kova placement serve --tls-cert-file/--tls-key-file``
with a certificate from ``kova.dev.pki``; the operator's and the agent's
Placement clients verify it with ``--placement-ca-file``; clients that do not
trust the CA, and plain HTTP, get nothing (and send no token in clear text
that the server accepts)."""

from __future__ import annotations

import asyncio
import secrets
import ssl
import subprocess
import sys
import uuid

import aiohttp
import httpx
import pytest

from kova.dev.pki import issue_server_cert
from tests.helpers import ROOT, free_port, stop_process, wait_for
from tests.reliability.record import record

pytestmark = pytest.mark.reliability

V = {"OpenStack-API-Version": "placement 1.39"}


@pytest.fixture(scope="module")
def tls_placement(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert = issue_server_cert(d / "pki", "placement", ["127.0.0.1", "localhost"])
    token = secrets.token_hex(16)
    (d / "tokens").write_text(f"admin {token}\n")
    port = free_port()
    log = open(d / "placement.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kova.cli", "placement", "serve", "--database-url",
         f"sqlite:///{d}/p.db", "--port", str(port), "--workers", "2", "--token-file",
         str(d / "tokens"), "--tls-cert-file", str(cert["crt"]), "--tls-key-file",
         str(cert["key"])], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    ctx = ssl.create_default_context(cafile=str(cert["ca_crt"]))

    def up():
        assert proc.poll() is None, (d / "placement.log").read_text()
        try:
            return httpx.get(f"https://127.0.0.1:{port}/healthz", verify=ctx).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 60, 0.2, "placement over TLS")
    yield {"url": f"https://127.0.0.1:{port}", "port": port, "ca": str(cert["ca_crt"]),
           "token": token, "ctx": ctx, "dir": d}
    stop_process(proc, 10)
    log.close()


def _untrusted_clients_refused(p, url, token) -> int:
    """Clients without the CA, with another CA, with the wrong host name,
    and plain HTTP: each refused; how many."""
    refused = 0
    # A client that does not trust the CA refuses the server (and never sends
    # its token): the system trust store, and another CA of kova.dev.pki.
    other = issue_server_cert(p["dir"] / "other-pki", "x", ["127.0.0.1"])
    for verify in (True, ssl.create_default_context(cafile=str(other["ca_crt"]))):
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url + "/resource_providers", verify=verify,
                      headers={**V, "X-Auth-Token": token})
        refused += 1
    # The name must match too: the certificate is for 127.0.0.1 and localhost.
    ctx = ssl.create_default_context(cafile=p["ca"])
    with pytest.raises(httpx.ConnectError):
        with httpx.Client(verify=ctx) as c:
            c.get(f"https://127.0.0.2:{p['port']}/", headers=V)
    refused += 1
    # Plain HTTP on the TLS port gets no answer from the API.
    with pytest.raises(httpx.TransportError):
        httpx.post(f"http://127.0.0.1:{p['port']}/resource_providers",
                   json={"name": "plain"}, headers={**V, "X-Auth-Token": token})
    refused += 1

    return refused


def _component_clients_with_ca(p, url, token) -> int:
    """The operator's and the agent's clients work with --placement-ca-file;
    the operator's without it refuses the server (returns 1, the refusal)."""
    refused = 0
    # The operator's (async) and the agent's Placement clients with --placement-ca-file.
    from kova.placement_client import PlacementClient as OperatorPlacement
    from kova.placement_client import SyncPlacementClient as AgentPlacement

    agent = AgentPlacement(url, token, ca_file=p["ca"])
    try:
        rp = agent.ensure_provider("tls-host", str(uuid.uuid4()))
        agent.set_inventories(rp["uuid"], {"VCPU": {"total": 4}})
    finally:
        agent.close()

    async def operator_side():
        op = OperatorPlacement(url, token, ca_file=p["ca"])
        try:
            return await op.resource_providers([("resources", "VCPU:1")])
        finally:
            await op.close()

    found = asyncio.run(operator_side())
    assert [r["name"] for r in found] == ["tls-host"]
    # Without the CA the operator's client refuses the server.
    async def untrusting():
        op = OperatorPlacement(url, token)
        try:
            await op.resource_providers()
        finally:
            await op.close()

    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        asyncio.run(untrusting())
    refused += 1
    return refused


def test_placement_serves_https_and_clients_verify_it(tls_placement):
    p = tls_placement
    url, token = p["url"], p["token"]
    with httpx.Client(base_url=url, verify=p["ctx"], headers=V) as c:
        r = c.get("/")
        assert r.status_code == 200 and r.json()["versions"]
        r = c.post("/resource_providers", json={"name": "tls-rp"},
                   headers={"X-Auth-Token": token})
        assert r.status_code == 200, r.text
        assert c.get("/resource_providers").status_code == 401  # auth still applies

    refused = _untrusted_clients_refused(p, url, token)
    refused += _component_clients_with_ca(p, url, token)
    with httpx.Client(base_url=url, verify=p["ctx"], headers={**V, "X-Auth-Token": token}) as c:
        names = sorted(r["name"] for r in c.get("/resource_providers").json()[
            "resource_providers"])
    assert names == ["tls-host", "tls-rp"]  # the plain-HTTP POST created nothing
    record(fault="Placement TLS",
           injected="`kova placement serve --workers 2 --tls-cert-file/--tls-key-file` (cert "
                    "from kova.dev.pki); clients without the CA, with another CA, with the "
                    "wrong host name, plain HTTP, and the operator's client without "
                    "--placement-ca-file",
           times=refused, lost=0, duplicated=0, overcommitted=None,
           result=f"{refused} of {refused} untrusted or plain connections refused, nothing "
                  "written by them (lost: 0 requests let through); the operator's and the "
                  "agent's clients with --placement-ca-file work",
           figures={"refused": refused})


def test_tls_flags_go_together(tmp_path):
    cert = issue_server_cert(tmp_path / "pki", "placement", ["127.0.0.1"])
    proc = subprocess.run(
        [sys.executable, "-m", "kova.cli", "placement", "serve", "--no-auth",
         "--database-url", f"sqlite:///{tmp_path}/p.db", "--tls-cert-file", str(cert["crt"])],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and "--tls-key-file" in proc.stderr, proc.stderr
