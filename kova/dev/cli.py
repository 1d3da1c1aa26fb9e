"""``kova dev up|down|status``: the local stack on this machine.

``up`` starts (or reuses) a control plane under ``KOVA_STATE``, installs the
CRDs when they exist, makes sure libvirtd and the bootable test image are
there, and says what it started.  Components that later issues add (Placement
on SQLite, the operator, one agent) are started here as they arrive.
"""

from __future__ import annotations

import sys

import click

from kova.dev import paths
from kova.dev.controlplane import ControlPlane, ControlPlaneError


def _controlplane_dir():
    return paths.state_dir() / "controlplane"


def _say(msg: str) -> None:
    click.echo(msg, err=True)


def register(group: click.Group) -> None:
    @group.command()
    @click.option("--no-libvirt", is_flag=True, help="Do not start libvirtd.")
    @click.option("--no-image", is_flag=True, help="Do not build the test image.")
    def up(no_libvirt: bool, no_image: bool) -> None:
        """Start (or reuse) the local stack."""
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
        started = [f"control plane: {cp.server} (etcd, kube-apiserver, kube-controller-manager)"]

        try:
            from kova.crds import install as crds_install  # type: ignore[attr-defined]
        except ImportError:
            crds_install = None
        if crds_install is not None:
            crds_install.apply_crds(cp.kubeconfig, progress=_say)
            started.append("CRDs: installed and Established")

        if not no_libvirt:
            from kova.dev import libvirt as dev_libvirt

            dev_libvirt.ensure_libvirtd()
            started.append("libvirtd + virtlogd: qemu:///system")
        if not no_image:
            from kova.dev import image as dev_image

            img = dev_image.ensure_test_image()
            started.append(f"test image: {img}")

        click.echo("[kova] local stack is up:")
        for line in started:
            click.echo(f"  - {line}")
        click.echo(f"\n  export KUBECONFIG={cp.kubeconfig}")
        click.echo("  kubectl get --raw /version")
        click.echo("  kova dev status   # what runs")
        click.echo("  kova dev down     # stop it all")

    @group.command()
    @click.option("--purge", is_flag=True, help="Also delete the stack's data (etcd, PKI, logs).")
    def down(purge: bool) -> None:
        """Stop the local stack."""
        workdir = _controlplane_dir()
        cp = ControlPlane.load(workdir)
        if cp is None:
            click.echo("[kova] nothing to stop")
            return
        if purge:
            cp.destroy()
            click.echo(f"[kova] stopped and removed {workdir}")
        else:
            cp.stop()
            click.echo("[kova] stopped (data kept; `kova dev down --purge` removes it)")

    @group.command()
    def status() -> None:
        """Show what the local stack runs."""
        cp = ControlPlane.load(_controlplane_dir())
        if cp is None or not cp.pids:
            click.echo("[kova] local stack: not running")
            sys.exit(1)
        alive = cp.running()
        for name, pid in cp.pids.items():
            state = "running" if alive[name] else "DEAD"
            click.echo(f"{name:26} pid {pid:<8} {state}")
        click.echo(f"kube-apiserver             {cp.server}")
        click.echo(f"kubeconfig                 {cp.kubeconfig}")
        if not all(alive.values()):
            sys.exit(1)
