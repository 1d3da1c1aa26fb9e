"""Image.status and the host's image cache, through the public interfaces:
Images and Instances on the real API server, the agent in-process with
libvirt's test:///default driver.

* a verified copy shows in the Image's status (sizes, sha256, the host in
  cachedOn, Available=True);
* a crafted qcow2 whose external data file points at a host file ends the
  Instance's build in ImageInvalid, the Image's Available=False/ImageInvalid
  and a Warning Event on the Image; the host file is untouched;
* eviction: an image no Instance uses leaves the cache (and cachedOn) after
  --image-cache-ttl; one an Instance uses stays.
"""

from __future__ import annotations

import hashlib
import subprocess
import time

from kova.crds import names as contract
from tests.fixtures.agents import G, V, wait_for
from tests.helpers import small_iso


def _image(harness, name: str) -> dict:
    return harness.custom.get_cluster_custom_object(G, V, "images", name)


def _available(obj: dict) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or ()
                 if c["type"] == "Available"), {})


def _qcow2(path, size: str = "64M"):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def test_verified_copy_is_in_the_image_status(harness, small_image):
    name = f"st-{harness.host}"
    harness.image(name, small_image)
    harness.agent()
    harness.instance("vm1", name)
    harness.wait_phase("vm1", "Running")
    img = wait_for(lambda: (o := _image(harness, name)) and _available(o).get("status") == "True"
                   and o, 15, what="Image Available")
    st = img["status"]
    assert st["cachedOn"] == [harness.host]
    assert st["sizeBytes"] == small_image.stat().st_size
    assert st["virtualSizeBytes"] == 64 << 20
    assert st["sha256"] == hashlib.sha256(small_image.read_bytes()).hexdigest()
    assert st["format"] == "qcow2"
    assert _available(img)["reason"] == "Verified" and harness.host in _available(img)["message"]


def test_qcow2_with_data_file_on_a_host_file_ends_in_image_invalid(harness, tmp_path):
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"host secret\n")
    evil = tmp_path / "images" / "evil.qcow2"
    evil.parent.mkdir(exist_ok=True)
    scratch = tmp_path / "scratch.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"data_file={scratch},data_file_raw=on", str(evil), "64M"], check=True)
    subprocess.run(["qemu-img", "amend", "-q", "-f", "qcow2", "-o", f"data_file={secret}",
                    str(evil)], check=True)
    name = f"evil-{harness.host}"
    harness.image(name, evil)
    harness.agent()
    harness.instance("vm1", name)
    built = harness.wait_cond("vm1", "Built", "False", timeout=30)
    assert built["message"].startswith(contract.ERROR_IMAGE_INVALID + ":"), built
    assert "external data file" in built["message"], built
    img = wait_for(lambda: (o := _image(harness, name)) and _available(o).get("status") == "False"
                   and o, 15, what="Image Available=False")
    cond = _available(img)
    assert cond["reason"] == contract.ERROR_IMAGE_INVALID and "external data file" in \
        cond["message"], cond
    assert not img["status"].get("cachedOn")
    events = wait_for(lambda: [e for e in harness.core.list_namespaced_event(
        "default", field_selector=f"involvedObject.name={name}").items
        if e.reason == contract.ERROR_IMAGE_INVALID], 10, what="Warning Event on the Image")
    assert events[0].type == "Warning" and "external data file" in events[0].message
    assert secret.read_bytes() == b"host secret\n"
    assert not list((tmp_path / "instances" / "_base").glob("*.qcow2"))


def test_unused_image_leaves_the_cache_after_the_ttl_one_in_use_stays(harness, tmp_path):
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    used, unused = f"used-{harness.host}", f"unused-{harness.host}"
    harness.image(used, _qcow2(images / "used.qcow2"))
    harness.image(unused, _qcow2(images / "unused.qcow2", "32M"))
    # An ISO an Instance boots from is in use too: its CD-ROM holds it.
    cd = f"cd-{harness.host}"
    iso = small_iso(images / "cd.iso")
    harness.image(cd, iso, format="iso")
    harness.agent(image_cache_ttl=1.0, image_cache_check_seconds=0.5, resync_seconds=0.5,
                  image_cache_min_free_percent=0.0)
    harness.instance("keep", used)
    harness.instance("gone", unused)
    cd_uid = harness.instance("cd", cd)["metadata"]["uid"]
    harness.wait_phase("keep", "Running")
    harness.wait_phase("gone", "Running")
    harness.wait_phase("cd", "Running")
    cached_iso = tmp_path / "instances" / "_base" / (
        hashlib.sha256(iso.read_bytes()).hexdigest() + ".iso")
    assert (tmp_path / "instances" / cd_uid / "cdrom.iso").readlink() == cached_iso
    base = tmp_path / "instances" / "_base"
    sha = {n: _image(harness, n)["spec"]["sha256"] for n in (used, unused)}
    for n in (used, unused):
        wait_for(lambda n=n: (_image(harness, n).get("status") or {}).get("cachedOn"), 15,
                 what=f"{n} cached")
        assert (base / f"{sha[n]}.qcow2").exists()
    harness.delete("gone")
    wait_for(lambda: harness.get("gone") is None, 15, what="gone deleted")
    wait_for(lambda: not (base / f"{sha[unused]}.qcow2").exists(), 20,
             what="the unused image evicted")
    wait_for(lambda: not (_image(harness, unused).get("status") or {}).get("cachedOn"), 10,
             what=f"{harness.host} out of the evicted Image's cachedOn")
    # The one in use stays, well past the TTL, and so does its status.
    for _ in range(3):
        harness.wait_phase("keep", "Running")
        assert (base / f"{sha[used]}.qcow2").exists()
        assert cached_iso.exists()
        time.sleep(1.0)
    assert (base / f"{sha[used]}.qcow2").exists()
    assert _image(harness, used)["status"]["cachedOn"] == [harness.host]
    evicted = _image(harness, unused)["status"]
    assert evicted["sha256"] == sha[unused] and _available({"status": evicted})["status"] == "True"
