"""A guest of Kova's test image on a host of the two-host bed, with a serial
console to type into and read from, for the live-migration tests and the
benchmark.

The domain has one disk (a qcow2 overlay of the test image in the host's
instance directory) and a serial port on a pty whose output QEMU also writes
to ``console.log`` next to the disk.  :class:`SerialConsole` opens the pty,
switches it to raw mode and drains it in a thread (an undrained pty would
stall the guest's console), keeping what the guest printed.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import termios
import threading
import time
import tty
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

import libvirt

#: Markers the guest prints when typed the commands below.
COUNT_RE = re.compile(r"KOVA-COUNT=(\d+)")
BOOT_ID_RE = re.compile(r"KOVA-BOOTID=([0-9a-f-]{36})")

#: A shell loop printing an increasing counter every half second.
COUNTER_CMD = "(i=0; while :; do i=$((i+1)); echo KOVA-COUNT=$i; sleep 0.5; done) &"
BOOT_ID_CMD = "echo KOVA-BOOTID=$(cat /proc/sys/kernel/random/boot_id)"
#: Keeps dirtying guest memory: rewrites a file of ``mib`` MiB from
#: /dev/urandom in a loop (the busybox initramfs root is in RAM).
DIRTY_CMD = ("(while :; do dd if=/dev/urandom of=/kova-dirty bs=1M count={mib} "
             "2>/dev/null; done) &")


def guest_xml(name: str, disk: Path, console_log: Path, memory_mib: int = 256) -> str:
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <uuid>{uuid.uuid4()}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{escape(str(disk))}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'>
      <log file='{escape(str(console_log))}' append='on'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>"""


def make_disk(base: Path, path: Path, size: str = "64M") -> Path:
    """A qcow2 overlay of ``base`` at ``path``, ``size`` big (room after the
    image's boot partition for data a test writes raw)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                    "-b", str(base.resolve()), str(path), size], check=True)
    return path


def pty_path(dom: libvirt.virDomain) -> str:
    root = ET.fromstring(dom.XMLDesc(0))
    source = root.find("./devices/serial/source")
    path = source.get("path") if source is not None else None
    if not path:
        raise RuntimeError(f"{dom.name()}: no pty for the serial port")
    return path


class SerialConsole:
    """The guest's serial console through its pty: ``type()`` a line,
    ``wait_for()`` output."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd, termios.TCSANOW)
        self._buf: list[str] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._drain, daemon=True, name=f"console-{path}")
        self._thread.start()

    def _drain(self) -> None:
        # select() with a timeout, so that close() can end this thread before
        # the descriptor is closed (a read blocked across the close would go
        # on reading whatever file gets that descriptor number next).
        while not self._closed:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.2)
                if not ready:
                    continue
                data = os.read(self.fd, 4096)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self._buf.append(data.decode(errors="replace"))

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(self._buf)

    def type(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.text
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise TimeoutError(f"console {self.path}: condition not met in {timeout:.0f}s; "
                                   f"last output:\n{text[-2000:]}")
            time.sleep(0.1)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._thread.join()
        try:
            os.close(self.fd)
        except OSError:
            pass


def wait_for_file(path: Path, marker: str, timeout: float) -> str:
    """Poll ``path`` (a console log) until it contains ``marker``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        if marker in text:
            return text
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: no {marker!r} in {timeout:.0f}s; "
                               f"last output:\n{text[-2000:]}")
        time.sleep(0.2)
