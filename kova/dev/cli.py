"""``kova dev up|down|status|demo``: the local stack on this machine.

``up`` starts (or reuses) a control plane under ``KOVA_STATE``, installs the
CRDs, starts libvirtd, builds the bootable test image and links it where the
example Image expects it, then runs Placement on SQLite, the operator and one
compute agent per simulated host name as local processes.  ``demo`` does
``up``, applies ``examples/`` and waits until the Instances run.

With ``--node`` the same commands use the in-cluster path instead: a
one-node cluster on this machine (kubelet, containerd, kube-proxy, CoreDNS;
``kova.dev.cluster``), Kova's images built here, and ``helm install`` of
``helm/kova`` with its bundled PostgreSQL; the agent pod drives the machine's
libvirtd.  State under ``KOVA_STATE/node``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kova.crds import names
from kova.dev import paths
from kova.dev.controlplane import ControlPlane, ControlPlaneError
from kova.dev.stack import DEFAULT_HOSTS, Stack, link_test_image, stack_dir

if TYPE_CHECKING:
    from kova.dev.cluster import NodeCluster


def _controlplane_dir() -> Path:
    return paths.state_dir() / "controlplane"


def _say(msg: str) -> None:
    click.echo(msg, err=True)


def _kubectl(cp: ControlPlane, *args: str, check: bool = True, timeout: float = 120,
             capture: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [paths.kubectl(), "--kubeconfig", str(cp.kubeconfig), *args],
        check=check, timeout=timeout, text=True, capture_output=capture,
    )


def bring_up(hosts: list[str], components: bool = True) -> tuple[ControlPlane, Stack | None]:
    workdir = _controlplane_dir()
    cp = ControlPlane.load(workdir)
    if cp and cp.pids and all(cp.running().values()):
        _say(f"[kova] control plane already running at {cp.server}")
    else:
        if cp:
            cp.stop()
        cp = ControlPlane(workdir=workdir)
        try:
            cp.start(progress=_say)
        except ControlPlaneError as exc:
            _say(f"[kova] control plane failed to start: {exc}")
            sys.exit(1)

    from kova.dev import crds as crds_install

    crds_install.apply_crds(cp.kubeconfig, progress=_say)
    if not components:
        return cp, None

    from kova.dev import image as dev_image
    from kova.dev import libvirt as dev_libvirt

    _say("[kova] starting libvirtd + virtlogd (qemu:///system)")
    dev_libvirt.ensure_libvirtd()
    _say("[kova] building (or reusing) the bootable test image")
    img = dev_image.ensure_test_image()
    link = link_test_image(img)
    _say(f"[kova] test image {img} linked at {link}")

    stack = Stack.load(stack_dir())
    stack.api = True
    stack.start(cp, hosts, progress=_say)
    try:
        stack.wait_hosts_up()
    except TimeoutError as exc:
        _say(f"[kova] {exc}")
        sys.exit(1)
    _say(f"[kova] hosts Up: {', '.join(hosts)}")
    return cp, stack


def _node_dir() -> Path:
    return paths.state_dir() / "node"


def bring_up_node() -> "NodeCluster":
    """The one-node cluster with the chart installed, pods Ready, Host Up."""
    from kova.dev.cluster import NAMESPACE, NodeCluster
    from kova.dev.node import NodeError

    cluster = NodeCluster.load(_node_dir())
    try:
        if cluster and cluster.cp and cluster.cp.pids and all(cluster.running().values()):
            _say(f"[kova] node cluster already running at {cluster.cp.server}")
        else:
            if cluster:
                cluster.stop()
            cluster = NodeCluster(root=_node_dir(), private_libvirt=False).start(progress=_say)
        t0 = time.monotonic()
        _say(f"[kova] helm upgrade --install kova helm/kova -n {NAMESPACE} (bundled PostgreSQL)")
        cluster.install()
        cluster.wait_pods_ready(progress=_say)
        cluster.wait_host_up()
        _say(f"[kova] chart installed, pods Ready, Host Up in {time.monotonic() - t0:.0f}s")
    except NodeError as exc:
        _say(f"[kova] {exc}")
        sys.exit(1)
    return cluster


def _print_node_up(cluster: "NodeCluster") -> None:
    from kova.dev.cluster import NAMESPACE

    cp, node = cluster.control_plane, cluster.kube_node
    click.echo("[kova] node cluster is up:")
    click.echo(f"  - control plane   {cp.server} (etcd, kube-apiserver, kube-controller-manager, "
               "kube-scheduler)")
    click.echo(f"  - node            {node.name}: kubelet, containerd, kube-proxy, CoreDNS")
    click.echo(f"  - Kova            helm release kova in {NAMESPACE} (Placement, PostgreSQL, "
               "operator, agent)")
    click.echo(f"  - libvirt         {cluster.libvirt_uri} (the agent pod's), instances in "
               f"{cluster.instance_dir}")
    click.echo(f"  - logs            {node.log_dir}, kubectl -n {NAMESPACE} logs ...")
    click.echo(f"\n  export KUBECONFIG={cp.kubeconfig} PATH={paths.bin_dir()}:$PATH")
    click.echo(f"  kubectl -n {NAMESPACE} get pods")


def _print_up(cp: ControlPlane, stack: Stack | None) -> None:
    click.echo("[kova] local stack is up:")
    click.echo(f"  - control plane   {cp.server} (etcd, kube-apiserver, kube-controller-manager)")
    click.echo("  - CRDs            Instance, Host, Flavor, Image, ServerGroup "
               f"({names.API_VERSION})")
    if stack is not None:
        click.echo(f"  - Placement       {stack.placement_url} (SQLite, token auth)")
        click.echo("  - operator        standalone")
        click.echo(f"  - agents          {', '.join(stack.hosts)} "
                   "(qemu:///system, software emulation)")
        click.echo(f"  - API component   127.0.0.1:{stack.api_port}, APIService "
                   f"{names.APISERVICE_NAME} (kubectl kova)")
        click.echo(f"  - logs            {stack.log_dir}")
    # kubectl finds the kubectl-kova plugin on PATH: it sits next to this Python
    click.echo(f"\n  export KUBECONFIG={cp.kubeconfig} "
               f"PATH={paths.bin_dir()}:{Path(sys.executable).parent}:$PATH")


def register(group: click.Group) -> None:
    @group.command()
    @click.option("--host", "hosts", multiple=True, default=DEFAULT_HOSTS, show_default=True,
                  help="Simulated host names, one agent each (repeatable).")
    @click.option("--control-plane-only", is_flag=True,
                  help="Start only the control plane and the CRDs.")
    @click.option("--node", is_flag=True,
                  help="The in-cluster path: a one-node cluster (kubelet, containerd) with "
                       "Kova installed by its Helm chart, instead of local processes.")
    def up(hosts: tuple[str, ...], control_plane_only: bool, node: bool) -> None:
        """Start (or reuse) the local stack."""
        if node:
            _print_node_up(bring_up_node())
            click.echo("  kova dev down --node   # delete the Instances, uninstall, stop the node")
            return
        cp, stack = bring_up(list(hosts), components=not control_plane_only)
        _print_up(cp, stack)
        click.echo("  kova dev status   # what runs")
        click.echo("  kova dev down     # delete the Instances and stop it all")

    @group.command()
    @click.option("--purge", is_flag=True, help="Also delete the stack's data (etcd, PKI, logs).")
    @click.option("--keep-instances", is_flag=True,
                  help="Leave Instances (and their VMs) in place.")
    @click.option("--node", is_flag=True, help="Stop the node cluster of `kova dev up --node`.")
    def down(purge: bool, keep_instances: bool, node: bool) -> None:
        """Delete the Instances, stop the local stack."""
        (node_down if node else local_down)(purge, keep_instances)

    @group.command()
    @click.option("--node", is_flag=True, help="The node cluster of `kova dev up --node`.")
    def status(node: bool) -> None:
        """Show what the local stack runs."""
        (node_status if node else local_status)()

    @group.command()
    @click.option("--examples", "examples_dir", type=click.Path(exists=True, file_okay=False),
                  default=str(paths.REPO_ROOT / "examples"), show_default=True)
    @click.option("--timeout", default=300.0, show_default=True,
                  help="Seconds to wait for the Instances to run.")
    @click.option("--node", is_flag=True, help="On the node cluster (`kova dev up --node`).")
    def demo(examples_dir: str, timeout: float, node: bool) -> None:
        """Bring the stack up, apply examples/, wait until the Instances run."""
        if node:
            cluster = bring_up_node()
            cp, stack = cluster.control_plane, None
            _print_node_up(cluster)
        else:
            cp, stack = bring_up(list(DEFAULT_HOSTS))
            _print_up(cp, stack)
        _say(f"\n[kova] applying {examples_dir}")
        out = _kubectl(cp, "apply", "-f", examples_dir)
        click.echo(out.stdout.rstrip())
        ok = wait_running(cp, timeout)
        click.echo("\n$ kubectl get instances -o wide")
        click.echo(_kubectl(cp, "get", "instances", "-o", "wide").stdout.rstrip())
        click.echo("\n$ kubectl get hosts")
        click.echo(_kubectl(cp, "get", "hosts").stdout.rstrip())
        show_consoles(cp)
        k = f"kubectl --kubeconfig {cp.kubeconfig}"
        click.echo(
            "\nLook around:\n"
            f"  {k} get inst,hosts,flavors,images,servergroups\n"
            f"  {k} describe inst hello\n"
            "Its serial console (Ctrl+] detaches), its screen, its console log:\n"
            f"  KUBECONFIG={cp.kubeconfig} kubectl kova console hello\n"
            f"  KUBECONFIG={cp.kubeconfig} kubectl kova vnc hello\n"
            f"  KUBECONFIG={cp.kubeconfig} kubectl kova logs hello\n"
            "Stop an Instance, start it again, see who did what:\n"
            f"  KUBECONFIG={cp.kubeconfig} kubectl kova stop hello\n"
            f"  KUBECONFIG={cp.kubeconfig} kubectl kova start hello\n"
            f"  KUBECONFIG={cp.kubeconfig} kubectl kova actions hello\n"
            "Delete one:\n"
            f"  {k} delete inst web-1\n"
            "Tear everything down:\n"
            f"  .venv/bin/kova dev down{' --node' if node else ''}      "
            "(add --purge to remove its data)"
        )
        if not ok:
            _say("[kova] not every Instance reached Running; see the logs in "
                 f"{stack.log_dir if stack else ''}")
            sys.exit(1)


def _instances(cp: ControlPlane) -> list[dict]:
    out = _kubectl(cp, "get", "instances", "-o", "json", check=False)
    if out.returncode != 0:
        return []
    return json.loads(out.stdout).get("items", [])


def wait_running(cp: ControlPlane, timeout: float) -> bool:
    """Show each Instance's phase as it changes, until all run or time is up."""
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    last = ""
    while True:
        items = _instances(cp)
        phases = {i["metadata"]["name"]: (i.get("status") or {}).get("phase", "-") for i in items}
        line = "  ".join(f"{n}={p}" for n, p in sorted(phases.items()))
        if line != last:
            _say(f"[kova] {time.monotonic() - t0:5.1f}s  {line}")
            last = line
        if items and all(p == "Running" for p in phases.values()):
            _say(f"[kova] all {len(items)} Instances Running after {time.monotonic() - t0:.1f}s")
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)


