"""Images from https:// URLs, through the public interfaces: Image and
Instance objects on the real API server, the agent in-process with libvirt's
test:///default driver, and a real HTTPS server (tests.helpers.TLSFileServer:
Python's http.server behind ssl) serving Kova's cached test image and a
corrupted copy with certificates from test CAs.  The agent trusts the test CA
through ``image_ca_file`` (``kova agent run --image-ca-file``)."""

from __future__ import annotations

import hashlib
import json
import time

from kova.agents.virt.images import backing_file
from kova.crds import names as contract
from tests.fixtures.agents import domain_by_uuid as _domain
from tests.fixtures.agents import wait_for
from tests.helpers import stop_process


def _events(harness, name: str) -> list:
    return harness.core.list_namespaced_event(
        harness.ns, field_selector=f"involvedObject.name={name}").items


def test_https_image_is_fetched_over_tls_verified_cached_and_shared(
        harness, https_images, libvirt_conn, tmp_path):
    agent = harness.agent(image_ca_file=str(https_images.ca))
    url = https_images.url()
    img = harness.image("https-img", url=url, sha256=https_images.sha256)
    # The API server admits the https:// URL as it is.
    assert img["spec"]["source"] == {"url": url}

    uid = harness.instance("vm1", "https-img")["metadata"]["uid"]
    got = harness.wait_phase("vm1", "Running", timeout=30)
    assert harness.cond("vm1", "Built")["status"] == "True"
    assert _domain(libvirt_conn, uid).isActive()
    # Downloaded once, over TLS; cached under its sha256, verified.
    assert [(path, version.startswith("TLSv1.")) for path, version in
            https_images.good.requests] == [("/kova-test.qcow2", True)]
    cached = tmp_path / "instances" / "_base" / f"{https_images.sha256}.qcow2"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == https_images.sha256
    meta = json.loads(cached.with_name(cached.name + ".json").read_text())
    assert meta["source"] == url and meta["sha256"] == https_images.sha256
    # The Instance's overlay is backed by the cached copy.
    assert backing_file(tmp_path / "instances" / uid / "disk.qcow2") == cached
    assert got["status"]["powerState"] == "Running"

    # A second Instance of the same Image: no second download.
    harness.instance("vm2", "https-img")
    harness.wait_phase("vm2", "Running", timeout=30)
    assert len(https_images.good.requests) == 1
    assert agent.metrics.image_cache_misses._value.get() == 1
    assert agent.metrics.image_cache_hits._value.get() == 1
    assert agent.metrics.image_bytes._value.get() == cached.stat().st_size


def test_untrusted_https_server_is_a_clear_condition_without_retry(
        harness, https_images, libvirt_conn, tmp_path):
    """The server's certificate comes from a CA the agent does not trust (it
    trusts the system store and the test CA): the build fails once with a
    condition and a Warning Event that name the TLS failure; the agent does not
    retry on its own (the operator reschedules, with its back-off) and goes on
    building other Instances."""
    agent = harness.agent(image_ca_file=str(https_images.ca), resync_seconds=1.0)
    server = https_images.untrusted
    harness.image("untrusted", url=https_images.url(server=server), sha256=https_images.sha256)
    uid = harness.instance("bad1", "untrusted")["metadata"]["uid"]

    built = harness.wait_cond("bad1", "Built", "False", timeout=30)
    assert built["reason"] == contract.REASON_BUILD_FAILED
    msg = built["message"]
    assert msg.startswith(contract.ERROR_IMAGE_DOWNLOAD + ": image untrusted: "), msg
    assert f"TLS certificate verification failed for 127.0.0.1:{server.port}" in msg, msg
    assert "unable to get local issuer certificate" in msg, msg
    assert f"the agent trusts the system trust store and {https_images.ca}" in msg, msg
    ready = harness.cond("bad1", "Ready")
    assert ready["status"] == "False" and ready["reason"] == contract.ERROR_IMAGE_DOWNLOAD
    warning = wait_for(lambda: [e for e in _events(harness, "bad1")
                                if e.type == "Warning" and e.reason == contract.REASON_BUILD_FAILED],
                       10, what="BuildFailed event")
    assert "TLS certificate verification failed" in warning[0].message
    # Nothing was requested or left behind.
    assert server.requests == []
    assert _domain(libvirt_conn, uid) is None
    assert not (tmp_path / "instances" / uid).exists()
    assert not list((tmp_path / "instances" / "_base").glob("*.qcow2"))
    assert contract.FINALIZER_AGENT not in (harness.get("bad1")["metadata"].get("finalizers") or [])

    # No retry loop: several resyncs later still one failure, one handshake.
    time.sleep(3.5)
    assert agent.metrics.build_failures.labels(contract.ERROR_IMAGE_DOWNLOAD)._value.get() == 1
    assert len(server.handshake_errors) == 1, server.handshake_errors
    assert "unknown ca" in server.handshake_errors[0]

    # The agent carries on: an Image on the trusted server builds.
    harness.image("trusted", url=https_images.url(), sha256=https_images.sha256)
    harness.instance("ok1", "trusted")
    harness.wait_phase("ok1", "Running", timeout=30)


