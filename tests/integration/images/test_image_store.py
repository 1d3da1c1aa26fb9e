"""Kova's image store (``kova images serve`` as a process, over HTTPS) with
the real kube-apiserver (TokenReview, SubjectAccessReview, the Image it
creates), ``kubectl kova image upload`` (the plugin's command), and the
compute agent (in-process, libvirt's test:///default) booting an uploaded
Image with its own token."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from kova.crds import names as contract
from kova.dev.pki import issue_server_cert
from kova.plugin.main import main as plugin
from tests.fixtures.agents import G, V
from tests.helpers import free_port, stop_process, wait_for

MAX_BYTES = 48 << 20


class Store:
    def __init__(self, proc, url: str, ca: Path, root: Path) -> None:
        self.proc, self.url, self.ca, self.root = proc, url, ca, root

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                      if p.is_file())

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(
            cafile=str(self.ca)), timeout=30)


@pytest.fixture
def store(kubeconfig, kova_crds, k8s_client, tmp_path):
    certs = issue_server_cert(tmp_path / "pki", "images", ["127.0.0.1"],
                              ca_common_name="kova-test-store-ca")
    port = free_port()
    root = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kova.cli", "images", "serve", "--dir", str(root),
         "--kubeconfig", str(kubeconfig), "--bind-address", "127.0.0.1", "--port", str(port),
         "--tls-cert-file", str(certs["crt"]), "--tls-key-file", str(certs["key"]),
         "--max-bytes", str(MAX_BYTES), "--log-format", "text"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    s = Store(proc, f"https://127.0.0.1:{port}", certs["ca_crt"], root)
    try:
        with s.client() as c:
            wait_for(lambda: _ok(c), 30, what="image store up")
        yield s
    finally:
        stop_process(proc)
        _release(k8s_client, s.url)


def _release(k8s_client, url: str) -> None:
    """What an administrator does when the store is gone: its finalizer
    dropped from the objects it made, so that they can be deleted."""
    from kubernetes import client

    custom = client.CustomObjectsApi(k8s_client)
    gone = {"metadata": {"finalizers": None}}
    for obj in custom.list_cluster_custom_object(G, V, contract.IMAGES)["items"] + \
            custom.list_cluster_custom_object(G, V, contract.TENANT_IMAGES)["items"]:
        md = obj["metadata"]
        if not ((obj["spec"].get("source") or {}).get("url") or "").startswith(url + "/"):
            continue
        try:
            if md.get("namespace"):
                custom.patch_namespaced_custom_object(G, V, md["namespace"],
                                                      contract.TENANT_IMAGES, md["name"], gone)
            else:
                custom.patch_cluster_custom_object(G, V, contract.IMAGES, md["name"], gone)
        except client.ApiException:
            pass


def _ok(c: httpx.Client) -> bool:
    try:
        return c.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def images_created(k8s_client):
    from kubernetes import client

    custom = client.CustomObjectsApi(k8s_client)
    made: list[str] = []
    yield made
    for name in made:
        try:
            custom.delete_cluster_custom_object(G, V, "images", name)
        except client.ApiException:
            pass


def _image(k8s_client, name: str) -> dict | None:
    from kubernetes import client

    try:
        return client.CustomObjectsApi(k8s_client).get_cluster_custom_object(G, V, "images",
                                                                             name)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _admin_token(kubeconfig: Path) -> str:
    return json.loads(Path(kubeconfig).read_text())["users"][0]["user"]["token"]


def _upload(kubeconfig, store: Store, path: Path, name: str, *extra: str):
    return CliRunner().invoke(plugin, ["image", "upload", str(path), "--name", name,
                                       "--store", store.url, "--store-ca-file", str(store.ca),
                                       "--kubeconfig", str(kubeconfig), *extra])


def _qcow2(path: Path, size: str = "32M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def test_upload_raw_and_vmdk_become_available_images(kubeconfig, store, k8s_client,
                                                     images_created, tmp_path):
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\x01" * (3 << 20))
    name = f"raw-{tmp_path.name[-8:].lower().strip('_-')}".replace("_", "-")
    images_created.append(name)
    res = _upload(kubeconfig, store, raw, name)
    assert res.exit_code == 0, res.output
    assert "uploading " + name in res.output and "100.0%" in res.output
    img = _image(k8s_client, name)
    sha = hashlib.sha256(raw.read_bytes()).hexdigest()
    assert img["spec"] == {**img["spec"], "format": "raw", "sha256": sha,
                           "source": {"url": f"{store.url}/v1/images/{name}"}}
    st = img["status"]
    assert st["sizeBytes"] == 3 << 20 and st["virtualSizeBytes"] == 3 << 20
    assert st["sha256"] == sha
    cond = next(c for c in st["conditions"] if c["type"] == "Available")
    assert cond["status"] == "True" and cond["reason"] == "Stored"

    # A vmdk is converted to a standalone qcow2.
    vmdk = tmp_path / "disk.vmdk"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "vmdk",
                    str(_qcow2(tmp_path / "src.qcow2")), str(vmdk)], check=True)
    vname = name.replace("raw-", "vmdk-")
    images_created.append(vname)
    res = _upload(kubeconfig, store, vmdk, vname)
    assert res.exit_code == 0, res.output
    assert "converted from vmdk" in res.output, res.output
    img = _image(k8s_client, vname)
    assert img["spec"]["format"] == "qcow2" and img["status"]["virtualSizeBytes"] == 32 << 20
    stored = store.root / vname / "image.qcow2"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == img["spec"]["sha256"]

    # Range requests and the checksum header, with a token the API server knows.
    token = _admin_token(kubeconfig)
    with store.client() as c:
        part = c.get(f"/v1/images/{name}", headers={"Authorization": f"Bearer {token}",
                                                    "Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == b"\x01" * 100
        assert part.headers["X-Image-Sha256"] == sha
        # The same name again: refused, the stored file stays.
        again = c.put(f"/v1/images/{name}", params={"format": "raw"}, content=b"x" * 512,
                      headers={"Authorization": f"Bearer {token}"})
        assert again.status_code == 409 and again.json()["reason"] == "AlreadyExists"


def test_an_upload_without_length_in_uneven_pieces_is_stored_whole(kubeconfig, store,
                                                                   k8s_client, images_created,
                                                                   tmp_path):
    """Chunked transfer encoding (no Content-Length), pieces of every size: the
    store hashes and writes each piece as it arrives, the file and its sha256
    are those of every byte in order; over the size limit, refused in the
    middle of the body and nothing stays."""
    import os

    data = os.urandom((5 << 20) + 4321)

    def pieces(blob: bytes):
        i, n = 0, 1
        while i < len(blob):
            n = n * 7 % 700_001 + 1
            yield blob[i:i + n]
            i += n

    name = f"chunked-{tmp_path.name[-8:].lower().strip('_-')}".replace("_", "-")
    images_created.append(name)
    headers = {"Authorization": f"Bearer {_admin_token(kubeconfig)}"}
    with store.client() as c:
        got = c.put(f"/v1/images/{name}", params={"format": "raw"}, content=pieces(data),
                    headers=headers)
        assert got.status_code == 201, got.text
        assert got.json()["sha256"] == hashlib.sha256(data).hexdigest()
        assert (store.root / name / "image.raw").read_bytes() == data
        over = c.put(f"/v1/images/{name}-over", params={"format": "raw"},
                     content=pieces(b"\0" * (MAX_BYTES + (1 << 20))), headers=headers)
    assert over.status_code == 413 and over.json()["reason"] == "TooLarge", over.text
    assert _image(k8s_client, f"{name}-over") is None
    assert store.files() == [f"{name}/image.raw", f"{name}/meta.json"], store.files()


@pytest.mark.parametrize("case", ["data-file", "backing-file", "too-large", "not-qcow2"])
def test_malicious_corrupt_and_oversized_uploads_are_refused(kubeconfig, store, k8s_client,
                                                            tmp_path, case):
    path = tmp_path / f"{case}.qcow2"
    if case == "data-file":
        _qemu = ["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                 f"data_file={tmp_path / 'scratch.raw'},data_file_raw=on", str(path), "16M"]
        subprocess.run(_qemu, check=True)
        subprocess.run(["qemu-img", "amend", "-q", "-f", "qcow2", "-o",
                        "data_file=/etc/hostname", str(path)], check=True)
        want = (422, "ImageInvalid", "external data file")
    elif case == "backing-file":
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-u", "-b",
                        "/etc/hostname", str(path), "16M"], check=True)
        want = (422, "ImageInvalid", "backing file")
    elif case == "too-large":
        path = tmp_path / "big.raw"
        with open(path, "wb") as fh:
            fh.truncate(MAX_BYTES + 1)
        want = (413, "TooLarge", str(MAX_BYTES))
    else:
        path.write_bytes(b"garbage" * 1000)
        want = (422, "ImageInvalid", "declared qcow2 but is not a qcow2 image")
    name = f"bad-{case}-{tmp_path.name[-6:]}".lower().replace("_", "-").strip("-")
    res = _upload(kubeconfig, store, path, name)
    assert res.exit_code == 1, res.output
    status, reason, text = want
    assert f"refused ({status} {reason})" in res.output and text in res.output, res.output
    assert _image(k8s_client, name) is None
    assert store.files() == [], store.files()


def test_interrupted_upload_leaves_nothing(kubeconfig, store, k8s_client, tmp_path):
    token = _admin_token(kubeconfig)
    port = int(store.url.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=str(store.ca))
    raw = socket.create_connection(("127.0.0.1", port))
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall((f"PUT /v1/images/cut-short?format=raw HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Bearer {token}\r\nContent-Length: {8 << 20}\r\n\r\n"
                      ).encode() + b"\0" * (1 << 20))
        time.sleep(0.5)
    wait_for(lambda: not any((store.root / ".uploads").iterdir()), 10,
             what="the partial upload removed")
    assert store.files() == [] and _image(k8s_client, "cut-short") is None


def test_tokens_are_reviewed_and_access_is_checked(kubeconfig, store, k8s_client, namespace):
    from kubernetes import client

    core = client.CoreV1Api(k8s_client)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="no-images")))
    token = core.create_namespaced_service_account_token(
        "no-images", namespace, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))).status.token
    with store.client() as c:
        assert c.get("/v1/images/any").status_code == 401
        assert c.get("/v1/images/any", headers={"Authorization": "Bearer nope"}
                     ).status_code == 401
        for method in ("GET", "PUT", "DELETE"):
            r = c.request(method, "/v1/images/any", headers={"Authorization": f"Bearer {token}"},
                          content=b"" if method == "PUT" else None)
            assert r.status_code == 403, (method, r.text)
            assert r.json()["reason"] == "Forbidden" and "no-images" in r.json()["message"]


def test_the_agent_boots_an_uploaded_image_with_its_own_token(kubeconfig, store, harness,
                                                              small_image, images_created):
    name = f"up-{harness.host}"
    images_created.append(name)
    res = _upload(kubeconfig, store, small_image, name)
    assert res.exit_code == 0, res.output
    harness.agent(image_ca_file=str(store.ca), image_store_url=store.url)
    harness.instance("vm1", name)
    harness.wait_phase("vm1", "Running", timeout=30)
    img = wait_for(lambda: (o := _image(harness.custom.api_client, name)) and
                   (o.get("status") or {}).get("cachedOn") and o, 15, what="cachedOn")
    assert img["status"]["cachedOn"] == [harness.host]
    assert contract.ERROR_IMAGE_INVALID not in json.dumps(img["status"])
