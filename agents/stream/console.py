"""Serial console and VNC of a domain, for the agent's stream endpoint.

The serial console: libvirt allows one console stream per domain, so the
agent opens one (``virDomainOpenConsole`` on a non-blocking ``virStream``
driven by libvirt's event loop) and shares it: every attachment receives
what the guest prints, and one attachment at a time -- the writer -- may
type.  A second writer is refused with :class:`ConsoleBusy` naming the user
who holds it; readers are always welcome.  The stream is closed when the
last attachment leaves, so a node administrator's ``virsh console`` works
while nobody is attached (the agent opens it with ``force``: a Kova user
takes the console back from a ``virsh console`` left open on the node).
Nothing of this touches the console log file, which virtlogd keeps writing.

VNC: the domain's VNC display listens nowhere (``<listen type='none'/>``,
see :mod:`kova.agents.virt.domain`); :func:`open_vnc` asks libvirt for a
connected socket to it (``virDomainOpenGraphicsFD``), one per viewer.

Threads: libvirt calls :meth:`DomainConsole._on_event` in its event-loop
thread; the callbacks handed to :meth:`ConsoleHub.attach` run there, so
they must only queue the bytes (the stream server hands them to its asyncio
loop with ``call_soon_threadsafe``).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

import libvirt

from kova.errors import Refusal

log = logging.getLogger("kova.agents.stream.console")

#: Receives what the guest printed; ``None`` once the console closed.
Deliver = Callable[[bytes | None], None]

#: Bytes read from the stream per call.
CHUNK = 64 * 1024


class ConsoleError(Refusal):
    """The console cannot be attached; ``status`` is the HTTP status to answer."""


class ConsoleBusy(ConsoleError):
    def __init__(self, holder: str) -> None:
        super().__init__(409, "ConsoleBusy",
                         f"{holder} is typing on this console; attach read-only, or wait "
                         "until they detach")
        self.holder = holder


class Attachment:
    """One client of a domain's console."""

    def __init__(self, console: DomainConsole, user: str, writer: bool, deliver: Deliver) -> None:
        self.console = console
        self.user = user
        self.writer = writer
        self.deliver = deliver
        self.closed = False

    def write(self, data: bytes) -> None:
        if not self.writer:
            raise ConsoleError(403, "ReadOnly", "this console session is read-only")
        self.console.send(data)

    def detach(self) -> None:
        self.console.hub.detach(self)


class DomainConsole:
    """The one libvirt console stream of a domain and its attachments."""

    def __init__(self, hub: ConsoleHub, uid: str) -> None:
        self.hub = hub
        self.uid = uid
        self.attachments: list[Attachment] = []
        self.writer: Attachment | None = None
        self._stream: libvirt.virStream | None = None
        self._send_lock = threading.Lock()
        self.closed = False

    def open(self, conn: libvirt.virConnect, dom: libvirt.virDomain) -> None:
        stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            stream.eventAddCallback(
                libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
                | libvirt.VIR_STREAM_EVENT_HANGUP, self._on_event, None)
        except libvirt.libvirtError:
            _abort(stream)
            raise
        self._stream = stream

    # -- libvirt's event-loop thread
    def _on_event(self, stream: libvirt.virStream, events: int, _opaque) -> None:
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                try:
                    data = stream.recv(CHUNK)
                except libvirt.libvirtError as exc:
                    log.info("console of %s: %s", self.uid, exc)
                    data = b""
                if data == -2:
                    break
                if not data:  # end of stream: the domain stopped
                    self.hub.close(self)
                    return
                for att in list(self.attachments):
                    att.deliver(data)
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self.hub.close(self)

    # -- any thread
    def send(self, data: bytes) -> None:
        """Type ``data`` (all of it; the guest's serial port is slow, so a
        full stream buffer is waited out, for five seconds at most)."""
        stream = self._stream
        if stream is None or self.closed:
            raise ConsoleError(409, "ConsoleClosed", "the console closed (the domain stopped?)")
        deadline = time.monotonic() + 5.0
        view = memoryview(data)
        with self._send_lock:
            while view:
                try:
                    sent = stream.send(bytes(view))
                except libvirt.libvirtError as exc:
                    raise ConsoleError(409, "ConsoleClosed", f"the console closed: {exc}") from exc
                if sent == -2:
                    if time.monotonic() > deadline:
                        raise ConsoleError(503, "ConsoleStalled",
                                           "the guest did not read its console for 5 s")
                    time.sleep(0.01)
                    continue
                view = view[sent:]

    def shutdown(self) -> None:
        stream, self._stream = self._stream, None
        self.closed = True
        if stream is not None:
            try:
                stream.eventRemoveCallback()
            except libvirt.libvirtError:
                pass
            _abort(stream)


