"""The image cache: local and HTTP sources, verification, sharing, overlays."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from pathlib import Path

import pytest

from kova.agents.virt.image_sources import networks
from kova.agents.virt.images import (
    ImageCache,
    ImageError,
    ImageSource,
    SourcePolicy,
    backing_file,
    create_overlay,
    qemu_img_info,
)
from kova.crds import names as contract
from tests.helpers import FileServer, wait_for


def _qcow2(path: Path, size: str = "16M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def image(tmp_path) -> Path:
    (tmp_path / "src").mkdir()
    return _qcow2(tmp_path / "src" / "img.qcow2")


def _policy(tmp_path, **kw) -> SourcePolicy:
    """The test's directory is the image directory; test servers on loopback
    are allowed."""
    kw.setdefault("allowed", networks(["127.0.0.0/8"]))
    return SourcePolicy(host_dirs=(str(tmp_path),), **kw)


@pytest.fixture
def cache(tmp_path) -> ImageCache:
    return ImageCache(tmp_path / "cache", policy=_policy(tmp_path))


@pytest.fixture
def http_root(tmp_path):
    """A loopback HTTP server serving tmp_path/www; yields (root dir, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    srv = FileServer(root)
    try:
        yield root, srv.url, srv.paths
    finally:
        srv.stop()


def test_local_path_miss_then_hit(cache, image):
    src = ImageSource(name="img", host_path=str(image), sha256=_sha(image))
    first = cache.fetch(src)
    assert not first.hit
    assert first.path.exists() and first.sha256 == _sha(image)
    assert first.virtual_size == 16 << 20
    second = cache.fetch(src)
    assert second.hit and second.path == first.path
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)
    assert cache.stats.bytes_fetched == image.stat().st_size


def test_local_symlink_is_resolved(cache, image, tmp_path):
    link = tmp_path / "link.qcow2"
    link.symlink_to(image)
    got = cache.fetch(ImageSource(name="img", host_path=str(link)))
    assert got.sha256 == _sha(image)


def test_checksum_mismatch_is_refused_and_not_cached(cache, image):
    src = ImageSource(name="img", host_path=str(image), sha256="0" * 64)
    with pytest.raises(ImageError) as err:
        cache.fetch(src)
    assert err.value.code == contract.ERROR_IMAGE_CHECKSUM
    assert "expected" in str(err.value)
    assert cache.cached() == []
    assert not [p for p in cache.dir.iterdir() if p.name.endswith(".part")]


def test_missing_local_image(cache, tmp_path):
    with pytest.raises(ImageError) as err:
        cache.fetch(ImageSource(name="img", host_path=str(tmp_path / "nope.qcow2")))
    assert err.value.code == contract.ERROR_IMAGE_NOT_FOUND
    assert "does not exist" in err.value.message


def test_directory_is_not_an_image(cache, tmp_path):
    with pytest.raises(ImageError) as err:
        (tmp_path / "sub").mkdir()
        cache.fetch(ImageSource(name="img", host_path=str(tmp_path / "sub")))
    assert err.value.code == contract.ERROR_IMAGE_NOT_FOUND


def test_no_source(cache):
    with pytest.raises(ImageError) as err:
        cache.fetch(ImageSource(name="img"))
    assert err.value.code == contract.ERROR_IMAGE_NOT_FOUND


def test_format_mismatch(cache, tmp_path):
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\0" * 65536)
    with pytest.raises(ImageError) as err:
        cache.fetch(ImageSource(name="img", host_path=str(raw), format="qcow2"))
    assert err.value.code == contract.ERROR_IMAGE_INVALID
    got = cache.fetch(ImageSource(name="img", host_path=str(raw), format="raw"))
    assert got.format == "raw" and got.path.suffix == ".raw"


def test_image_with_backing_file_is_refused(cache, image, tmp_path):
    sneaky = tmp_path / "sneaky.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image),
                    str(sneaky)], check=True)
    with pytest.raises(ImageError) as err:
        cache.fetch(ImageSource(name="img", host_path=str(sneaky)))
    assert err.value.code == contract.ERROR_IMAGE_INVALID
    assert "backing" in err.value.message


def test_http_download(cache, image, http_root):
    root, base, requests = http_root
    (root / "img.qcow2").write_bytes(image.read_bytes())
    src = ImageSource(name="img", url=f"{base}/img.qcow2", sha256=_sha(image))
    got = cache.fetch(src)
    assert got.sha256 == _sha(image) and not got.hit
    assert cache.fetch(src).hit
    assert requests == ["/img.qcow2"]