def show_consoles(cp: ControlPlane, wait: float = 60.0) -> None:
    """Print what each guest said on its serial console (Kova's markers)."""
    deadline = time.monotonic() + wait
    for inst in _instances(cp):
        name = inst["metadata"]["name"]
        log_path = ((inst.get("status") or {}).get("console") or {}).get("logPath")
        click.echo(f"\n--- serial console of {name} ({log_path})")
        if not log_path:
            click.echo("(no console log yet)")
            continue
        lines: list[str] = []
        while True:
            try:
                text = Path(log_path).read_text(errors="replace")
            except OSError:
                text = ""
            lines, inside = [], False
            for ln in text.splitlines():
                if ln.startswith("KOVA-USERDATA-BEGIN"):
                    inside = True
                if inside or ln.startswith("KOVA"):
                    lines.append(ln)
                if ln.startswith("KOVA-USERDATA-END"):
                    inside = False
            if "KOVA-READY" in text or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        click.echo("\n".join(lines[-20:]) or "(nothing printed yet)")


def local_down(purge: bool, keep_instances: bool) -> None:
    cp = ControlPlane.load(_controlplane_dir())
    stack = Stack.load(stack_dir())
    if cp is None and not stack.pids:
        click.echo("[kova] nothing to stop")
        return
    if (not keep_instances and cp is not None and cp.pids
            and all(cp.running().values()) and any(stack.running().values())):
        _say("[kova] deleting every Instance (the agents remove their VMs) ...")
        _kubectl(cp, "delete", "instances.kova.dev", "--all", "--all-namespaces",
                 "--wait=true", "--timeout=180s", check=False)
    stack.stop()
    if cp is not None:
        if purge:
            cp.destroy()
        else:
            cp.stop()
    if purge:
        import shutil

        shutil.rmtree(stack.root, ignore_errors=True)
        click.echo("[kova] stopped; state removed")
    else:
        click.echo("[kova] stopped (data kept; `kova dev down --purge` removes it)")


