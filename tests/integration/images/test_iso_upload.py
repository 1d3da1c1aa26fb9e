"""``kubectl kova image upload FILE --format iso``: an ISO 9660 image is
stored as is (format iso in the Image's spec and status) and served byte for
byte by Kova's image store (``kova images serve`` as a process, over HTTPS);
a file that is not an ISO 9660 image is refused by the plugin before it is
sent, and by the store when it is sent anyway."""

from __future__ import annotations

import hashlib
import io
import uuid

import pycdlib

from kova.crds import names as contract
from tests.helpers import wait_for
from tests.integration.images.test_image_store import (  # noqa: F401
    _admin_token,
    _image,
    _qcow2,
    _upload,
    images_created,
    store,
)


def _iso(path, label: str = "KOVATOOLS"):
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, vol_ident=label)
    data = b"kova iso upload\n" * 4096
    iso.add_fp(io.BytesIO(data), len(data), "/README.TXT;1", joliet_path="/readme.txt")
    iso.write(str(path))
    iso.close()
    return path


def test_an_iso_is_stored_as_is_and_a_non_iso_is_refused(kubeconfig, store, k8s_client,
                                                         images_created,  # noqa: F811
                                                         tmp_path):
    name = f"tools-{uuid.uuid4().hex[:6]}"
    images_created.append(name)
    iso = _iso(tmp_path / "tools.iso")
    res = _upload(kubeconfig, store, iso, name, "--format", "iso")
    assert res.exit_code == 0, res.output
    assert f"image {name}: stored as iso, " in res.output, res.output
    sha = hashlib.sha256(iso.read_bytes()).hexdigest()
    img = _image(k8s_client, name)
    assert img["spec"]["format"] == "iso" and img["spec"]["sha256"] == sha, img["spec"]
    assert "minDiskGiB" not in img["spec"] or img["spec"]["minDiskGiB"] in (0, None)
    status = img["status"]
    assert status["format"] == "iso" and status["sizeBytes"] == iso.stat().st_size
    cond = next(c for c in status["conditions"] if c["type"] == "Available")
    assert cond["status"] == "True" and cond["reason"] == "Stored", cond
    assert (store.root / name / "image.iso").read_bytes() == iso.read_bytes()
    with store.client() as c:
        got = c.get(f"/v1/images/{name}",
                    headers={"Authorization": f"Bearer {_admin_token(kubeconfig)}"})
    assert got.status_code == 200 and got.headers["X-Image-Sha256"] == sha
    assert hashlib.sha256(got.content).hexdigest() == sha

    # Not ISO 9660: a qcow2 and plain bytes, by the plugin and by the store.
    for bad in (_qcow2(tmp_path / "disk.qcow2"), tmp_path / "junk.iso"):
        if bad.suffix == ".iso":
            bad.write_bytes(b"\x00" * (1 << 20))
        res = _upload(kubeconfig, store, bad, f"bad-{name}", "--format", "iso")
        assert res.exit_code != 0, res.output
        assert f"{bad.name} cannot be uploaded as iso: " in res.output, res.output
        with store.client() as c:
            got = c.put(f"/v1/images/bad-{name}", params={"format": "iso"},
                        content=bad.read_bytes(),
                        headers={"Authorization": f"Bearer {_admin_token(kubeconfig)}"})
        assert got.status_code == 422 and got.json()["reason"] == "ImageInvalid", got.text
        assert "the iso file is refused: " in got.json()["message"], got.text
    assert "not an ISO 9660 image" in got.json()["message"]
    assert _image(k8s_client, f"bad-{name}") is None
    assert not (store.root / f"bad-{name}").exists()
    # The Image is deleted with its file (the store's finalizer).
    from kubernetes import client

    client.CustomObjectsApi(k8s_client).delete_cluster_custom_object(
        "kova.dev", "v1alpha1", contract.IMAGES, name)
    wait_for(lambda: _image(k8s_client, name) is None, 30, 0.2, f"Image {name} deleted")
    assert not (store.root / name).exists()