def test_http_404(cache, http_root):
    _root, base, _ = http_root
    with pytest.raises(ImageError) as err:
        cache.fetch(ImageSource(name="img", url=f"{base}/missing.qcow2", sha256="a" * 64))
    assert err.value.code == contract.ERROR_IMAGE_NOT_FOUND


def test_http_connection_refused(cache):
    with pytest.raises(ImageError) as err:
        cache.fetch(ImageSource(name="img", url="http://127.0.0.1:9/x.qcow2", sha256="a" * 64))
    assert err.value.code == contract.ERROR_IMAGE_DOWNLOAD


def test_http_checksum_mismatch(cache, image, http_root):
    root, base, _ = http_root
    (root / "img.qcow2").write_bytes(image.read_bytes())
    with pytest.raises(ImageError) as err:
        cache.fetch(ImageSource(name="img", url=f"{base}/img.qcow2", sha256="a" * 64))
    assert err.value.code == contract.ERROR_IMAGE_CHECKSUM
    assert cache.cached() == []


def test_concurrent_fetches_share_one_download(cache, image, http_root):
    root, base, requests = http_root
    (root / "img.qcow2").write_bytes(image.read_bytes())
    src = ImageSource(name="img", url=f"{base}/img.qcow2", sha256=_sha(image))
    results, errors = [], []

    def go():
        try:
            results.append(cache.fetch(src))
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({r.path for r in results}) == 1
    assert sum(not r.hit for r in results) == 1
    assert requests == ["/img.qcow2"]


def test_progress_callback(tmp_path, image):
    seen = []
    cache = ImageCache(tmp_path / "c", on_progress=lambda n, d, t: seen.append((n, d, t)),
                       policy=_policy(tmp_path))
    cache.fetch(ImageSource(name="img", host_path=str(image)))
    assert seen and seen[-1][1] == image.stat().st_size


def test_leftover_without_metadata_is_refetched(cache, image):
    src = ImageSource(name="img", host_path=str(image))
    got = cache.fetch(src)
    got.path.with_suffix(got.path.suffix + ".json").unlink()
    again = cache.fetch(src)
    assert not again.hit and again.sha256 == got.sha256


def test_overlay(cache, image, tmp_path):
    base = cache.fetch(ImageSource(name="img", host_path=str(image)))
    overlay = create_overlay(base, tmp_path / "inst" / "disk.qcow2", 1 << 30)
    info = qemu_img_info(overlay)
    assert info["format"] == "qcow2" and info["virtual-size"] == 1 << 30
    assert backing_file(overlay) == base.path
    assert not list((tmp_path / "inst").glob(".*part"))
    assert overlay.stat().st_mode & 0o777 == 0o600  # not readable by other local users
    # also where an earlier attempt left a world-readable part file behind
    part = tmp_path / "inst" / ".disk2.qcow2.part"
    part.write_bytes(b"")
    part.chmod(0o644)
    assert create_overlay(base, tmp_path / "inst" / "disk2.qcow2", 1 << 30).stat().st_mode \
        & 0o777 == 0o600


def test_overlay_too_small(cache, image, tmp_path):
    base = cache.fetch(ImageSource(name="img", host_path=str(image)))
    with pytest.raises(ImageError) as err:
        create_overlay(base, tmp_path / "disk.qcow2", 1 << 20)
    assert err.value.code == contract.ERROR_DISK_TOO_SMALL


def test_prune_keeps_images_in_use(cache, tmp_path):
    a = _qcow2(tmp_path / "a.qcow2")
    b = _qcow2(tmp_path / "b.qcow2", "32M")
    ca = cache.fetch(ImageSource(name="a", host_path=str(a)))
    cb = cache.fetch(ImageSource(name="b", host_path=str(b)))
    removed = cache.prune({ca.path})
    assert removed == [cb.path]
    assert cache.cached() == [ca.path]


def test_cache_dir_removed_under_the_agent(cache, image):
    import shutil

    shutil.rmtree(cache.dir)
    got = cache.fetch(ImageSource(name="img", host_path=str(image)))
    assert got.path.exists()


def test_prune_respects_min_age(cache, tmp_path):
    import os
    import time as _t

    a = _qcow2(tmp_path / "a.qcow2")
    ca = cache.fetch(ImageSource(name="a", host_path=str(a)))
    assert cache.prune(set(), min_age=3600) == []  # just used
    meta = ca.path.with_suffix(ca.path.suffix + ".json")
    old = _t.time() - 7200
    os.utime(meta, (old, old))
    assert cache.prune(set(), min_age=3600) == [ca.path]
    assert not ca.path.exists() and not meta.exists()