def _abort(stream: libvirt.virStream) -> None:
    try:
        stream.abort()
    except libvirt.libvirtError:
        pass


class ConsoleHub:
    """The consoles of one agent's domains: ``attach`` opens a domain's
    console stream on first use, ``detach`` closes it with its last user."""

    def __init__(self, connect: Callable[[], libvirt.virConnect]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._consoles: dict[str, DomainConsole] = {}

    def attach(self, uid: str, *, user: str, writer: bool, deliver: Deliver) -> Attachment:
        with self._lock:
            console = self._consoles.get(uid)
            if console is None or console.closed:
                console = DomainConsole(self, uid)
                conn = self._connect()
                try:
                    dom = conn.lookupByUUIDString(uid)
                    state = dom.state()[0]
                    if state not in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED,
                                     libvirt.VIR_DOMAIN_BLOCKED):
                        raise ConsoleError(409, "NotRunning",
                                           "the domain is not running: its console is closed")
                    console.open(conn, dom)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                        raise ConsoleError(404, "NotFound", "no such domain on this host") from exc
                    raise ConsoleError(409, "ConsoleUnavailable",
                                       f"libvirt refused the console: {exc}") from exc
                self._consoles[uid] = console
            if writer and console.writer is not None:
                raise ConsoleBusy(console.writer.user)
            att = Attachment(console, user, writer, deliver)
            console.attachments.append(att)
            if writer:
                console.writer = att
            log.info("console of %s: %s attached (%s; %d attached)", uid, user,
                     "writer" if writer else "read-only", len(console.attachments))
            return att

    def detach(self, att: Attachment) -> None:
        with self._lock:
            console = att.console
            if att in console.attachments:
                console.attachments.remove(att)
            if console.writer is att:
                console.writer = None
            att.closed = True
            log.info("console of %s: %s detached (%d attached)", console.uid, att.user,
                     len(console.attachments))
            if not console.attachments:
                console.shutdown()
                if self._consoles.get(console.uid) is console:
                    del self._consoles[console.uid]

    def close(self, console: DomainConsole) -> None:
        """The stream ended (the domain stopped): tell everyone, forget it."""
        with self._lock:
            attachments = list(console.attachments)
            console.attachments.clear()
            console.writer = None
            console.shutdown()
            if self._consoles.get(console.uid) is console:
                del self._consoles[console.uid]
        for att in attachments:
            att.closed = True
            att.deliver(None)

    def attached(self, uid: str) -> int:
        with self._lock:
            console = self._consoles.get(uid)
            return len(console.attachments) if console else 0

    def close_all(self) -> None:
        with self._lock:
            consoles = list(self._consoles.values())
        for console in consoles:
            self.close(console)


def open_vnc(conn: libvirt.virConnect, uid: str) -> socket.socket:
    """A socket connected to the domain's VNC server (RFB), through libvirt:
    the display listens on no address at all."""
    try:
        dom = conn.lookupByUUIDString(uid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise ConsoleError(404, "NotFound", "no such domain on this host") from exc
        raise ConsoleError(503, "HypervisorError", str(exc)) from exc
    if not dom.isActive():
        raise ConsoleError(409, "NotRunning", "the domain is not running: no display")
    try:
        fd = dom.openGraphicsFD(0, libvirt.VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)
    except libvirt.libvirtError as exc:
        raise ConsoleError(409, "NoDisplay",
                           f"the domain has no VNC display ({exc}); domains defined before "
                           "Kova added one get it when they are rebuilt") from exc
    return socket.socket(fileno=fd)
