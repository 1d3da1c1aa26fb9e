"""Kova's own components as local processes for ``kova dev up``.

Placement on SQLite, the operator (standalone, no peering), one compute
agent per simulated host name (each serving its stream endpoint on
loopback) and, with ``api``, Kova's API component registered as the
subresource APIService (kova.dev.access), all against the local control
plane and the local libvirtd.  Pids, ports and tokens go to
``$KOVA_STATE/stack.json`` so ``kova dev status|down`` in another shell finds
them; logs to ``$KOVA_STATE/logs/<name>.log``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kova.dev import access, paths
from kova.dev.controlplane import ControlPlane, _pid_alive, _stop_pid, free_port, spawn_daemon

#: Where the example Image (examples/image-kova-test.yaml) expects the test image.
IMAGE_HOST_PATH = Path("/var/lib/kova/images/kova-test.qcow2")
DEFAULT_HOSTS = ("kova-dev-1", "kova-dev-2")


def kova_exe() -> list[str]:
    return [sys.executable, "-m", "kova.cli"]


@dataclass
class Stack:
    root: Path
    placement_port: int = 0
    placement_token: str = ""
    hosts: list[str] = field(default_factory=list)
    libvirt_uris: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    #: Extra command-line arguments for the operator and for every agent
    #: (tests use them for short heartbeat Leases); not saved.
    operator_args: list[str] = field(default_factory=list)
    agent_args: list[str] = field(default_factory=list)
    kubeconfig: str = ""
    namespaces: list[str] = field(default_factory=list)
    #: Start Kova's API component and register its APIService (one per API
    #: server: the test session has its own, so test stacks leave it off).
    api: bool = False
    #: Where the stream CA and certificates are (default: <root>/stream-pki);
    #: the agents trust the API component of the same directory.
    stream_pki_dir: Path | None = None
    api_port: int = 0

    @property
    def state_file(self) -> Path:
        return self.root / "stack.json"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def placement_url(self) -> str:
        return f"http://127.0.0.1:{self.placement_port}"

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({
            "placement_port": self.placement_port,
            "placement_token": self.placement_token,
            "hosts": self.hosts,
            "libvirt_uris": self.libvirt_uris,
            "pids": self.pids,
            "api_port": self.api_port,
        }, indent=2))
        self.state_file.chmod(0o600)

    @classmethod
    def load(cls, root: Path) -> "Stack":
        st = cls(root=root)
        if st.state_file.exists():
            data = json.loads(st.state_file.read_text())
            st.placement_port = data.get("placement_port", 0)
            st.placement_token = data.get("placement_token", "")
            st.hosts = list(data.get("hosts", []))
            st.libvirt_uris = dict(data.get("libvirt_uris", {}))
            st.pids = {k: int(v) for k, v in data.get("pids", {}).items()}
            st.api_port = data.get("api_port", 0)
        return st

    @property
    def stream_pki(self) -> access.StreamPKI:
        return access.ensure_stream_pki(self.stream_pki_dir or self.root / "stream-pki")

    def running(self) -> dict[str, bool]:
        return {name: _pid_alive(pid) for name, pid in self.pids.items()}

    # ------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        pid = self.pids.get(name)
        if pid and _pid_alive(pid):
            return
        self.pids[name] = spawn_daemon(argv, self.log_dir / f"{name}.log", self.root, env)
        self.save()

    def _wait_http(self, url: str, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pids.get(name)
            if pid and not _pid_alive(pid):
                raise RuntimeError(f"{name} exited; see {self.log_dir / (name + '.log')}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{name} did not answer {url} within {timeout:.0f}s")

    def start(self, cp: ControlPlane, hosts: list[str],
              progress: Callable[[str], object] = print,
              namespaces: list[str] | None = None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.hosts = hosts
        if not self.placement_token:
            self.placement_token = secrets.token_hex(20)
        token_file = self.root / "placement-tokens"
        token_file.unlink(missing_ok=True)  # created 0600, never readable by others
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"admin {self.placement_token}\n")
        if not (self.pids.get("placement") and _pid_alive(self.pids["placement"])):
            self.placement_port = free_port()
        self.save()

        progress(f"[kova] starting Placement on SQLite at {self.placement_url}")
        db = f"sqlite:///{self.root / 'placement.db'}"
        self._spawn("placement", [
            *kova_exe(), "placement", "serve", "--database-url", db,
            "--host", "127.0.0.1", "--port", str(self.placement_port),
            "--token-file", str(token_file),
            # the operator asks for --max-placement-results candidates: sample them
            "--randomize-allocation-candidates",
        ])
        self._wait_http(f"{self.placement_url}/healthz", "placement")

        self.kubeconfig = str(cp.kubeconfig)
        self.namespaces = list(namespaces or [])
        progress("[kova] starting the operator (standalone)")
        self.start_operator()

        for host in hosts:
            self.start_host_libvirt(host, progress)
            progress(f"[kova] starting the compute agent for host {host}")
            self.start_agent(host)
        if self.api:
            progress("[kova] starting the API component (subresources.kova.dev)")
            self.start_api()

    def start_api(self, timeout: float = 60.0) -> None:
        """Kova's API component on loopback, registered as the APIService."""
        if not (self.pids.get("api") and _pid_alive(self.pids["api"])):
            self.api_port = free_port()
        metrics = free_port()
        self._spawn("api", access.api_argv(self.kubeconfig, self.stream_pki, self.api_port,
                                           metrics, "--log-format", "text"))
        self._wait_http(f"http://127.0.0.1:{metrics}/healthz", "api", timeout)
        access.register(self.kubeconfig, self.stream_pki, self.api_port)
        access.wait_available(self.kubeconfig, timeout)

    def start_operator(self) -> None:
        """(Re)start the operator, e.g. after a test killed it."""
        self._spawn("operator", [
            *kova_exe(), "operator", "run", "--standalone",
            "--kubeconfig", self.kubeconfig,
            "--placement-url", self.placement_url,
            "--metrics-port", str(free_port()),
            "--log-format", "text",
            *[arg for ns in self.namespaces for arg in ("--namespace", ns)],
            *self.operator_args,
        ], env={"KOVA_OPERATOR_PLACEMENT_TOKEN": self.placement_token})

    def start_agent(self, host: str) -> None:
        """(Re)start the compute agent of ``host`` (its libvirtd must run)."""
        inst_dir = self.root / "instances" / host
        inst_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(f"agent-{host}", [
            *kova_exe(), "agent", "run", "--host", host,
            "--libvirt-uri", self.libvirt_uris[host],
            "--instance-dir", str(inst_dir),
            "--placement-url", self.placement_url,
            "--kubeconfig", self.kubeconfig,
            "--domain-type", "qemu",
            "--metrics-port", str(free_port()), "--metrics-bind", "127.0.0.1",
            "--resync-seconds", "10",
            # Images: the usual directory, and Kova's cache of the test image
            # (the files the links there point at).
            "--image-host-dir", str(IMAGE_HOST_PATH.parent),
            "--image-host-dir", str(paths.cache_dir() / "images"),
            *self.stream_pki.agent_args(),
            *self.agent_args,
        ], env={"KOVA_PLACEMENT_TOKEN": self.placement_token})  # not in argv: ps shows it

    def host_states(self) -> dict[str, str | None]:
        """Host name -> ``status.state`` of every Host the API server holds
        (``{}`` while it does not answer); read with kubectl, as a user would."""
        out = subprocess.run(
            [paths.kubectl(), "--kubeconfig", self.kubeconfig, "get", "hosts.kova.dev",
             "-o", "json"], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            return {}
        return {h["metadata"]["name"]: (h.get("status") or {}).get("state")
                for h in json.loads(out.stdout).get("items", [])}

    def wait_hosts_up(self, timeout: float = 90.0) -> dict[str, str | None]:
        """Wait until the agent of every host of the stack has registered its
        Host and the Host is Up, so the scheduler sees all of them from the
        first Instance on; return the states.  TimeoutError (with the states
        seen last) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.host_states()
            if all(states.get(h) == "Up" for h in self.hosts):
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(f"hosts not all Up after {timeout:.0f}s: {states}")
            time.sleep(0.5)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one of the stack's processes ("agent-<host>",
        "operator", "libvirtd-<host>", ...) and wait until it is gone."""
        pid = self.pids.pop(name)
        self.save()
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 20
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid):
            raise RuntimeError(f"{name} (pid {pid}) did not exit after signal {sig}")

    def start_host_libvirt(self, host: str, progress: Callable[[str], object] = print) -> str:
        """A private libvirtd per simulated host (hack/start-libvirt-host.sh):
        each agent owns its hypervisor, as on separate nodes."""
        progress(f"[kova] starting a private libvirtd for host {host}")
        root = self.root / "libvirt"
        uri = paths.run_hack("start-libvirt-host.sh", host, str(root))
        for daemon in ("libvirtd", "virtlogd"):
            pidfile = root / host / f"{daemon}.pid"
            if pidfile.exists():
                self.pids[f"{daemon}-{host}"] = int(pidfile.read_text().strip())
        self.libvirt_uris[host] = uri
        self.save()
        return uri

    def stop(self) -> None:
        # the API component, the agents (they leave running domains alone),
        # then the operator, Placement, and last the hosts' libvirt daemons
        def rank(name: str) -> int:
            for i, prefix in enumerate(("api", "agent-", "operator", "placement", "libvirtd-")):
                if name.startswith(prefix):
                    return i
            return 5

        order = sorted(self.pids, key=rank)
        for name in order:
            _stop_pid(self.pids[name])
        self.pids = {}
        if self.root.exists():
            self.save()


def link_test_image(image: Path, dest: Path = IMAGE_HOST_PATH) -> Path:
    """Put the test image where ``examples/image-kova-test.yaml`` expects it
    (or at ``dest``): a hard link to the cached build -- a copy across file
    systems -- never a symbolic link, because an agent in a pod mounts only
    that directory (``agent.hostImageDir``) and a link out of it dangles there."""
    src = Path(image).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and not dest.is_symlink() and os.path.samefile(src, dest):
        return dest  # (renaming a hard link over itself would leave the temporary name)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return dest


def stack_dir() -> Path:
    return paths.state_dir() / "stack"