def test_cache_hit_refreshes_last_use(cache, tmp_path):
    import os
    import time as _t

    a = _qcow2(tmp_path / "a.qcow2")
    src = ImageSource(name="a", host_path=str(a))
    ca = cache.fetch(src)
    meta = ca.path.with_suffix(ca.path.suffix + ".json")
    old = _t.time() - 7200
    os.utime(meta, (old, old))
    cache.fetch(src)
    assert _t.time() - meta.stat().st_mtime < 60


# ---------------------------------------------------------------------------
# HTTPS sources (the test image served by tests.helpers.TLSFileServer with
# certificates from test CAs; see the image_pki / https_images fixtures).


def test_https_download_trusts_the_private_ca(tmp_path, https_images):
    cache = ImageCache(tmp_path / "cache", ca_file=https_images.ca, policy=_policy(tmp_path))
    src = ImageSource(name="img", url=https_images.url(), sha256=https_images.sha256)
    got = cache.fetch(src)
    assert got.sha256 == https_images.sha256 and not got.hit
    assert got.path.name == f"{https_images.sha256}.qcow2"
    assert qemu_img_info(got.path)["format"] == "qcow2"
    assert cache.fetch(src).hit
    # One GET, over TLS.
    assert [(p, v.startswith("TLSv1.")) for p, v in https_images.good.requests] == [
        ("/kova-test.qcow2", True)]


def test_https_server_of_an_unknown_ca_is_refused(tmp_path, https_images):
    src = ImageSource(name="img", url=https_images.url(), sha256=https_images.sha256)
    # The system trust store alone does not know the test CA.
    for cache, trusts in ((ImageCache(tmp_path / "c1", policy=_policy(tmp_path)), "the system trust store"),
                          (ImageCache(tmp_path / "c2", ca_file=https_images.ca, policy=_policy(tmp_path)),
                           f"the system trust store and {https_images.ca}")):
        server = https_images.untrusted if cache.dir.name == "c2" else https_images.good
        with pytest.raises(ImageError) as err:
            cache.fetch(ImageSource(name="img", url=https_images.url(server=server),
                                    sha256=src.sha256))
        assert err.value.code == contract.ERROR_IMAGE_DOWNLOAD
        msg = err.value.message
        assert f"TLS certificate verification failed for 127.0.0.1:{server.port}" in msg, msg
        assert "unable to get local issuer certificate" in msg, msg
        assert f"the agent trusts {trusts}" in msg and "--image-ca-file" in msg, msg
        assert cache.cached() == [] and not list(cache.dir.glob(".*.part"))
    # The handshakes were aborted by the client: no file was ever requested.
    assert https_images.good.requests == [] and https_images.untrusted.requests == []
    for server in (https_images.good, https_images.untrusted):
        errors = wait_for(lambda s=server: s.handshake_errors, 5, what="server-side TLS error")
        assert "unknown ca" in errors[0], errors


def test_https_ca_file_adds_to_the_system_trust_store(tmp_path, https_images, monkeypatch):
    """The system trust store is OpenSSL's default one, which honours
    SSL_CERT_FILE: here it makes the "other" CA a system CA.  Without
    --image-ca-file its servers are trusted; with it, they stay trusted and the
    file's CA is trusted as well."""
    monkeypatch.setenv("SSL_CERT_FILE", str(https_images.other_ca))
    system_url = https_images.url(server=https_images.untrusted)
    got = ImageCache(tmp_path / "c1", policy=_policy(tmp_path)).fetch(
        ImageSource(name="img", url=system_url, sha256=https_images.sha256))
    assert got.sha256 == https_images.sha256
    both = ImageCache(tmp_path / "c2", ca_file=https_images.ca, policy=_policy(tmp_path))
    for url in (system_url, https_images.url()):
        got = both.fetch(ImageSource(name="img", url=url))  # no sha256: cached by URL
        assert got.sha256 == https_images.sha256 and not got.hit
    assert len(https_images.untrusted.requests) == 2 and len(https_images.good.requests) == 1