def test_corrupted_image_over_https_is_a_checksum_condition(
        harness, https_images, libvirt_conn, tmp_path):
    """The server (trusted) serves a copy with one byte changed under the
    Image's sha256: the existing ImageChecksumMismatch condition, nothing
    cached."""
    agent = harness.agent(image_ca_file=str(https_images.ca))
    harness.image("corrupt", url=https_images.url(https_images.CORRUPT),
                  sha256=https_images.sha256)
    uid = harness.instance("bad2", "corrupt")["metadata"]["uid"]
    built = harness.wait_cond("bad2", "Built", "False", timeout=30)
    assert built["reason"] == contract.REASON_BUILD_FAILED
    assert built["message"].startswith(contract.ERROR_IMAGE_CHECKSUM + ": "), built["message"]
    assert f"expected {https_images.sha256}" in built["message"]
    assert harness.cond("bad2", "Ready")["reason"] == contract.ERROR_IMAGE_CHECKSUM
    # It was downloaded over TLS (once) and then refused.
    assert [p for p, _ in https_images.good.requests] == [f"/{https_images.CORRUPT}"]
    base = tmp_path / "instances" / "_base"
    assert not list(base.glob("*.qcow2")) and not list(base.glob(".*.part"))
    assert _domain(libvirt_conn, uid) is None
    assert agent.metrics.build_failures.labels(contract.ERROR_IMAGE_CHECKSUM)._value.get() == 1


def test_agent_command_takes_the_ca_file_from_its_environment(harness, https_images, tmp_path):
    """`kova agent run` as the Helm chart starts it: the CA bundle comes from
    KOVA_AGENT_IMAGE_CA_FILE.  (A real boot from an https:// image:
    test_boot_e2e.test_boot_from_an_https_image_with_a_private_ca, KOVA_SLOW=1.)"""
    import os
    import subprocess
    import sys

    log = open(tmp_path / "agent.log", "a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kova.cli", "agent", "run", "--libvirt-uri", "test:///default",
         "--instance-dir", str(tmp_path / "instances"), "--kubeconfig", str(harness.kubeconfig),
         "--metrics-port", "-1", "--resync-seconds", "2"],
        stdout=log, stderr=subprocess.STDOUT,
        env=dict(os.environ, KOVA_HOST=harness.host, PYTHONUNBUFFERED="1",
                 KOVA_AGENT_IMAGE_CA_FILE=str(https_images.ca),
                 # the test's image server is on loopback, refused by default
                 KOVA_AGENT_IMAGE_URL_ALLOWED_NETWORKS="127.0.0.0/8"))
    try:
        harness.image("https-cli", url=https_images.url(), sha256=https_images.sha256)
        harness.instance("cli1", "https-cli")
        harness.wait_phase("cli1", "Running", timeout=60)
        assert [p for p, _ in https_images.good.requests] == ["/kova-test.qcow2"]
        harness.delete("cli1")
        wait_for(lambda: harness.get("cli1") is None, 30, what="cli1 deleted")
    finally:
        stop_process(proc)
        log.close()
        print((tmp_path / "agent.log").read_text()[-3000:])
