"""``kubectl kova console``: the serial console in this terminal, and
``kubectl kova vnc``: a local port for any VNC viewer.  Both are websockets
through the Kubernetes API server to Kova's API component."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import websocket

from kova.plugin.client import Cluster, PluginError

#: Ctrl+] ends a console session, as in telnet and virsh console.
ESCAPE = b"\x1d"


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The terminal in raw mode (every key goes to the guest, Ctrl+C too)
    and back as it was, whatever happens."""
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def console(cluster: Cluster, namespace: str, name: str, read_only: bool) -> int:
    what = f"console of instance {namespace}/{name}"
    ws = cluster.websocket(cluster.subresource_path(namespace, name, "console"), what,
                           {"mode": "read" if read_only else "write"})
    ws.settimeout(None)
    mode = "read-only" if read_only else "read-write"
    sys.stderr.write(f"Connected to the serial console of {namespace}/{name} ({mode}).\r\n"
                     "Press Enter for a prompt; Ctrl+] detaches (the VM keeps running).\r\n")
    sys.stderr.flush()
    closed = threading.Event()
    why: list[str] = []

    def receive() -> None:
        out = sys.stdout.buffer
        try:
            while True:
                opcode, data = ws.recv_data(control_frame=False)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    reason = data[2:].decode(errors="replace") if len(data) > 2 else ""
                    why.append(reason or "the console closed")
                    break
                out.write(data)
                out.flush()
        except (websocket.WebSocketException, OSError) as exc:
            why.append(f"connection lost: {exc}")
        finally:
            closed.set()

    reader = threading.Thread(target=receive, name="console-receive", daemon=True)
    reader.start()
    fd = sys.stdin.fileno()
    with raw_terminal(fd):
        while not closed.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(fd, 4096)
            if not data:  # end of input (a pipe): detach
                break
            if ESCAPE in data:
                data = data.split(ESCAPE, 1)[0]
                if data and not read_only:
                    ws.send_binary(data)
                why.append("detached")
                break
            if not read_only:
                try:
                    ws.send_binary(data)
                except (websocket.WebSocketException, OSError):
                    break
    with contextlib.suppress(websocket.WebSocketException, OSError):
        ws.close()
    closed.wait(2)
    sys.stderr.write(f"\r\n[{why[0] if why else 'detached'}]\r\n")
    return 0


# --------------------------------------------------------------------------- vnc
VIEWERS = ("remote-viewer", "vncviewer", "xtightvncviewer", "gvncviewer", "krdc")


def _pipe_socket(ws: websocket.WebSocket, conn: socket.socket) -> None:
    """RFB both ways between a viewer's connection and the websocket."""

    def down() -> None:
        try:
            while True:
                opcode, data = ws.recv_data(control_frame=False)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
                conn.sendall(data)
        except (websocket.WebSocketException, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    t = threading.Thread(target=down, name="vnc-down", daemon=True)
    t.start()
    try:
        while data := conn.recv(65536):
            ws.send_binary(data)
    except (websocket.WebSocketException, OSError):
        pass
    finally:
        with contextlib.suppress(websocket.WebSocketException, OSError):
            ws.close()
        conn.close()
        t.join(2)


def vnc(cluster: Cluster, namespace: str, name: str, address: str, port: int,
        proxy_only: bool) -> int:
    what = f"VNC display of instance {namespace}/{name}"
    path = cluster.subresource_path(namespace, name, "vnc")
    # Refuse at once (not running, forbidden...) rather than at the viewer's connect.
    cluster.websocket(path, what).close()
    listener = socket.create_server((address, port))
    host, bound = listener.getsockname()[:2]
    print(f"VNC display of {namespace}/{name} on {host}:{bound} (vncviewer {host}::{bound})",
          flush=True)
    viewer = None
    if not proxy_only:
        exe = next((v for v in VIEWERS if shutil.which(v)), None)
        if exe is None:
            print("no VNC viewer found on PATH (" + ", ".join(VIEWERS) + "): connect one to "
                  "the address above; Ctrl+C stops", file=sys.stderr, flush=True)
        else:
            target = f"vnc://{host}:{bound}" if exe == "remote-viewer" else f"{host}::{bound}"
            viewer = subprocess.Popen([exe, target])
    else:
        print("Ctrl+C stops", file=sys.stderr, flush=True)
    # Ctrl+C is how this command ends: Python leaves SIGINT ignored when the
    # process inherited it so (a background job of a non-interactive shell
    # or a script is started that way), and the proxy then never stopped.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    listener.settimeout(0.5)
    try:
        while viewer is None or viewer.poll() is None:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                ws = cluster.websocket(path, what)
            except PluginError as exc:
                print(f"error: {exc.message}", file=sys.stderr, flush=True)
                conn.close()
                continue
            ws.settimeout(None)
            threading.Thread(target=_pipe_socket, args=(ws, conn), name="vnc", daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
        if viewer is not None and viewer.poll() is None:
            viewer.terminate()
    return 0
