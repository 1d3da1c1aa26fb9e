"""A test namespace and a local stack of one simulated host, for the e2e
modules that drive a real guest through ``kubectl kova``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kova.dev.stack import Stack
from kova.dev.twohost import BedHost


@contextmanager
def temp_namespace(kubectl: Callable, prefix: str) -> Iterator[str]:
    """A namespace ``<prefix>-<random>``, deleted (waiting) afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=true", "--timeout=120s", check=False)


@contextmanager
def one_host_stack(k8s, kova_api, namespace: str, root: Path, prefix: str,
                   operator_args: list[str] | None = None,
                   log_lines: int = 15) -> Iterator[Stack]:
    """Operator, Placement and one agent (host ``<prefix>-<random>``) with the
    API component's stream PKI; the tail of each log printed afterwards."""
    st = Stack(root=root / "stack", stream_pki_dir=kova_api.pki.ca_crt.parent,
               operator_args=operator_args or [])
    host = f"{prefix}-{uuid.uuid4().hex[:5]}"
    try:
        st.start(k8s, [host], progress=lambda m: None, namespaces=[namespace])
        st.wait_hosts_up()
        yield st
    finally:
        st.stop()
        for log in st.log_dir.glob("*.log"):
            print(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-log_lines:]))


@dataclass(frozen=True)
class TenantUser:
    """A ServiceAccount of the namespace bound to kova-edit, with a
    kubeconfig of its token whose context defaults to that namespace."""

    kubeconfig: Path
    username: str


def kova_editor(k8s, namespace: str, name: str, root: Path) -> TenantUser:
    from kova.dev import access

    access.kubectl(k8s.kubeconfig, "create", "serviceaccount", name, "-n", namespace)
    access.kubectl(k8s.kubeconfig, "create", "rolebinding", name, "-n", namespace,
                   "--clusterrole=kova-edit", f"--serviceaccount={namespace}:{name}")
    token = access.kubectl(k8s.kubeconfig, "create", "token", name, "-n", namespace,
                           "--duration", "2h").stdout.strip()
    kc = k8s.write_kubeconfig(root / f"{name}.kubeconfig", token, user=name)
    cfg = json.loads(kc.read_text())
    cfg["contexts"][0]["context"]["namespace"] = namespace
    kc.write_text(json.dumps(cfg))
    return TenantUser(kc, f"system:serviceaccount:{namespace}:{name}")


@contextmanager
def two_host_stack(st: Stack, k8s, namespace: str, prefix: str,
                   log_lines: int = 25) -> Iterator[Stack]:
    """``st`` (a Stack not yet started) with hosts ``<prefix>-a-<random>`` and
    ``-b-``, up; afterwards every guest of its libvirtds destroyed, the stack
    stopped and the tail of each process's log printed."""
    import libvirt

    sfx = uuid.uuid4().hex[:5]
    try:
        st.start(k8s, [f"{prefix}-a-{sfx}", f"{prefix}-b-{sfx}"], progress=lambda m: None,
                 namespaces=[namespace])
        st.wait_hosts_up()
        yield st
    finally:
        for uri in st.libvirt_uris.values():
            conn = libvirt.open(uri)
            for dom in conn.listAllDomains():
                if dom.isActive():
                    dom.destroy()
            conn.close()
        st.stop()
        for log in st.log_dir.glob("*.log"):
            print(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-log_lines:]))


@dataclass
class BedStack(Stack):
    """A stack whose hosts are the two-host bed's libvirtds."""

    bed_hosts: tuple[BedHost, ...] = ()

    def _bed(self, host: str) -> BedHost:
        return self.bed_hosts[self.hosts.index(host)]

    def start_host_libvirt(self, host: str, progress=print) -> str:
        self.libvirt_uris[host] = self._bed(host).uri
        self._bed(host).start_network()
        self.save()
        return self.libvirt_uris[host]

    def start_agent(self, host: str) -> None:
        common = self.agent_args
        bed = self._bed(host)
        self.agent_args = [*common, "--live-migration-uri", bed.tcp_uri,
                           "--network", bed.start_network()]
        try:
            super().start_agent(host)
        finally:
            self.agent_args = common


@contextmanager
def bed_stack(k8s, kova_api, two_hosts, namespace: str, root: Path, prefix: str,
              operator_args: list[str] | None = None,
              log_lines: int = 30) -> Iterator[Stack]:
    """Operator, Placement and an agent on each of the two-host bed's
    libvirtds (``two_hosts``), with the API component's stream PKI: a
    :class:`BedStack` run by :func:`two_host_stack`."""
    st = BedStack(root=root / "stack", stream_pki_dir=kova_api.pki.ca_crt.parent,
                  operator_args=operator_args or [], bed_hosts=two_hosts.hosts)
    with two_host_stack(st, k8s, namespace, prefix, log_lines=log_lines) as started:
        yield started