def local_status() -> None:
    cp = ControlPlane.load(_controlplane_dir())
    stack = Stack.load(stack_dir())
    if cp is None or not cp.pids:
        click.echo("[kova] local stack: not running")
        sys.exit(1)
    alive = {**cp.running(), **stack.running()}
    pids = {**cp.pids, **stack.pids}
    for name, pid in pids.items():
        state = "running" if alive[name] else "DEAD"
        click.echo(f"{name:26} pid {pid:<8} {state}")
    click.echo(f"kube-apiserver             {cp.server}")
    if stack.placement_port:
        click.echo(f"placement                  {stack.placement_url}")
    click.echo(f"kubeconfig                 {cp.kubeconfig}")
    if not all(alive.values()):
        sys.exit(1)


def node_down(purge: bool, keep_instances: bool) -> None:
    from kova.dev.cluster import NAMESPACE, RELEASE, NodeCluster

    cluster = NodeCluster.load(_node_dir())
    if cluster is None or cluster.cp is None:
        click.echo("[kova] no node cluster")
        return
    if cluster.cp.pids and all(cluster.running().values()):
        if not keep_instances:
            _say("[kova] deleting every Instance (the agent pod removes their VMs) ...")
            cluster.kubectl("delete", "instances.kova.dev", "--all", "--all-namespaces",
                            "--wait=true", "--timeout=180s", check=False, timeout=200)
        _say(f"[kova] helm uninstall {RELEASE} -n {NAMESPACE}")
        cluster.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", check=False)
    _say("[kova] stopping the node and the control plane")
    if purge:
        cluster.destroy()
        click.echo("[kova] stopped; state removed")
    else:
        cluster.stop()
        click.echo("[kova] stopped (data kept; `kova dev down --node --purge` removes it)")


def node_status() -> None:
    from kova.dev.cluster import NodeCluster

    cluster = NodeCluster.load(_node_dir())
    if cluster is None or cluster.cp is None or not cluster.cp.pids:
        click.echo("[kova] node cluster: not running")
        sys.exit(1)
    alive = cluster.running()
    pids = {**cluster.cp.pids, **(cluster.node.pids if cluster.node else {}),
            **cluster.libvirt_pids}
    for name, pid in pids.items():
        click.echo(f"{name:26} pid {pid:<8} {'running' if alive.get(name) else 'DEAD'}")
    click.echo(f"kube-apiserver             {cluster.cp.server}")
    click.echo(f"kubeconfig                 {cluster.cp.kubeconfig}")
    if not all(alive.values()):
        sys.exit(1)
