"""A real Kubernetes node on this machine, without Docker.

``Node`` turns the local control plane (``kova.dev.controlplane`` with
``node_name`` set) into a one-node cluster that runs pods:

* **containerd + runc** (Debian's packages) as a daemon of Kova's own --
  socket ``/run/kova-node/containerd.sock``, images and snapshots in
  ``/var/lib/kova-node/containerd`` -- so a containerd the machine may run for
  something else is never touched.  Its CRI plugin uses the pause image built
  here (``hack/build-images.sh``) and ``restrict_oom_score_adj`` (a root
  without CAP_SYS_RESOURCE cannot lower OOM scores).
* **CNI**: Debian's ``bridge`` and ``host-local`` plugins on the bridge
  ``kova0`` with ``10.244.0.1/24``; the bridge's address is the node's
  address and the API server's.  Pods get routes to the pod and Service
  ranges only -- no default route, nothing leaves the machine.
* **kubelet** and **kube-proxy** (nftables mode: one nftables table of its
  own, removed on stop) built from the same Kubernetes release as the API
  server (``hack/build-control-plane.sh``).
* **CoreDNS** (``hack/build-coredns.sh``) as a Deployment behind the Service
  ``kube-dns`` at ``10.0.0.10``, serving ``cluster.local``.
* A default StorageClass ``kova-local`` (no provisioner) with local
  PersistentVolumes on this node, so StatefulSets' claims bind.

Images never come from a registry: ``hack/build-images.sh`` builds them and
:meth:`Node.import_images` imports its OCI archives into containerd.

One node runs on a machine at a time (the kubelet kills containers it does
not know); :class:`NodeBusy` says which state directory owns it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import string
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kova.dev import paths
from kova.dev.controlplane import (
    ControlPlane,
    _pid_alive,
    _stop_pid,
    ensure_binaries_for,
    free_port,
    spawn_daemon,
)

NODE_NAME = "kova-node"
NODE_ADDRESS = "10.244.0.1"
POD_SUBNET = "10.244.0.0/24"
#: Routes the pods get (pod range and Service range), through the bridge.
POD_ROUTES = ("10.244.0.0/16", "10.0.0.0/24")
BRIDGE = "kova0"
DNS_SERVICE_IP = "10.0.0.10"
CLUSTER_DOMAIN = "cluster.local"

MACHINE_ROOT = Path(os.environ.get("KOVA_NODE_ROOT", "/var/lib/kova-node"))
RUN_ROOT = Path("/run/kova-node")
CONTAINERD_SOCKET = RUN_ROOT / "containerd.sock"
OWNER_FILE = RUN_ROOT / "owner.json"
CNI_BIN_DIR = "/usr/lib/cni"

PAUSE_IMAGE = "localhost/kova/pause:1.0"
STORAGE_CLASS = "kova-local"
ADDONS_DIR = Path(__file__).with_name("addons")
Progress = Callable[[str], object]


#: containerd 1.6 (Debian 12), configuration version 2.
CONTAINERD_CONFIG = """\
# Kova's local node (kova/dev/node.py): containerd of its own, CRI for the kubelet.
version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  # root without CAP_SYS_RESOURCE cannot give a sandbox the negative OOM
  # score the kubelet asks for; clamp it instead of failing the sandbox
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir}"
    conf_dir = "{cni_conf_dir}"
"""


class NodeError(RuntimeError):
    pass


class NodeBusy(NodeError):
    pass


def _run(argv: list[str], check: bool = True, timeout: float = 120,
         input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc


def build_images(names: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 progress: Progress = print) -> dict[str, Path]:
    """Run ``hack/build-images.sh`` (cached: instant when nothing changed);
    return ``{reference: OCI archive}``."""
    progress(f"[kova] building (or reusing) the images {', '.join(names) or 'all'} "
             "(hack/build-images.sh; minutes on a cold cache)")
    proc = subprocess.run(["bash", str(paths.hack_dir() / "build-images.sh"), *names],
                          stdout=subprocess.PIPE, stderr=None, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise NodeError(f"hack/build-images.sh failed with exit code {proc.returncode}")
    out: dict[str, Path] = {}
    for line in proc.stdout.splitlines():
        ref, _, archive = line.strip().partition(" ")
        if archive:
            out[ref] = Path(archive)
    return out


def archive_digest(archive: Path) -> str:
    """The manifest digest of a single-image OCI archive."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise NodeError(f"{archive}: no index.json")
        index = json.load(member)
    return index["manifests"][0]["digest"]


