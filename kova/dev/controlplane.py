"""A local Kubernetes control plane without Docker.

Runs etcd + kube-apiserver (+ kube-controller-manager) as plain processes on
free loopback ports, the way envtest does, with RBAC on, static tokens for an
admin and for the controller manager, service-account signing keys, and a
kubeconfig.  The binaries come from ``hack/build-control-plane.sh``, which
builds them from the Go module proxy and caches them under
``~/.cache/kova/bin``.

With ``node_name`` set it is the control plane of a cluster with a real node
(``kova.dev.node``): the API server listens on the node's address instead of
loopback (pods reach it there through the ``kubernetes`` Service), authorizes
kubelets with the Node authorizer, talks to the kubelet with a client
certificate, and a kube-scheduler runs beside the controller manager, whose
volume and node-lifecycle controllers are on.

Used by ``kova dev up`` (persistent, under ``KOVA_STATE``) and by the test
session fixture (throw-away, under a temporary directory).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kova.dev import paths
from kova.dev.pki import FRONT_PROXY_CLIENT, ensure_front_proxy_pki, ensure_pki, issue_client_cert

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
#: The cluster's Service range; the API server's Service is its first address.
SERVICE_CIDR = "10.0.0.0/24"
#: Controllers a cluster without nodes does without (no kubelet, no volumes).
NO_NODE_CONTROLLERS = ("nodeipam", "nodelifecycle", "cloud-node-lifecycle", "service", "route",
                       "persistentvolume-binder", "attachdetach", "persistentvolume-expander",
                       "ephemeral-volume", "bootstrapsigner", "tokencleaner")
#: With a node: PersistentVolumes bind, node conditions and taints are managed;
#: pod CIDRs are the CNI configuration's (no nodeipam), no cloud.
NODE_CONTROLLERS_OFF = ("nodeipam", "cloud-node-lifecycle", "service", "route",
                        "bootstrapsigner", "tokencleaner")


class ControlPlaneError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_binaries(progress: Callable[[str], object] = print) -> Path:
    """Build (first time) or reuse the cached control-plane binaries."""
    bindir = paths.bin_dir()
    if all((bindir / b).exists() for b in BINARIES):
        return bindir
    script = paths.hack_dir() / "build-control-plane.sh"
    if not script.exists():
        raise ControlPlaneError(
            f"control-plane binaries missing in {bindir} and {script} not found"
        )
    progress(f"[kova] building the control plane (cached in {bindir}) ...")
    subprocess.run(["bash", str(script)], check=True)
    return bindir


def ensure_binaries_for(bindir: Path, name: str,
                        progress: Callable[[str], object] = print) -> Path:
    """The cached binary ``name`` (kube-scheduler, kubelet, kube-proxy),
    built by ``hack/build-control-plane.sh`` when missing."""
    exe = bindir / name
    if not exe.exists():
        progress(f"[kova] building {name} (cached in {bindir}) ...")
        subprocess.run(["bash", str(paths.hack_dir() / "build-control-plane.sh"), name],
                       check=True)
    return exe


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still "exists": look at its state
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def spawn_daemon(argv: list[str], log_path: Path, cwd: Path,
                 env: dict[str, str] | None = None) -> int:
    """Start ``argv`` in its own session (so it outlives the caller and its
    whole process group can be stopped), output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=cwd,
            env=None if env is None else {**os.environ, **env},
        )
    return proc.pid


def _stop_pid(pid: int, timeout: float = 15.0) -> None:
    if not _pid_alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


