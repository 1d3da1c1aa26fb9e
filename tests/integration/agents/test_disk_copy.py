"""Agent-to-agent disk copy (the transport of a cold migration) against a
real agent's stream endpoint over mutual TLS: a flattened overlay arrives
byte for byte with its sha256 checked; a wrong checksum, a client
certificate the agent does not accept, and an Instance whose domain is
defined there are refused and leave nothing behind.  The migration
certificate may use the disk and variable-store routes only, the API
component's every route but those.  A UEFI guest's variable store arrives
the same way, checked the same way."""

from __future__ import annotations

import ssl
import subprocess
import uuid

import httpx
import pytest

from kova.agents.instance import disk_copy
from kova.agents.virt.domain import build_domain_xml
from kova.dev.access import ensure_stream_pki
from kova.dev.pki import issue_cert
from tests.fixtures.agents import wait_for

MOVER = "kova-agent-mover"


def _client_tls(pki, cert: dict) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_crt))
    ctx.load_cert_chain(str(cert["crt"]), str(cert["key"]))
    ctx.check_hostname = False  # the agent's certificate names kova-agent, not 127.0.0.1
    return ctx


@pytest.fixture
def endpoint(harness, tmp_path):
    pki = ensure_stream_pki(tmp_path / "pki")
    ca_key = pki.ca_crt.with_name("kova-stream-ca.key")
    allowed = issue_cert(pki.ca_crt, ca_key, "mover", common_name=MOVER, server=False,
                         client=True, out_dir=tmp_path / "pki")
    other = issue_cert(pki.ca_crt, ca_key, "other", common_name="someone-else", server=False,
                       client=True, out_dir=tmp_path / "pki")
    agent = harness.agent(stream_cert_file=str(pki.agent_crt), stream_key_file=str(pki.agent_key),
                          stream_client_ca_file=str(pki.ca_crt), stream_port=0,
                          stream_bind="127.0.0.1",
                          stream_allowed_clients=("kova-api", MOVER))
    ep = wait_for(lambda: ((harness.host_obj() or {}).get("status") or {}).get("streamEndpoint"),
                  30, what="streamEndpoint")
    return agent, ep, _client_tls(pki, allowed), _client_tls(pki, other), pki


def _overlay(base, path):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                    str(path), "1G"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 1M 64k", str(path)], check=True,
                   capture_output=True)
    return path


def test_disk_arrives_checked_and_refusals_leave_nothing(harness, endpoint, small_image,
                                                         tmp_path, libvirt_conn):
    agent, ep, tls, stranger, pki = endpoint
    src = tmp_path / "src"
    src.mkdir()
    flat = disk_copy.flatten(_overlay(small_image, src / "disk.qcow2"), src / "flat.qcow2")
    info = subprocess.run(["qemu-img", "info", "--output=json", str(flat)],
                          capture_output=True, text=True, check=True).stdout
    assert "backing-filename" not in info  # standalone: no path of the source host in it

    uid = str(uuid.uuid4())
    got = disk_copy.send(flat, ep["address"], ep["port"], uid, tls)
    dest = tmp_path / "instances" / uid / "disk.qcow2"
    assert got.sha256 == disk_copy.sha256_of(flat) == disk_copy.sha256_of(dest)
    assert got.size == flat.stat().st_size
    check = subprocess.run(["qemu-img", "compare", str(src / "disk.qcow2"), str(dest)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr  # same guest-visible content

    # a wrong checksum: refused, nothing written
    bad_uid = str(uuid.uuid4())
    url = f"https://{ep['address']}:{ep['port']}/v1/domains/{bad_uid}/disk"
    resp = httpx.put(url, content=flat.read_bytes(), verify=tls,
                     headers={disk_copy.SHA256_HEADER: "0" * 64})
    assert resp.status_code == 400 and resp.json()["reason"] == "ChecksumMismatch", resp.text
    bad_dir = tmp_path / "instances" / bad_uid
    assert not (bad_dir / "disk.qcow2").exists()
    assert not (bad_dir / disk_copy.INCOMING).exists()
    resp = httpx.put(url, content=b"x", verify=tls)
    assert resp.status_code == 400 and resp.json()["reason"] == "ChecksumMissing"

    # a UEFI guest's variable store: its own route, the same checks
    store = src / "nvram.fd"
    store.write_bytes(bytes(range(256)) * 2048)
    got = disk_copy.send(store, ep["address"], ep["port"], uid, tls, part="nvram")
    assert got.sha256 == disk_copy.sha256_of(store) == disk_copy.sha256_of(
        dest.with_name("nvram.fd"))
    resp = httpx.put(f"https://{ep['address']}:{ep['port']}/v1/domains/{bad_uid}/nvram",
                     content=store.read_bytes(), verify=tls,
                     headers={disk_copy.SHA256_HEADER: "0" * 64})
    assert resp.status_code == 400 and resp.json()["reason"] == "ChecksumMismatch", resp.text
    assert not (bad_dir / "nvram.fd").exists()
    assert not (bad_dir / disk_copy.NVRAM_INCOMING).exists()

    # a client certificate of the right CA but a name the agent does not accept
    with pytest.raises(disk_copy.CopyError) as exc:
        disk_copy.send(flat, ep["address"], ep["port"], str(uuid.uuid4()), stranger)
    assert exc.value.status == 403

    # the two identities keep to their routes: the migration certificate
    # opens no console, log or power action; the API component's sends no disk
    base = f"https://{ep['address']}:{ep['port']}/v1/domains/{uid}"
    for method, route in (("GET", "log"), ("GET", "console"), ("GET", "vnc"),
                          ("PUT", "power/stop")):
        resp = httpx.request(method, f"{base}/{route}", verify=tls)
        assert resp.status_code == 403 and resp.json()["reason"] == "Forbidden", (route, resp)
    api = _client_tls(pki, {"crt": pki.api_crt, "key": pki.api_key})
    for part in ("disk", "nvram"):
        with pytest.raises(disk_copy.CopyError) as exc:
            disk_copy.send(flat, ep["address"], ep["port"], str(uuid.uuid4()), api, part=part)
        assert exc.value.status == 403
    resp = httpx.get(f"{base}/log", verify=api)  # its own routes still answer it
    assert resp.status_code != 403, resp.text
    assert httpx.get(f"https://{ep['address']}:{ep['port']}/healthz", verify=tls).is_success

    # an Instance whose domain is defined on this host keeps its disk
    defined = agent.ctx.driver.define(build_domain_xml(_spec(uid, dest, tmp_path)))
    before = disk_copy.sha256_of(dest)
    with pytest.raises(disk_copy.CopyError) as exc:
        disk_copy.send(src / "disk.qcow2", ep["address"], ep["port"], defined.uuid, tls)
    assert exc.value.status == 409 and exc.value.reason == "DomainExists"
    assert disk_copy.sha256_of(dest) == before
    agent.ctx.driver.undefine(defined.uuid)


def _spec(uid, disk, tmp_path):
    from kova.agents.virt.domain import DomainMetadata, DomainSpec

    return DomainSpec(meta=DomainMetadata(uid=uid, namespace="ns", name=f"copy-{uid[:8]}",
                                          host="elsewhere", image="img", generation=1),
                      vcpus=1, memory_mib=128, disk_path=str(disk),
                      console_log=str(tmp_path / "console.log"),
                      seed_path=str(tmp_path / "seed.iso"))