def test_image_store_ca_is_trusted_besides_the_image_ca(tmp_path, https_images):
    """--image-store-ca-file (the chart's image store CA) adds to
    --image-ca-file (a mirror's CA): servers of either CA are trusted, and a
    refusal names both files."""
    src = ImageSource(name="img", url=https_images.url(), sha256=https_images.sha256)
    mirror = https_images.url(server=https_images.untrusted)
    both = ImageCache(tmp_path / "c1", ca_file=https_images.other_ca,
                      store_ca_file=https_images.ca, policy=_policy(tmp_path))
    assert both.fetch(src).sha256 == https_images.sha256
    assert both.fetch(ImageSource(name="img", url=mirror)).sha256 == https_images.sha256
    assert both.trusted == (f"the system trust store and {https_images.other_ca} and "
                            f"{https_images.ca}")
    store_only = ImageCache(tmp_path / "c2", store_ca_file=https_images.ca,
                            policy=_policy(tmp_path))
    assert store_only.fetch(src).sha256 == https_images.sha256
    with pytest.raises(ImageError) as err:
        store_only.fetch(ImageSource(name="img", url=mirror))
    assert f"the agent trusts the system trust store and {https_images.ca}" in \
        err.value.message, err.value.message


def test_https_host_name_mismatch(tmp_path, https_image_root, image_pki):
    from tests.helpers import TLSFileServer

    root, sha = https_image_root
    srv = TLSFileServer(root, image_pki["wrong_name"]["crt"], image_pki["wrong_name"]["key"])
    try:
        cache = ImageCache(tmp_path / "cache", ca_file=image_pki["ca"], policy=_policy(tmp_path))
        with pytest.raises(ImageError) as err:
            cache.fetch(ImageSource(name="img", url=f"{srv.url}/kova-test.qcow2", sha256=sha))
    finally:
        srv.stop()
    assert err.value.code == contract.ERROR_IMAGE_DOWNLOAD
    assert "TLS certificate verification failed" in err.value.message
    assert "not valid for '127.0.0.1'" in err.value.message, err.value.message


def test_https_url_of_a_plain_http_server(cache, image, http_root):
    root, base, requests = http_root
    (root / "img.qcow2").write_bytes(image.read_bytes())
    url = base.replace("http://", "https://") + "/img.qcow2"
    with pytest.raises(ImageError) as err:
        cache.fetch(ImageSource(name="img", url=url))
    assert err.value.code == contract.ERROR_IMAGE_DOWNLOAD
    assert "TLS handshake with 127.0.0.1:" in err.value.message, err.value.message
    assert cache.cached() == []


def test_corrupted_copy_over_https(tmp_path, https_images):
    cache = ImageCache(tmp_path / "cache", ca_file=https_images.ca, policy=_policy(tmp_path))
    with pytest.raises(ImageError) as err:
        cache.fetch(ImageSource(name="img", url=https_images.url(https_images.CORRUPT),
                                sha256=https_images.sha256))
    assert err.value.code == contract.ERROR_IMAGE_CHECKSUM
    assert f"expected {https_images.sha256}" in err.value.message
    assert cache.cached() == [] and not list(cache.dir.glob(".*.part"))


@pytest.mark.parametrize("content", [b"", b"not a certificate\n"])
def test_unusable_ca_file_is_refused_at_start(tmp_path, content):
    bad = tmp_path / "ca.pem"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=f"image CA file {bad}: cannot load it"):
        ImageCache(tmp_path / "cache", ca_file=bad, policy=_policy(tmp_path))


def test_disk_pressure_evicts_unused_images_least_recently_used_first(cache, tmp_path):
    """Under pressure (here: more free space asked for than any disk has)
    unused images go, oldest use first, but not one used in the last two
    minutes (a build between its fetch and its overlay), nor one in use."""
    import os
    import time as _t

    from kova.agents.virt.images import PRESSURE_GRACE

    got = {n: cache.fetch(ImageSource(name=n, host_path=str(_qcow2(tmp_path / f"{n}.qcow2",
                                                                   f"{16 + i}M"))))
           for i, n in enumerate(("old", "older", "fresh", "used"))}
    now = _t.time()
    for n, age in (("old", PRESSURE_GRACE + 10), ("older", PRESSURE_GRACE + 20),
                   ("used", PRESSURE_GRACE + 30)):
        meta = got[n].path.with_suffix(got[n].path.suffix + ".json")
        os.utime(meta, (now - age, now - age))
    gone = cache.evict({got["used"].path}, min_free_percent=100.0)
    assert [m["names"] for m in gone] == [["older"], ["old"]]
    assert sorted(cache.cached()) == sorted([got["fresh"].path, got["used"].path])
    # Without pressure and without an age limit nothing goes.
    assert cache.evict(set(), min_free_percent=0.0) == []
