"""An image author's attacks on a hypervisor host, each with the refusal it
must now get.

Each probe is an Image a user could write (or the API request itself), and an
Instance booting from it on an agent with the production defaults for image
sources (no network exempted from the loopback / link-local rule, the image
directory confined):

* a qcow2 whose external data file is a host file;
* a qcow2 whose backing file is a ``json:`` pseudo-file opening a host file;
* a hostPath to ``/proc/self/environ`` (the agent's credentials);
* a URL to the cloud metadata address (169.254.169.254) and one to loopback;
* a URL with credentials and a signed query string (they must appear in no
  status, Event or log line);
* a plain ``http://`` URL without a sha256 (refused at admission, naming the
  field).

Every Instance ends with ``Built=False`` and the Image's ``Available=False``,
both reason ``ImageInvalid``; the host files are untouched and nothing enters
the cache.  Real components: the kube-apiserver and the compute agent
in-process on libvirt's ``test:///default``.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import time
from pathlib import Path

import pytest
from kubernetes.client import ApiException

from kova.crds import names as contract
from tests.fixtures.agents import G, V, wait_for
from tests.reliability.record import record

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

SECRET = b"host secret\n"


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def _available(obj: dict) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or ()
                 if c["type"] == "Available"), {})


def test_image_author_probes_end_in_image_invalid(harness, tmp_path, caplog):
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    host_file = tmp_path / "host-secret"
    host_file.write_bytes(SECRET)
    data_file = images / "data-file.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-o",
              f"data_file={tmp_path / 'scratch.raw'},data_file_raw=on", str(data_file), "64M")
    _qemu_img("amend", "-q", "-f", "qcow2", "-o", f"data_file={host_file}", str(data_file))
    json_backing = images / "json-backing.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-u", "-b",
              f'json:{{"driver":"raw","file":{{"driver":"file","filename":"{host_file}"}}}}',
              str(json_backing), "64M")
    s = harness.host
    probes = {
        f"data-file-{s}": ({"hostPath": str(data_file)}, "external data file"),
        f"json-backing-{s}": ({"hostPath": str(json_backing)}, "backing file"),
        f"environ-{s}": ({"hostPath": "/proc/self/environ"}, "outside the image directories"),
        f"metadata-{s}": ({"url": "http://169.254.169.254/latest/meta-data/"},
                          "169.254.0.0/16"),
        f"loopback-{s}": ({"url": "https://127.0.0.1:6443/api"}, "127.0.0.0/8"),
        f"creds-{s}": ({"url": "https://alice:hunter2@127.0.0.1:1/x.qcow2?sig=s3cr3t"},
                       "127.0.0.0/8"),
    }
    for name, (source, _) in probes.items():
        # The crafted files carry their true checksum (their author computed
        # it); the URLs are refused before a checksum could matter.
        path = source.get("hostPath", "")
        sha = hashlib.sha256(Path(path).read_bytes()).hexdigest() if path.startswith(
            str(images)) else "a" * 64
        harness.custom.create_cluster_custom_object(G, V, "images", {
            "apiVersion": contract.API_VERSION, "kind": "Image", "metadata": {"name": name},
            "spec": {"source": source, "format": "qcow2", "sha256": sha}})
        harness.images.append(name)

    # Plain http:// without a checksum: refused by the API server.
    with pytest.raises(ApiException) as err:
        harness.custom.create_cluster_custom_object(G, V, "images", {
            "apiVersion": contract.API_VERSION, "kind": "Image",
            "metadata": {"name": f"plain-http-{s}"},
            "spec": {"source": {"url": "http://images.example/x.qcow2"}}})
    assert err.value.status == 422
    assert "spec.sha256: Required value" in err.value.body, err.value.body

    caplog.set_level(logging.INFO)
    t0 = time.monotonic()
    harness.agent(image_url_allowed_networks=())
    for i, name in enumerate(probes):
        harness.instance(f"vm{i}", name)
    outcomes = {}
    for i, (name, (_, why)) in enumerate(probes.items()):
        built = harness.wait_cond(f"vm{i}", "Built", "False", timeout=60)
        assert built["message"].startswith(contract.ERROR_IMAGE_INVALID + ":"), built
        assert why in built["message"], (name, built)
        img = wait_for(lambda n=name: (o := harness.custom.get_cluster_custom_object(
            G, V, "images", n)) and _available(o).get("status") == "False" and o, 15,
            what=f"{name} Available=False")
        assert _available(img)["reason"] == contract.ERROR_IMAGE_INVALID
        assert not img["status"].get("cachedOn")
        outcomes[name] = built["message"]
    elapsed = time.monotonic() - t0

    assert host_file.read_bytes() == SECRET
    assert not list((tmp_path / "instances" / "_base").glob("*.qcow2"))
    # No credential anywhere a user or an operator looks.
    creds = f"creds-{s}"
    ready = harness.cond(f"vm{list(probes).index(creds)}", "Ready")
    events = [e.message for e in harness.core.list_namespaced_event(harness.ns).items] + [
        e.message for e in harness.core.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={creds}").items]
    image_status = str(harness.custom.get_cluster_custom_object(G, V, "images", creds)["status"])
    for text in (outcomes[creds], ready["message"], image_status, caplog.text, *events):
        assert "hunter2" not in text and "s3cr3t" not in text, text
    assert "https://***@127.0.0.1:1/x.qcow2?<redacted>" in outcomes[creds]

    record(fault="Malicious images",
           injected="6 Images an image author could write (qcow2 data file and json: backing "
                    "file on a host file, hostPath /proc/self/environ, URLs to the metadata "
                    "address, to loopback and with credentials) and a plain-http Image "
                    "without sha256",
           times=len(probes) + 1, lost=0, duplicated=0, overcommitted=None,
           result=f"admission refused the plain-http Image naming spec.sha256; every other "
                  f"Instance Built=False ImageInvalid and its Image Available=False within "
                  f"{elapsed:.1f} s; the host file unread, nothing cached, no credential in "
                  f"status, Events or logs",
           figures={"probes": len(probes) + 1, "all_refused_s": round(elapsed, 1)})