def ctr(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """``ctr`` against the node's containerd, in the CRI namespace ``k8s.io``."""
    return _run(["ctr", "--address", str(CONTAINERD_SOCKET), "--namespace", "k8s.io", *args],
                check=check, timeout=timeout)


def _render(template: str, **values: str) -> str:
    return string.Template((ADDONS_DIR / template).read_text()).substitute(values)


@dataclass
class Node:
    """The kubelet, kube-proxy, containerd and cluster DNS of one node.

    ``workdir`` holds this node's state: the kubelet's root directory,
    configurations, logs, the local volumes and ``node.json`` (pids), so that
    ``kova dev status|down`` in another shell finds a running node.
    """

    workdir: Path
    name: str = NODE_NAME
    pids: dict[str, int] = field(default_factory=dict)
    kubelet_port: int = 0
    #: Local PersistentVolumes to offer (each ``volume_size``).
    volumes: int = 2
    volume_size: str = "8Gi"

    # ------------------------------------------------------------------ paths
    @property
    def state_file(self) -> Path:
        return self.workdir / "node.json"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def kubelet_dir(self) -> Path:
        return self.workdir / "kubelet"

    def save(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(
            {"name": self.name, "pids": self.pids, "kubelet_port": self.kubelet_port}, indent=2))

    @classmethod
    def load(cls, workdir: Path) -> "Node | None":
        state = workdir / "node.json"
        if not state.exists():
            return None
        data = json.loads(state.read_text())
        return cls(workdir=workdir, name=data.get("name", NODE_NAME),
                   pids={k: int(v) for k, v in data.get("pids", {}).items()},
                   kubelet_port=data.get("kubelet_port", 0))

    def running(self) -> dict[str, bool]:
        return {name: _pid_alive(pid) for name, pid in self.pids.items()}

    # ------------------------------------------------------- machine set-up
    @staticmethod
    def check_machine() -> None:
        """What the node needs of the machine; a clear error otherwise."""
        if os.geteuid() != 0:
            raise NodeError("a local node needs root (containerd, kubelet, bridge, nftables)")
        for tool in ("containerd", "runc", "ctr", "nft", "ip"):
            if shutil.which(tool) is None:
                raise NodeError(f"{tool} is missing: run hack/install-system-packages.sh")
        if not Path(CNI_BIN_DIR, "bridge").exists():
            raise NodeError(f"no CNI plugins in {CNI_BIN_DIR}: install containernetworking-plugins")

    @staticmethod
    def ensure_bridge() -> None:
        """The bridge ``kova0`` with the node's address (the CNI bridge plugin
        reuses it); IPv4 forwarding on, bridged traffic through netfilter (so
        kube-proxy sees pod-to-pod Service traffic)."""
        if _run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
            _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        addrs = _run(["ip", "-4", "-o", "addr", "show", "dev", BRIDGE]).stdout
        if f" {NODE_ADDRESS}/" not in addrs:
            _run(["ip", "addr", "add", f"{NODE_ADDRESS}/24", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])
        for key, want in (("net/ipv4/ip_forward", "1"),
                          ("net/bridge/bridge-nf-call-iptables", "1")):
            path = Path("/proc/sys") / key
            if not path.exists():
                raise NodeError(f"{path} is missing (br_netfilter?): bridged Service traffic "
                                "would bypass kube-proxy")
            if path.read_text().strip() != want:
                path.write_text(want)

    @staticmethod
    def remove_bridge() -> None:
        _run(["ip", "link", "del", BRIDGE], check=False)

    def _containerd_config(self) -> Path:
        cfg = MACHINE_ROOT / "containerd.toml"
        cni_conf = MACHINE_ROOT / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        text = CONTAINERD_CONFIG.format(
            root=MACHINE_ROOT / "containerd", state=RUN_ROOT / "containerd",
            socket=CONTAINERD_SOCKET, pause_image=PAUSE_IMAGE, cni_bin_dir=CNI_BIN_DIR,
            cni_conf_dir=cni_conf)
        if not cfg.exists() or cfg.read_text() != text:
            cfg.write_text(text)
        (cni_conf / "10-kova.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0",
            "name": "kova",
            "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "dataDir": str(MACHINE_ROOT / "cni" / "ipam"),
                         "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_ADDRESS}]],
                         "routes": [{"dst": r} for r in POD_ROUTES]},
            }],
        }, indent=2))
        return cfg

    @staticmethod
    def containerd_alive() -> bool:
        """containerd answers on the node's socket (a stale socket file of a
        stopped containerd refuses the connection at once)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(str(CONTAINERD_SOCKET))
        except OSError:
            return False
        return _run(["ctr", "--address", str(CONTAINERD_SOCKET), "version"], check=False,
                    timeout=20).returncode == 0

    def ensure_containerd(self, progress: Progress = print) -> None:
        """Start Kova's containerd unless it answers already."""
        RUN_ROOT.mkdir(parents=True, exist_ok=True)
        (MACHINE_ROOT / "containerd").mkdir(parents=True, exist_ok=True)
        cfg = self._containerd_config()
        if self.containerd_alive():
            return
        progress(f"[kova] starting containerd ({CONTAINERD_SOCKET})")
        self.pids["containerd"] = spawn_daemon(["containerd", "--config", str(cfg)],
                                               self.log_dir / "containerd.log", self.workdir)
        self.save()
        deadline = time.monotonic() + 60
        while not self.containerd_alive():
            if not _pid_alive(self.pids["containerd"]) or time.monotonic() > deadline:
                raise NodeError("containerd did not start:\n" + self._log_tail("containerd"))
            time.sleep(0.2)

    def import_images(self, images: dict[str, Path], progress: Progress = print) -> None:
        """Import OCI archives into containerd unless the same image (by
        digest) is there under that name."""
        have: dict[str, str] = {}
        for line in ctr("images", "ls").stdout.splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 3:
                have[cols[0]] = cols[2]
        for ref, archive in images.items():
            if have.get(ref) == archive_digest(archive):
                continue
            t0 = time.monotonic()
            ctr("images", "import", str(archive), timeout=600)
            progress(f"[kova] imported {ref} into containerd ({time.monotonic() - t0:.1f}s)")

    # ------------------------------------------------------------ lifecycle
    def _claim(self) -> None:
        RUN_ROOT.mkdir(parents=True, exist_ok=True)
        if OWNER_FILE.exists():
            owner = json.loads(OWNER_FILE.read_text())
            other = Node.load(Path(owner["workdir"]))
            if (Path(owner["workdir"]) != self.workdir and other is not None
                    and other.pids.get("kubelet") and _pid_alive(other.pids["kubelet"])):
                raise NodeBusy(f"a Kova node already runs on this machine (state in "
                               f"{owner['workdir']}); stop it first (kova dev down --node)")
        OWNER_FILE.write_text(json.dumps({"workdir": str(self.workdir)}))

    def prepare(self, images: dict[str, Path], progress: Progress = print) -> None:
        """Everything before the control plane starts: the bridge (the API
        server listens on its address), containerd and the images."""
        self.check_machine()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._claim()
        self.ensure_bridge()
        self.ensure_containerd(progress)
        self.import_images(images, progress)

    def start(self, cp: ControlPlane, progress: Progress = print, timeout: float = 180) -> None:
        """kubelet, kube-proxy, cluster DNS and local volumes; returns once
        the node is Ready and DNS answers."""
        if cp.node_name != self.name or cp.address != NODE_ADDRESS:
            raise NodeError(f"the control plane must be started with node_name={self.name!r} "
                            f"and address={NODE_ADDRESS!r}")
        bindir = cp.bindir or paths.bin_dir()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.kubelet_port = self.kubelet_port or free_port()
        kubelet_cfg = self.workdir / "kubelet.yaml"
        kubelet_cfg.write_text(_render(
            "kubelet.yaml", socket=str(CONTAINERD_SOCKET), address=NODE_ADDRESS,
            port=str(self.kubelet_port), healthz_port=str(free_port()),
            client_ca=str(cp.ca_file), dns=DNS_SERVICE_IP, domain=CLUSTER_DOMAIN,
            pod_logs=str(self.workdir / "pod-logs"),
            volume_plugins=str(self.workdir / "volume-plugins")))
        kubelet_kc = cp.kubeconfig_for(f"system:node:{self.name}",
                                       self.workdir / "kubelet.kubeconfig")
        progress(f"[kova] starting the kubelet of node {self.name} ({NODE_ADDRESS})")
        self._spawn("kubelet", [
            str(ensure_binaries_for(bindir, "kubelet", progress)),
            "--config", str(kubelet_cfg), "--kubeconfig", str(kubelet_kc),
            "--root-dir", str(self.kubelet_dir), "--hostname-override", self.name,
            "--node-ip", NODE_ADDRESS, "--v", "1",
        ])
        proxy_cfg = self.workdir / "kube-proxy.yaml"
        proxy_kc = cp.kubeconfig_for("system:kube-proxy", self.workdir / "kube-proxy.kubeconfig")
        proxy_cfg.write_text(_render(
            "kube-proxy.yaml", kubeconfig=str(proxy_kc), node=self.name,
            healthz=f"127.0.0.1:{free_port()}", metrics=f"127.0.0.1:{free_port()}",
            pod_subnet=POD_SUBNET, node_address=NODE_ADDRESS))
        progress("[kova] starting kube-proxy (nftables)")
        self._spawn("kube-proxy", [
            str(ensure_binaries_for(bindir, "kube-proxy", progress)),
            "--config", str(proxy_cfg), "--v", "1",
        ])
        self.wait_ready(cp, timeout)
        progress(f"[kova] node {self.name} Ready")
        self.apply_addons(cp)
        self.wait_dns(cp, timeout)
        progress(f"[kova] cluster DNS ready ({DNS_SERVICE_IP}, {CLUSTER_DOMAIN})")

    def _spawn(self, name: str, argv: list[str]) -> None:
        pid = self.pids.get(name)
        if pid and _pid_alive(pid):
            return
        self.pids[name] = spawn_daemon(argv, self.log_dir / f"{name}.log", self.workdir)
        self.save()

    def kubectl(self, cp: ControlPlane, *args: str, check: bool = True, timeout: float = 60,
                input: str | None = None) -> subprocess.CompletedProcess:
        return _run([paths.kubectl(), "--kubeconfig", str(cp.kubeconfig), *args],
                    check=check, timeout=timeout, input=input)

    def apply_addons(self, cp: ControlPlane) -> None:
        """Cluster DNS, the local StorageClass and this node's volumes."""
        coredns = next(iter(build_images(("coredns",), progress=lambda m: None)))
        docs = [_render("coredns.yaml", image=coredns, dns_ip=DNS_SERVICE_IP,
                        domain=CLUSTER_DOMAIN),
                _render("storage.yaml", storage_class=STORAGE_CLASS)]
        for i in range(self.volumes):
            path = self.workdir / "volumes" / f"pv-{i}"
            path.mkdir(parents=True, exist_ok=True)
            docs.append(_render("local-pv.yaml", name=f"{self.name}-pv-{i}", path=str(path),
                                size=self.volume_size, node=self.name,
                                storage_class=STORAGE_CLASS))
        self.kubectl(cp, "apply", "-f", "-", input="\n---\n".join(docs))

    def node_status(self, cp: ControlPlane) -> dict:
        out = self.kubectl(cp, "get", "node", self.name, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def ready(self, cp: ControlPlane) -> bool:
        conds = (self.node_status(cp).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def wait_ready(self, cp: ControlPlane, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready(cp):
            for name in ("kubelet", "kube-proxy"):
                if not _pid_alive(self.pids[name]):
                    raise NodeError(f"{name} exited:\n{self._log_tail(name)}")
            if time.monotonic() > deadline:
                conds = (self.node_status(cp).get("status") or {}).get("conditions")
                raise NodeError(f"node {self.name} not Ready after {timeout:.0f}s:\n"
                                f"{json.dumps(conds, indent=1)}\n{self._log_tail('kubelet')}")
            time.sleep(1)

    def wait_dns(self, cp: ControlPlane, timeout: float) -> None:
        self.kubectl(cp, "-n", "kube-system", "rollout", "status", "deployment/coredns",
                     f"--timeout={int(timeout)}s", timeout=timeout + 10)

    # ------------------------------------------------------------- tearing down
    def drain(self, cp: ControlPlane, timeout: float = 120) -> None:
        """Delete every pod through the API and wait until the kubelet has
        stopped their containers (call with the controller manager stopped,
        or the controllers create them again)."""
        self.kubectl(cp, "delete", "pods", "--all", "--all-namespaces", "--wait=false",
                     "--grace-period=5", check=False, timeout=60)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running_tasks():
                return
            time.sleep(1)

    def running_tasks(self) -> list[str]:
        if not self.containerd_alive():
            return []
        out = ctr("tasks", "ls", check=False).stdout.splitlines()[1:]
        return [line.split()[0] for line in out if "RUNNING" in line]

    def stop(self) -> None:
        """Stop kubelet and kube-proxy (removing kube-proxy's nftables table),
        remove what is left of the pods' containers, unmount the kubelet's
        volumes and stop containerd."""
        for name in ("kubelet", "kube-proxy"):
            pid = self.pids.pop(name, None)
            if pid:
                _stop_pid(pid)
        proxy = paths.bin_dir() / "kube-proxy"
        if proxy.exists():
            _run([str(proxy), "--cleanup"], check=False, timeout=60)
        if self.containerd_alive():
            for task in ctr("tasks", "ls", check=False).stdout.splitlines()[1:]:
                ctr("tasks", "kill", "--signal", "SIGKILL", task.split()[0], check=False)
            time.sleep(0.5)
            for task in ctr("tasks", "ls", check=False).stdout.splitlines()[1:]:
                ctr("tasks", "delete", "--force", task.split()[0], check=False)
            for line in ctr("containers", "ls", "-q", check=False).stdout.split():
                ctr("containers", "delete", line, check=False)
        self._unmount_below(self.workdir)
        self._unmount_below(RUN_ROOT / "containerd")
        pid = self.pids.pop("containerd", None)
        if pid:
            _stop_pid(pid)
        shutil.rmtree(MACHINE_ROOT / "cni" / "ipam", ignore_errors=True)
        if (OWNER_FILE.exists()
                and json.loads(OWNER_FILE.read_text()).get("workdir") == str(self.workdir)):
            OWNER_FILE.unlink()
        if self.workdir.exists():
            self.save()

    def destroy(self) -> None:
        self.stop()
        self.remove_bridge()
        shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    def _unmount_below(root: Path) -> None:
        root_s = str(root.resolve()) if root.exists() else str(root)
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == root_s or point.startswith(root_s + "/"):
                mounts.append(point)
        for point in sorted(mounts, key=len, reverse=True):
            _run(["umount", "-l", point], check=False)

    def _log_tail(self, name: str, lines: int = 30) -> str:
        log = self.log_dir / f"{name}.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
