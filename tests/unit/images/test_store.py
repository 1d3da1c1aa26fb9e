"""The image store's files (kova.images.store) without the HTTP server:
what is kept, what is converted, and that a refused or cut-short upload
leaves nothing."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess

import pytest

from kova.images.store import ImageStore, StoreError


async def _chunks(data: bytes, size: int = 4096):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def _receive(store: ImageStore, name: str, fmt: str, data: bytes, length: int | None = None):
    return asyncio.run(store.receive(name, fmt, _chunks(data), length))


def _leftovers(store: ImageStore) -> list:
    return [p for p in store.root.rglob("*") if p.is_file()]


def test_raw_is_kept_as_it_is(tmp_path):
    store = ImageStore(tmp_path / "s")
    data = b"\x07" * (68 << 10)
    got = _receive(store, "disk", "raw", data, len(data))
    assert got.format == "raw" and got.size == len(data) == got.virtual_size
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert got.path.read_bytes() == data
    assert store.get("disk") == got
    with pytest.raises(StoreError) as err:
        _receive(store, "disk", "raw", data)
    assert err.value.status == 409


def test_vhdx_is_converted_to_qcow2(tmp_path):
    src = tmp_path / "a.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "8M"], check=True)
    vhdx = tmp_path / "a.vhdx"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "vhdx", str(src),
                    str(vhdx)], check=True)
    store = ImageStore(tmp_path / "s")
    got = _receive(store, "conv", "vhdx", vhdx.read_bytes())
    assert got.format == "qcow2" and got.uploaded_format == "vhdx"
    assert got.virtual_size == 8 << 20
    assert got.sha256 == hashlib.sha256(got.path.read_bytes()).hexdigest()
    assert sorted(p.name for p in _leftovers(store)) == ["image.qcow2", "meta.json"]


@pytest.mark.parametrize("case", ["too-large", "cut-short", "garbage-vmdk", "bad-name",
                                  "bad-format"])
def test_refused_uploads_leave_nothing(tmp_path, case):
    store = ImageStore(tmp_path / "s", max_bytes=50000)
    data, length, fmt, name = b"\0" * 60000, None, "raw", "x"
    want = {"too-large": 413, "cut-short": 400, "garbage-vmdk": 422, "bad-name": 400,
            "bad-format": 400}[case]
    if case == "cut-short":
        data, length = b"\0" * 1000, 4000
    elif case == "garbage-vmdk":
        data, fmt = b"not a vmdk" * 100, "vmdk"
    elif case == "bad-name":
        data, name = b"\0" * 100, "../etc"
    elif case == "bad-format":
        data, fmt = b"\0" * 100, "iso9660"
    with pytest.raises(StoreError) as err:
        _receive(store, name, fmt, data, length)
    assert err.value.status == want, err.value.message
    assert _leftovers(store) == []


def test_leftovers_of_a_crash_are_removed_at_start(tmp_path):
    (tmp_path / "s" / ".uploads" / "tmp123").mkdir(parents=True)
    (tmp_path / "s" / ".uploads" / "tmp123" / "upload.raw").write_bytes(b"x")
    ImageStore(tmp_path / "s")
    assert not any((tmp_path / "s" / ".uploads").iterdir())


def test_a_large_upload_in_uneven_pieces_is_stored_whole(tmp_path):
    """Many pieces and several writeback windows: the file and its sha256 are
    those of every byte in order, and the store tells the seconds per step."""
    import os

    from kova.images import store as store_mod

    data = os.urandom(store_mod.WRITEBACK_BYTES * 2 + 12345)
    store = ImageStore(tmp_path / "s")

    async def uneven():
        i, n = 0, 1
        while i < len(data):
            n = n * 7 % 1_000_003 + 1  # 1 byte to ~1 MB, no two alike in a row
            yield data[i:i + n]
            i += n

    got = asyncio.run(store.receive("big", "raw", uneven(), len(data)))
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert got.path.read_bytes() == data and got.size == len(data)
    assert {"receiveSeconds", "fsyncSeconds", "checkSeconds",
            "renameSeconds"} <= set(got.seconds)
    assert sorted(p.name for p in _leftovers(store)) == ["image.raw", "meta.json"]


def test_an_upload_over_the_limit_in_its_middle_leaves_nothing(tmp_path):
    """Refused after some megabytes were written: nothing stays behind."""
    limit = 24 << 20
    store = ImageStore(tmp_path / "s", max_bytes=limit)
    data = b"\x01" * (limit + 1)
    with pytest.raises(StoreError) as err:
        asyncio.run(store.receive("over", "raw", _chunks(data, 1 << 20)))
    assert err.value.status == 413
    assert _leftovers(store) == [] and store.get("over") is None


def test_an_upload_cut_off_after_many_pieces_leaves_nothing(tmp_path):
    """The connection breaks after 20 MiB were hashed and written: the error
    is the caller's (the server's "interrupted"), no file stays."""
    import os

    store = ImageStore(tmp_path / "s")
    piece = os.urandom(256 << 10)

    async def pieces():
        for _ in range(80):  # 20 MiB
            yield piece
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        asyncio.run(store.receive("cut", "raw", pieces(), 1 << 30))
    assert _leftovers(store) == [] and store.get("cut") is None


def test_a_write_the_kernel_refuses_is_refused_and_leaves_nothing(tmp_path):
    """The kernel refuses a write half-way (the file-size limit, EFBIG, as a
    full disk would with ENOSPC): the upload is refused with 507 and the
    reason, nothing stays.  Run in a child process, whose file-size limit is
    lowered."""
    import json
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import asyncio, json, os, resource, signal, sys
        from kova.images.store import ImageStore, StoreError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        store = ImageStore(sys.argv[1])
        resource.setrlimit(resource.RLIMIT_FSIZE, (12 << 20, 12 << 20))
        async def pieces():
            for _ in range(128):  # 32 MiB
                yield os.urandom(256 << 10)
        try:
            asyncio.run(store.receive("full", "raw", pieces(), 32 << 20))
            out = {"stored": True}
        except StoreError as exc:
            out = {"status": exc.status, "reason": exc.reason, "message": exc.message}
        out["files"] = [str(p) for p in store.root.rglob("*") if p.is_file()]
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(proc.stdout)
    assert out.get("status") == 507 and out["reason"] == "InsufficientStorage", out
    assert "could not write the upload" in out["message"]
    assert out["files"] == []
