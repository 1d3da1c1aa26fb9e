"""What an image author or an Image's source cannot make the agent do: read a
host file through a qcow2 data file or backing file, run qemu-img without
limits, fetch from loopback or link-local addresses, read files outside the
image directory, download without bounds, or repeat URL credentials."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kova import imagefile, prlimit
from kova.agents.virt.image_sources import (
    SourcePolicy,
    SourceRefused,
    networks,
    redact_url,
)
from kova.agents.virt.images import ImageCache, ImageError, ImageSource
from kova.crds import names as contract

SECRET = b"host-secret-0123456789\n"


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture
def images(tmp_path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    return d


def _cache(tmp_path, images: Path, **kw) -> ImageCache:
    kw.setdefault("allowed", networks(["127.0.0.1/32"]))
    return ImageCache(tmp_path / "cache", policy=SourcePolicy(host_dirs=(str(images),), **kw))


def _refused(cache: ImageCache, source: ImageSource, code=contract.ERROR_IMAGE_INVALID) -> str:
    with pytest.raises(ImageError) as err:
        cache.fetch(source)
    assert err.value.code == code, err.value
    assert cache.cached() == []
    assert not [p for p in cache.dir.iterdir() if p.name.endswith(".part")]
    return err.value.message


# -- crafted files ---------------------------------------------------------

def test_qcow2_with_a_data_file_pointing_at_a_host_file_is_invalid(tmp_path, images):
    host_file = tmp_path / "host-secret"
    host_file.write_bytes(SECRET)
    evil = images / "evil.qcow2"
    # qemu-img create would truncate the data file: make the image against a
    # scratch file, then point its header at the host file.
    scratch = tmp_path / "scratch.raw"
    _qemu_img("create", "-q", "-f", "qcow2", "-o",
              f"data_file={scratch},data_file_raw=on", str(evil), "1M")
    _qemu_img("amend", "-q", "-f", "qcow2", "-o", f"data_file={host_file}", str(evil))
    assert str(host_file) in subprocess.run(
        ["qemu-img", "info", "-f", "qcow2", str(evil)], capture_output=True, text=True).stdout
    msg = _refused(_cache(tmp_path, images), ImageSource(name="evil", host_path=str(evil)))
    assert "external data file" in msg, msg
    assert host_file.read_bytes() == SECRET


def test_data_file_flag_alone_is_refused_from_the_header(tmp_path):
    """The header check refuses the incompatible-feature bit before qemu-img
    runs, even without the header extension naming the file."""
    path = tmp_path / "flag.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", str(path), "1M")
    data = bytearray(path.read_bytes())
    data[79] |= imagefile.QCOW2_EXTERNAL_DATA  # incompatible_features, low byte
    path.write_bytes(bytes(data))
    with pytest.raises(imagefile.UnsafeImage, match="external data file"):
        imagefile.inspect_header(path, "qcow2")


@pytest.mark.parametrize("backing", [
    'json:{"driver":"raw","file":{"driver":"file","filename":"/etc/hostname"}}',
    "/etc/hostname",
])
def test_backing_files_and_json_names_are_invalid(tmp_path, images, backing):
    path = images / "backed.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing, "-u", str(path), "1M")
    msg = _refused(_cache(tmp_path, images), ImageSource(name="b", host_path=str(path)))
    assert "backing file" in msg, msg
    # qemu-img info alone (the second line of defence) names a json: file as such.
    if backing.startswith("json:"):
        with pytest.raises(imagefile.UnsafeImage, match="json: pseudo-file"):
            imagefile.check_info(imagefile.qemu_img_info(path, "qcow2"), "qcow2", path)


def test_a_qcow2_declared_raw_is_invalid(tmp_path, images):
    path = images / "sneaky.img"
    _qemu_img("create", "-q", "-f", "qcow2", str(path), "1M")
    msg = _refused(_cache(tmp_path, images),
                   ImageSource(name="s", host_path=str(path), format="raw"))
    assert "declared raw but is a qcow2 image" in msg, msg


def test_qemu_img_info_runs_with_the_format_forced_and_under_limits(tmp_path, monkeypatch):
    seen: list[list[str]] = []
    real_run = subprocess.run

    def spy(argv, **kw):
        seen.append(list(argv))
        return real_run(argv, **kw)

    monkeypatch.setattr(subprocess, "run", spy)
    path = tmp_path / "ok.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", str(path), "1M")
    imagefile.qemu_img_info(path, "qcow2")
    argv = seen[-1]
    assert argv[:3] == [sys.executable, "-m", "kova.prlimit"]
    assert argv[argv.index("--as") + 1] == str(prlimit.QEMU_IMG_ADDRESS_SPACE)
    assert argv[argv.index("--cpu") + 1] == str(prlimit.QEMU_IMG_CPU_SECONDS)
    cmd = argv[argv.index("--") + 1:]
    assert cmd[:4] == ["qemu-img", "info", "-f", "qcow2"]


def test_prlimit_enforces_memory_and_cpu():
    hog = [sys.executable, "-c", "b = bytearray(400 << 20); print('allocated')"]
    free = subprocess.run(prlimit.command(hog, address_space=4 << 30), capture_output=True,
                          text=True)
    assert free.returncode == 0 and "allocated" in free.stdout
    capped = subprocess.run(prlimit.command(hog, address_space=200 << 20), capture_output=True,
                            text=True)
    assert capped.returncode != 0 and "MemoryError" in capped.stderr
    spin = [sys.executable, "-c", "while True: pass"]
    t0 = time.monotonic()
    killed = subprocess.run(prlimit.command(spin, cpu_seconds=1), capture_output=True,
                            timeout=60)
    assert killed.returncode < 0  # SIGXCPU / SIGKILL
    assert time.monotonic() - t0 < 30


# -- hostPath --------------------------------------------------------------

@pytest.mark.parametrize("path", ["/proc/self/environ", "/etc/hostname",
                                  "{images}/../outside.qcow2"])
def test_host_path_outside_the_image_directory_is_invalid(tmp_path, images, path):
    (tmp_path / "outside.qcow2").write_bytes(b"x" * 512)
    msg = _refused(_cache(tmp_path, images),
                   ImageSource(name="p", host_path=path.format(images=images), format="raw"))
    assert "outside the image directories" in msg, msg


def test_a_link_in_the_image_directory_to_proc_is_invalid(tmp_path, images):
    (images / "environ.raw").symlink_to("/proc/self/environ")
    msg = _refused(_cache(tmp_path, images),
                   ImageSource(name="p", host_path=str(images / "environ.raw"), format="raw"))
    assert "leads to /proc/" in msg and "no image" in msg, msg


# -- URLs ------------------------------------------------------------------

class _Server:
    """A loopback HTTP server whose answers the test chooses."""

    def __init__(self, handler) -> None:
        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                handler(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers: list[_Server] = []

    def make(handler) -> _Server:
        servers.append(_Server(handler))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()


def _ok(body: bytes):
    def handler(req):
        req.send_response(200)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)
    return handler


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x.raw", "http://[::1]:9/x.raw",
                                 "http://169.254.169.254/latest/meta-data",
                                 "http://localhost:9/x.raw", "http://0.0.0.0:9/x.raw"])
def test_urls_to_loopback_and_link_local_are_invalid(tmp_path, images, url):
    cache = _cache(tmp_path, images, allowed=())
    msg = _refused(cache, ImageSource(name="u", url=url, sha256="a" * 64, format="raw"))
    assert "where images are not fetched from" in msg, msg


def test_blocked_networks_and_the_allowed_exemption(tmp_path, images, server):
    body = b"\0" * 4096
    srv = server(_ok(body))
    src = ImageSource(name="u", url=f"{srv.url}/x.raw", sha256=hashlib.sha256(body).hexdigest(),
                      format="raw")
    blocked = _cache(tmp_path, images, allowed=(), blocked=networks(["10.0.0.0/8"]))
    with pytest.raises(SourceRefused, match="10.0.0.0/8"):
        blocked.policy.check_address("http://10.1.2.3/x", "10.1.2.3")
    assert _cache(tmp_path, images).fetch(src).size == len(body)  # 127.0.0.1/32 allowed


def test_a_redirect_to_loopback_is_invalid(tmp_path, images, server):
    target = server(_ok(b"\0" * 512))
    port = target.url.rsplit(":", 1)[1]

    def redirect(req):
        req.send_response(302)
        req.send_header("Location", f"http://127.0.0.2:{port}/x.raw")
        req.send_header("Content-Length", "0")
        req.end_headers()

    first = server(redirect)
    msg = _refused(_cache(tmp_path, images),
                   ImageSource(name="r", url=f"{first.url}/x.raw", sha256="a" * 64, format="raw"))
    assert "127.0.0.2" in msg, msg


def test_plain_http_without_sha256_is_invalid(tmp_path, images, server):
    srv = server(_ok(b"\0" * 512))
    msg = _refused(_cache(tmp_path, images),
                   ImageSource(name="h", url=f"{srv.url}/x.raw", format="raw"))
    assert "spec.sha256 is required" in msg, msg


def test_downloads_have_a_size_cap(tmp_path, images, server):
    body = b"\0" * 65536
    declared = server(_ok(body))

    def chunked(req):  # no Content-Length: the cap is hit while reading
        req.send_response(200)
        req.end_headers()
        for _ in range(16):
            req.wfile.write(b"\0" * 8192)

    undeclared = server(chunked)
    for srv in (declared, undeclared):
        cache = _cache(tmp_path, images, max_bytes=32768)
        msg = _refused(cache, ImageSource(name="big", url=f"{srv.url}/x.raw", sha256="a" * 64,
                                          format="raw"))
        assert "32768" in msg and "--image-max-bytes" in msg, msg


def test_downloads_have_a_time_cap(tmp_path, images, server):
    def slow(req):
        req.send_response(200)
        req.send_header("Content-Length", str(64 * 1024))
        req.end_headers()
        try:
            for _ in range(64):
                req.wfile.write(b"\0" * 1024)
                req.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    srv = server(slow)
    cache = _cache(tmp_path, images, max_seconds=0.5)
    msg = _refused(cache, ImageSource(name="slow", url=f"{srv.url}/x.raw", sha256="a" * 64,
                                      format="raw"), code=contract.ERROR_IMAGE_DOWNLOAD)
    assert "--image-download-seconds" in msg, msg


def test_url_credentials_never_reach_messages_logs_or_metadata(tmp_path, images, server,
                                                               caplog):
    body = b"\0" * 1024
    srv = server(_ok(body))
    host = srv.url.split("://", 1)[1]
    url = f"http://alice:hunter2@{host}/x.raw?X-Signature=s3cr3t"
    caplog.set_level("DEBUG")
    cache = _cache(tmp_path, images)
    bad = _refused(cache, ImageSource(name="c", url=url, sha256="a" * 64, format="raw"),
                   code=contract.ERROR_IMAGE_CHECKSUM)
    refused = _refused(_cache(tmp_path, images, allowed=()),
                       ImageSource(name="c", url=url, sha256="a" * 64, format="raw"))
    got = cache.fetch(ImageSource(name="c", url=url, sha256=hashlib.sha256(body).hexdigest(),
                                  format="raw"))
    meta = got.path.with_name(got.path.name + ".json").read_text()
    for text in (bad, refused, meta, caplog.text):
        assert "hunter2" not in text and "s3cr3t" not in text and "alice" not in text, text
    assert f"http://***@{host}/x.raw?<redacted>" in bad


def test_redact_url():
    assert redact_url("https://u:p@example.com:8443/a/b.qcow2?sig=x") == \
        "https://***@example.com:8443/a/b.qcow2?<redacted>"
    assert redact_url("https://example.com/a.qcow2") == "https://example.com/a.qcow2"
    assert redact_url("http://[::1]:80/x") == "http://[::1]:80/x"
