"""Kova installed with Helm on a one-node cluster of this machine.

``NodeCluster`` is what ``kova dev up --node`` and the ``cluster`` test tier
run: the images built here (``hack/build-images.sh``), a control plane with a
kube-scheduler, the node (``kova.dev.node``: containerd, kubelet, kube-proxy,
CoreDNS), the node labelled as a hypervisor, a libvirtd for the agent pod,
and then the chart installed as a user installs it (``helm install`` of
``helm/kova`` with its bundled PostgreSQL).

The agent pod drives a libvirtd on the node through its socket, as on a real
node.  ``kova dev up --node`` uses the machine's own libvirtd
(``qemu:///system``, the chart's defaults for the socket, the instance
directory and the image directory); the test tier starts a private one
(``hack/start-libvirt-host.sh``) with its own socket and directories, so it
never touches the guests of anything else on the machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kova.dev import paths
from kova.dev.controlplane import ControlPlane, _pid_alive, _stop_pid
from kova.dev.node import NODE_ADDRESS, Node, NodeError, Progress, build_images

CHART = paths.REPO_ROOT / "helm" / "kova"
RELEASE = "kova"
NAMESPACE = "kova-system"
KOVA_REPOSITORY = "localhost/kova"
POSTGRES_REPOSITORY = "localhost/kova/postgres"
#: Images the cluster runs, by hack/build-images.sh's names.
IMAGES = ("pause", "coredns", "postgres", "kova")
#: The agent DaemonSet's node selector (helm/kova/values.yaml): under
#: node-restriction.kubernetes.io/, which no kubelet may set on its own Node.
HYPERVISOR_LABEL = "node-restriction.kubernetes.io/kova-hypervisor"


def kova_version() -> str:
    """Kova's version (pyproject.toml): the image tag and the chart's appVersion."""
    for line in (paths.REPO_ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split("=", 1)[1].strip().strip('"')
    raise NodeError("no version in pyproject.toml")


def helm_exe() -> str:
    exe = paths.bin_dir() / "helm"
    if not exe.exists():
        paths.run_hack("install-helm-tools.sh", "helm")
    return str(exe)


@dataclass
class NodeCluster:
    """A control plane, a node, a libvirtd for the agent pod, and the chart."""

    root: Path
    #: True: a libvirtd of this cluster's own; False: the machine's.
    private_libvirt: bool = False
    libvirt_uri: str = ""
    libvirt_socket_dir: str = ""
    instance_dir: str = ""
    image_dir: str = ""
    libvirt_pids: dict[str, int] = field(default_factory=dict)
    cp: ControlPlane | None = None
    node: Node | None = None

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def control_plane(self) -> ControlPlane:
        """The control plane (of a started or loaded cluster)."""
        if self.cp is None:
            raise NodeError(f"no control plane in {self.root}: the cluster was not started")
        return self.cp

    @property
    def kube_node(self) -> Node:
        """The node (of a started or loaded cluster)."""
        if self.node is None:
            raise NodeError(f"no node in {self.root}: the cluster was not started")
        return self.node

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({
            "private_libvirt": self.private_libvirt, "libvirt_uri": self.libvirt_uri,
            "libvirt_socket_dir": self.libvirt_socket_dir, "instance_dir": self.instance_dir,
            "image_dir": self.image_dir, "libvirt_pids": self.libvirt_pids}, indent=2))

    @classmethod
    def load(cls, root: Path) -> "NodeCluster | None":
        if not (root / "cluster.json").exists():
            return None
        data = json.loads((root / "cluster.json").read_text())
        c = cls(root=root, **{k: v for k, v in data.items() if k != "libvirt_pids"})
        c.libvirt_pids = {k: int(v) for k, v in data.get("libvirt_pids", {}).items()}
        c.cp = ControlPlane.load(root / "controlplane")
        c.node = Node.load(root / "node")
        return c

    def running(self) -> dict[str, bool]:
        out: dict[str, bool] = {}
        for part in (self.cp, self.node):
            if part is not None:
                out.update(part.running())
        out.update({k: _pid_alive(v) for k, v in self.libvirt_pids.items()})
        return out

    # ------------------------------------------------------------ start
    def start(self, progress: Progress = print) -> "NodeCluster":
        t0 = time.monotonic()
        images = build_images(IMAGES, progress=progress)
        node = self.node = Node(workdir=self.root / "node")
        node.prepare(images, progress)
        cp = self.cp = ControlPlane(workdir=self.root / "controlplane", address=NODE_ADDRESS,
                                    node_name=node.name)
        cp.start(progress=progress)
        node.start(cp, progress)
        self.kubectl("label", "node", node.name, f"{HYPERVISOR_LABEL}=true", "--overwrite")
        self._libvirt(progress)
        self.save()
        progress(f"[kova] node cluster up in {time.monotonic() - t0:.0f}s; "
                 f"kubeconfig: {cp.kubeconfig}")
        return self

    def _libvirt(self, progress: Progress) -> None:
        if self.private_libvirt:
            root = self.root / "libvirt"
            progress(f"[kova] starting a libvirtd for the node's agent ({root})")
            node = self.kube_node.name
            self.libvirt_uri = paths.run_hack("start-libvirt-host.sh", node, str(root))
            self.libvirt_socket_dir = str(Path(self.libvirt_uri.split("socket=", 1)[1]).parent)
            for daemon in ("libvirtd", "virtlogd"):
                pidfile = root / node / f"{daemon}.pid"
                if pidfile.exists():
                    self.libvirt_pids[daemon] = int(pidfile.read_text().strip())
            self.instance_dir = str(self.root / "instances")
            self.image_dir = str(self.root / "images")
        else:
            from kova.dev.libvirt import ensure_libvirtd

            progress("[kova] starting (or reusing) the machine's libvirtd (qemu:///system)")
            self.libvirt_uri = ensure_libvirtd()
            self.libvirt_socket_dir = "/var/run/libvirt"
            self.instance_dir = "/var/lib/kova/instances"
            self.image_dir = "/var/lib/kova/images"
        self.place_test_image()

    def place_test_image(self) -> Path:
        """The bootable test image in the node's image directory, as a file
        the agent pod can read (``kova.dev.stack.link_test_image``)."""
        from kova.dev.image import ensure_test_image
        from kova.dev.stack import link_test_image

        return link_test_image(ensure_test_image(), Path(self.image_dir) / "kova-test.qcow2")

    # ------------------------------------------------------------ the chart
    def chart_values(self, tag: str | None = None) -> dict:
        """Values for a chart install on this node: the images built here,
        software emulation, no guest network, and the libvirtd and
        directories of the node."""
        return {
            "image": {"repository": KOVA_REPOSITORY, "tag": tag or kova_version()},
            "postgresql": {"image": {"repository": POSTGRES_REPOSITORY}},
            # guests without a network card, as the process stack runs them:
            # the chart's "default" network is not defined on the test's
            # libvirtd, and inactive on the machine's
            "agent": {"domainType": "qemu", "network": "", "libvirtUri": self.libvirt_uri,
                      "libvirtSocketDir": self.libvirt_socket_dir,
                      "instanceDir": self.instance_dir, "hostImageDir": self.image_dir},
        }

    def values_file(self, tag: str | None = None, name: str = "values.yaml") -> Path:
        path = self.root / name
        path.write_text(yaml.safe_dump(self.chart_values(tag), sort_keys=False))
        return path

    def helm(self, *args: str, check: bool = True,
             timeout: float = 900) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [helm_exe(), "--kubeconfig", str(self.control_plane.kubeconfig), *args],
            capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise NodeError(f"helm {' '.join(args)} failed ({proc.returncode}):\n"
                            f"{proc.stdout}\n{proc.stderr}")
        return proc

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120,
                input: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [paths.kubectl(), "--kubeconfig", str(self.control_plane.kubeconfig), *args],
            capture_output=True, text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise NodeError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n"
                            f"{proc.stdout}\n{proc.stderr}")
        return proc

    def install(self, release: str = RELEASE, namespace: str = NAMESPACE,
                tag: str | None = None, timeout: str = "10m") -> subprocess.CompletedProcess:
        """``helm upgrade --install --wait`` of ``helm/kova`` with its bundled
        PostgreSQL and :meth:`chart_values`."""
        return self.helm("upgrade", "--install", release, str(CHART), "--namespace", namespace,
                         "--create-namespace", "-f", str(self.values_file(tag)),
                         "--wait", "--timeout", timeout)

    def pods(self, namespace: str = NAMESPACE) -> list[dict]:
        out = self.kubectl("get", "pods", "-n", namespace, "-o", "json")
        return json.loads(out.stdout)["items"]

    @staticmethod
    def pod_ready(pod: dict) -> bool:
        st = pod.get("status") or {}
        return (st.get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
                and all(c.get("ready") for c in st.get("containerStatuses") or [{}]))

    @classmethod
    def pod_state(cls, pod: dict) -> str:
        return "Ready" if cls.pod_ready(pod) else str((pod.get("status") or {}).get("phase"))

    def wait_pods_ready(self, namespace: str = NAMESPACE, timeout: float = 300,
                        progress: Progress = lambda msg: None) -> list[dict]:
        """Every pod of ``namespace`` Running and Ready (none terminating)."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            pods = self.pods(namespace)
            line = "  ".join(f"{p['metadata']['name']}={self.pod_state(p)}" for p in pods)
            if line != last:
                progress(f"[kova] {line}")
                last = line
            if pods and all(self.pod_ready(p) for p in pods):
                return pods
            if time.monotonic() > deadline:
                raise NodeError(f"pods of {namespace} not all Ready after {timeout:.0f}s: {line}")
            time.sleep(1)

    def host_states(self) -> dict[str, str | None]:
        out = self.kubectl("get", "hosts.kova.dev", "-o", "json", check=False)
        if out.returncode != 0:
            return {}
        return {h["metadata"]["name"]: (h.get("status") or {}).get("state")
                for h in json.loads(out.stdout).get("items", [])}

    def wait_host_up(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        name = self.kube_node.name
        while self.host_states().get(name) != "Up":
            if time.monotonic() > deadline:
                raise NodeError(f"Host {name} not Up after {timeout:.0f}s: "
                                f"{self.host_states()}")
            time.sleep(1)

    # ------------------------------------------------------------ Instances
    def test_manifests(self, name: str, namespace: str, user_data: str) -> str:
        """A Flavor ``small``, the Image ``kova-test`` (the bootable test image
        in the node's image directory) and an Instance of them."""
        image = Path(self.image_dir) / "kova-test.qcow2"
        body = "\n".join("      " + line for line in user_data.splitlines())
        return f"""\
apiVersion: kova.dev/v1alpha1
kind: Flavor
metadata: {{name: small}}
spec: {{vcpus: 1, memoryMiB: 256, diskGiB: 1}}
---
apiVersion: kova.dev/v1alpha1
kind: Image
metadata: {{name: kova-test}}
spec:
  source: {{hostPath: {image}}}
  format: qcow2
  minDiskGiB: 1
---
apiVersion: kova.dev/v1alpha1
kind: Instance
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  flavorRef: {{name: small}}
  imageRef: {{name: kova-test}}
  runStrategy: Always
  userData:
    inline: |
{body}
"""

    def instance(self, name: str, namespace: str) -> dict:
        out = self.kubectl("get", "instance", name, "-n", namespace, "-o", "json")
        return json.loads(out.stdout)

    def wait_instance_phase(self, name: str, namespace: str, phase: str,
                            timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            obj = self.instance(name, namespace)
            if (obj.get("status") or {}).get("phase") == phase:
                return obj
            if time.monotonic() > deadline:
                raise NodeError(f"Instance {namespace}/{name} not {phase} after {timeout:.0f}s: "
                                f"{json.dumps(obj.get('status'))}")
            time.sleep(0.5)

    @staticmethod
    def wait_userdata(log_path: Path, timeout: float = 240) -> str:
        """The user data the guest printed on its serial console."""
        from kova.dev.image import userdata_from_console

        deadline = time.monotonic() + timeout
        while True:
            text = log_path.read_text(errors="replace") if log_path.exists() else ""
            userdata = userdata_from_console(text)
            if userdata is not None:
                return userdata
            if time.monotonic() > deadline:
                raise NodeError(f"no user data on {log_path} after {timeout:.0f}s")
            time.sleep(1)

    # ------------------------------------------------------------ stop
    def stop(self, progress: Progress = lambda msg: None) -> None:
        """Stop the pods, the node, the control plane and a private libvirtd
        (guests of the machine's libvirtd keep running)."""
        if self.cp is not None and self.node is not None and self.cp.pids:
            # no controller may re-create what the drain deletes
            for name in ("kube-controller-manager", "kube-scheduler"):
                pid = self.cp.pids.pop(name, None)
                if pid:
                    _stop_pid(pid)
            try:
                progress("[kova] deleting the node's pods")
                self.node.drain(self.cp, timeout=90)
            except (NodeError, subprocess.TimeoutExpired) as exc:
                progress(f"[kova] draining the node failed ({exc}); stopping it anyway")
        if self.node is not None:
            self.node.stop()
        if self.cp is not None:
            self.cp.stop()
        if self.private_libvirt and self.libvirt_pids.get("libvirtd"):
            self.destroy_guests()
        for name in ("libvirtd", "virtlogd"):
            pid = self.libvirt_pids.pop(name, None)
            if pid:
                _stop_pid(pid)
        if self.private_libvirt and self.libvirt_socket_dir:
            shutil.rmtree(self.libvirt_socket_dir, ignore_errors=True)
        if self.root.exists():
            self.save()

    def domains(self) -> list[str]:
        """Names of the domains of the node's libvirtd (running or not)."""
        out = subprocess.run(["virsh", "-c", self.libvirt_uri, "list", "--all", "--name"],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise NodeError(f"virsh list failed: {out.stderr}")
        return [n for n in out.stdout.split() if n]

    def destroy_guests(self) -> None:
        """Remove every domain of a private libvirtd (whatever a failed run
        left behind), before that libvirtd stops."""
        for name in self.domains():
            for cmd in (["destroy", name], ["undefine", "--nvram", name]):
                subprocess.run(["virsh", "-c", self.libvirt_uri, *cmd], capture_output=True,
                               timeout=60)

    def destroy(self) -> None:
        self.stop()
        if self.node is not None:
            self.node.destroy()
        if self.cp is not None:
            self.cp.destroy()
        shutil.rmtree(self.root, ignore_errors=True)