@dataclass
class ControlPlane:
    """One etcd + kube-apiserver (+ controller manager) on loopback.

    ``workdir`` holds everything: etcd data, PKI, tokens, logs, the kubeconfig
    and ``state.json`` (ports and pids), so another process -- ``kova dev
    status`` / ``down`` -- can find and stop a running stack.
    """

    workdir: Path
    controller_manager: bool = True
    bindir: Path | None = None
    etcd_port: int = 0
    etcd_peer_port: int = 0
    apiserver_port: int = 0
    kcm_port: int = 0
    admin_token: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    #: Where the API server listens and what it advertises (the node's
    #: address when pods must reach it).
    address: str = "127.0.0.1"
    #: The node of the cluster (``kova.dev.node``), or "" for none.
    node_name: str = ""
    scheduler_port: int = 0

    # ------------------------------------------------------------------ paths
    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.apiserver_port}"

    @property
    def token(self) -> str:
        return self.admin_token

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def state_file(self) -> Path:
        return self.workdir / "state.json"

    # ------------------------------------------------------------------ state
    def _save_state(self) -> None:
        self.state_file.write_text(
            json.dumps(
                {
                    "etcd_port": self.etcd_port,
                    "etcd_peer_port": self.etcd_peer_port,
                    "apiserver_port": self.apiserver_port,
                    "kcm_port": self.kcm_port,
                    "admin_token": self.admin_token,
                    "pids": self.pids,
                    "address": self.address,
                    "node_name": self.node_name,
                    "scheduler_port": self.scheduler_port,
                },
                indent=2,
            )
        )
        self.state_file.chmod(0o600)

    @classmethod
    def load(cls, workdir: Path) -> "ControlPlane | None":
        state_file = workdir / "state.json"
        if not state_file.exists():
            return None
        data = json.loads(state_file.read_text())
        cp = cls(workdir=workdir)
        cp.etcd_port = data["etcd_port"]
        cp.etcd_peer_port = data["etcd_peer_port"]
        cp.apiserver_port = data["apiserver_port"]
        cp.kcm_port = data.get("kcm_port", 0)
        cp.admin_token = data["admin_token"]
        cp.pids = {k: int(v) for k, v in data.get("pids", {}).items()}
        cp.address = data.get("address", "127.0.0.1")
        cp.node_name = data.get("node_name", "")
        cp.scheduler_port = data.get("scheduler_port", 0)
        return cp

    def running(self) -> dict[str, bool]:
        return {name: _pid_alive(pid) for name, pid in self.pids.items()}

    # -------------------------------------------------------------- lifecycle
    def _spawn(self, name: str, argv: list[str]) -> int:
        pid = spawn_daemon(argv, self.log_dir / f"{name}.log", cwd=self.workdir)
        self.pids[name] = pid
        self._save_state()
        return pid

    def _tokens(self) -> Path:
        """Static tokens: an admin (system:masters) and the controller manager;
        with a node also the scheduler, kube-proxy and the node's kubelet
        (user ``system:node:<name>`` in ``system:nodes``, for the Node
        authorizer)."""
        token_file = self.workdir / "tokens.csv"
        users = {"kova-admin": '"system:masters"',
                 "system:kube-controller-manager": ""}
        if self.node_name:
            users.update({"system:kube-scheduler": "", "system:kube-proxy": "",
                          f"system:node:{self.node_name}": '"system:nodes"'})
        rows: list[list[str]] = []
        if token_file.exists():
            rows = [line.split(",") for line in token_file.read_text().splitlines() if line]
        have = {r[1] for r in rows}
        missing = [u for u in users if u not in have]
        if missing:
            with open(token_file, "a") as f:
                for user in missing:
                    groups = f",{users[user]}" if users[user] else ""
                    f.write(f"{secrets.token_hex(24)},{user},{user}{groups}\n")
            token_file.chmod(0o600)
        self.admin_token = self._token_for("kova-admin")
        return token_file

    def _token_for(self, user: str) -> str:
        for line in (self.workdir / "tokens.csv").read_text().splitlines():
            parts = line.split(",")
            if len(parts) > 1 and parts[1] == user:
                return parts[0]
        raise KeyError(user)

    def write_kubeconfig(self, path: Path, token: str, user: str = "kova-admin") -> Path:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kova-dev",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.ca_file),
                    },
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {"name": "kova-dev", "context": {"cluster": "kova-dev", "user": user}}
            ],
            "current-context": "kova-dev",
        }
        path.write_text(json.dumps(cfg, indent=2))
        path.chmod(0o600)
        return path

    def _pki(self) -> dict[str, Path]:
        extra = () if self.address == "127.0.0.1" else (self.address,)
        return ensure_pki(self.workdir / "pki", extra_ips=extra)

    def start(self, timeout: float = 120.0,
              progress: Callable[[str], object] = lambda msg: None) -> "ControlPlane":
        self.workdir.mkdir(parents=True, exist_ok=True)
        bindir = self.bindir or ensure_binaries(progress)
        pki = self._pki()
        token_file = self._tokens()
        self.etcd_port = self.etcd_port or free_port()
        self.etcd_peer_port = self.etcd_peer_port or free_port()
        self.apiserver_port = self.apiserver_port or free_port()
        self.kcm_port = self.kcm_port or free_port()
        if self.node_name:
            self.scheduler_port = self.scheduler_port or free_port()

        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        progress(f"[kova] starting etcd on {etcd_url}")
        self._spawn_etcd(bindir, etcd_url)
        self._wait(lambda: self._http_ok(f"{etcd_url}/health"), timeout, "etcd")

        progress(f"[kova] starting kube-apiserver on {self.server}")
        self._spawn_apiserver(bindir, pki, token_file, etcd_url)
        self.write_kubeconfig(self.kubeconfig, self.admin_token)
        self._wait(self._apiserver_ready, timeout, "kube-apiserver")

        if self.controller_manager:
            progress("[kova] starting kube-controller-manager")
            self._spawn_controller_manager(bindir, pki)
            self._wait(self._kcm_alive, 15, "kube-controller-manager", settle=True)
        if self.node_name:
            progress("[kova] starting kube-scheduler")
            self.start_scheduler(bindir)
        progress(f"[kova] control plane ready; kubeconfig: {self.kubeconfig}")
        return self

    def _spawn_etcd(self, bindir: Path, etcd_url: str) -> None:
        peer_url = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._spawn(
            "etcd",
            [
                str(bindir / "etcd"),
                "--name", "kova",
                "--data-dir", str(self.workdir / "etcd"),
                "--listen-client-urls", etcd_url,
                "--advertise-client-urls", etcd_url,
                "--listen-peer-urls", peer_url,
                "--initial-advertise-peer-urls", peer_url,
                "--initial-cluster", f"kova={peer_url}",
                "--unsafe-no-fsync",
                "--log-level", "warn",
            ],
        )

    def _spawn_controller_manager(self, bindir: Path, pki: dict) -> None:
        kcm_kubeconfig = self.write_kubeconfig(
            self.workdir / "kcm.kubeconfig",
            self._token_for("system:kube-controller-manager"),
            user="system:kube-controller-manager",
        )
        off = NODE_CONTROLLERS_OFF if self.node_name else NO_NODE_CONTROLLERS
        controllers = ",".join(["*", *(f"-{c}" for c in off)])
        self._spawn(
            "kube-controller-manager",
            [
                str(bindir / "kube-controller-manager"),
                "--kubeconfig", str(kcm_kubeconfig),
                "--bind-address", "127.0.0.1",
                "--secure-port", str(self.kcm_port),
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                "--service-account-private-key-file", str(pki["sa_key"]),
                "--root-ca-file", str(pki["ca_crt"]),
                "--cluster-signing-cert-file", str(pki["ca_crt"]),
                "--cluster-signing-key-file", str(pki["ca_key"]),
                "--service-cluster-ip-range", SERVICE_CIDR,
                # keep it from creating /usr/libexec/kubernetes/... on the host
                "--flex-volume-plugin-dir", str(self.workdir / "flex"),
                "--controllers", controllers,
                "--v", "1",
            ],
        )

    def start_scheduler(self, bindir: Path) -> None:
        sched_kubeconfig = self.write_kubeconfig(
            self.workdir / "scheduler.kubeconfig", self._token_for("system:kube-scheduler"),
            user="system:kube-scheduler")
        self._spawn(
            "kube-scheduler",
            [
                str(ensure_binaries_for(bindir, "kube-scheduler")),
                "--kubeconfig", str(sched_kubeconfig),
                "--authentication-kubeconfig", str(sched_kubeconfig),
                "--authorization-kubeconfig", str(sched_kubeconfig),
                "--bind-address", "127.0.0.1",
                "--secure-port", str(self.scheduler_port),
                "--leader-elect=false",
                "--v", "1",
            ],
        )
        self._wait(lambda: self._alive("kube-scheduler"), 15, "kube-scheduler", settle=True)

    def kubeconfig_for(self, user: str, path: Path) -> Path:
        """A kubeconfig for one of the static-token users (the node's
        kubelet, kube-proxy)."""
        return self.write_kubeconfig(path, self._token_for(user), user=user)

    def _authorization_args(self) -> list[str]:
        """RBAC; with a node also the Node authorizer, NodeRestriction and the
        client certificate the API server presents to the kubelet."""
        if not self.node_name:
            # NodeRestriction and the Node authorizer as on a real cluster:
            # a node's credentials may write its own Node, and no label under
            # node-restriction.kubernetes.io/ (the agents' node selector)
            return ["--authorization-mode", "Node,RBAC",
                    "--enable-admission-plugins", "NodeRestriction"]
        kubelet_client = issue_client_cert(
            self.workdir / "pki", "kube-apiserver-kubelet-client", ("system:masters",))
        return [
            "--authorization-mode", "Node,RBAC",
            "--enable-admission-plugins", "NodeRestriction",
            "--kubelet-client-certificate", str(kubelet_client["crt"]),
            "--kubelet-client-key", str(kubelet_client["key"]),
            "--kubelet-preferred-address-types", "InternalIP",
        ]

    def _spawn_apiserver(self, bindir: Path, pki: dict, token_file: Path, etcd_url: str) -> None:
        proxy = ensure_front_proxy_pki(self.workdir / "pki")
        self._spawn(
            "kube-apiserver",
            [
                str(bindir / "kube-apiserver"),
                "--etcd-servers", etcd_url,
                "--bind-address", self.address,
                "--advertise-address", self.address,
                "--secure-port", str(self.apiserver_port),
                "--tls-cert-file", str(pki["apiserver_crt"]),
                "--tls-private-key-file", str(pki["apiserver_key"]),
                "--client-ca-file", str(pki["ca_crt"]),
                "--token-auth-file", str(token_file),
                *self._authorization_args(),
                "--service-account-issuer", "https://kubernetes.default.svc",
                "--service-account-key-file", str(pki["sa_pub"]),
                "--service-account-signing-key-file", str(pki["sa_key"]),
                "--api-audiences", "https://kubernetes.default.svc",
                "--service-cluster-ip-range", SERVICE_CIDR,
                "--allow-privileged",
                "--enable-priority-and-fairness=false",
                "--cert-dir", str(self.workdir / "apiserver-certs"),
                # Aggregated APIs (Kova's subresource API): the API server
                # proxies to them with this client certificate and passes the
                # user in these headers. No --enable-aggregator-routing: the
                # local APIService points at an ExternalName Service
                # (127.0.0.1 is not a valid Endpoints address), which only the
                # default (service) routing resolves.
                "--requestheader-client-ca-file", str(proxy["front_proxy_ca_crt"]),
                "--requestheader-allowed-names", FRONT_PROXY_CLIENT,
                "--requestheader-username-headers", "X-Remote-User",
                "--requestheader-group-headers", "X-Remote-Group",
                "--requestheader-extra-headers-prefix", "X-Remote-Extra-",
                "--proxy-client-cert-file", str(proxy["front_proxy_client_crt"]),
                "--proxy-client-key-file", str(proxy["front_proxy_client_key"]),
                "--v", "1",
            ],
        )

    def stop_apiserver(self) -> None:
        """Stop only kube-apiserver (etcd keeps the data): fault tests."""
        pid = self.pids.pop("kube-apiserver", None)
        if pid:
            _stop_pid(pid)
        self._save_state()

    def start_apiserver(self, timeout: float = 120.0) -> None:
        """Start kube-apiserver again on the same port, etcd and PKI."""
        bindir = self.bindir or ensure_binaries(lambda msg: None)
        self._spawn_apiserver(bindir, self._pki(), self._tokens(),
                              f"http://127.0.0.1:{self.etcd_port}")
        self._wait(self._apiserver_ready, timeout, "kube-apiserver")

    def stop(self) -> None:
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            pid = self.pids.get(name)
            if pid:
                _stop_pid(pid)
        self.pids = {}
        if self.workdir.exists():
            self._save_state()

    def destroy(self) -> None:
        """Stop everything and remove the working directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _apiserver_ready(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=3, context=ctx) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _kcm_alive(self) -> bool:
        return self._alive("kube-controller-manager")

    def _alive(self, name: str) -> bool:
        pid = self.pids.get(name)
        return pid is not None and _pid_alive(pid)

    def _wait(self, check: Callable[[], bool], timeout: float, what: str,
              settle: bool = False) -> None:
        deadline = time.monotonic() + timeout
        if settle:  # the process must stay up for a moment
            time.sleep(1.0)
        while time.monotonic() < deadline:
            for name, pid in self.pids.items():
                if not _pid_alive(pid):
                    tail = self._log_tail(name)
                    raise ControlPlaneError(f"{name} exited during start-up:\n{tail}")
            if check():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"{what} not ready after {timeout:.0f}s:\n{self._log_tail(what)}")

    def _log_tail(self, name: str, lines: int = 30) -> str:
        log = self.log_dir / f"{name}.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
