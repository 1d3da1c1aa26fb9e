"""What the compute agent's parts share: the settings, the clients (Kubernetes,
libvirt, the image cache), the metrics, the work queue, where an Instance's
files live on the host, and the little the agent remembers about an Instance
between two reconciles (everything else is read afresh each time).

:class:`kova.agents.app.Agent` builds one :class:`AgentContext` and hands it
to the heartbeat, the registration, the watch and the Instance modules.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from kova import sealing
from kova.agents.metrics import AgentMetrics
from kova.agents.settings import AgentSettings
from kova.agents.virt import netfilter
from kova.agents.virt.cpus import CpuLayout
from kova.agents.virt.domain import choose_mac
from kova.agents.virt.driver import LibvirtDriver, domain_nics
from kova.agents.virt.images import ImageCache
from kova.agents.virt.netfilter import FilterPolicy
from kova.kube import SyncKube
from kova.workqueue import WorkQueue

log = logging.getLogger("kova.agents.context")

#: A work-queue key: ``(namespace, name)`` of an Instance, or one of the two
#: special keys below.
Key = tuple[str, str]

#: Look at every Instance and every domain of this host again.
RESYNC_KEY: Key = ("", "*resync*")

#: A domain whose Instance is not (yet) in the watch cache: ``("*domain*", uid)``.
DOMAIN_KEY = "*domain*"

GiB = 1 << 30


@dataclass(frozen=True)
class InstanceFiles:
    """The files of one Instance under ``<instance-dir>/<uid>/``."""

    dir: Path
    disk: Path
    seed: Path
    console: Path
    info: Path
    #: A UEFI guest's variable store (created by libvirt from OVMF's template).
    nvram: Path
    #: An Instance booted from an ISO: a link to the cached ISO its CD-ROM
    #: holds (the domain's source, and what keeps the cache from evicting it).
    cdrom: Path

    @classmethod
    def of(cls, instance_dir: Path, uid: str) -> InstanceFiles:
        d = instance_dir / uid
        return cls(dir=d, disk=d / "disk.qcow2", seed=d / "seed.iso",
                   console=d / "console.log", info=d / "instance.json",
                   nvram=d / "nvram.fd", cdrom=d / "cdrom.iso")


@dataclass
class InstanceMemory:
    """The agent's only memory of its Instances between reconciles (lost on a
    restart, which is fine: each entry only times or paces an action).

    Every map is written by one module: ``stopping`` and ``build_started`` by
    the power and build steps, ``awaiting_address`` by the status report,
    ``secret_waits`` by the user-data wait, ``failures`` by the workers."""

    #: uid -> when the first clean shutdown was asked for (destroyed after
    #: ``--shutdown-timeout``).
    stopping: dict[str, float] = field(default_factory=dict)
    #: uid -> when its build started (the build-duration metric ends at the start).
    build_started: dict[str, float] = field(default_factory=dict)
    #: uid -> when the running guest was first seen without an address.
    awaiting_address: dict[str, float] = field(default_factory=dict)
    #: Instance -> reads of its missing user-data Secret so far (the back-off).
    secret_waits: dict[Key, int] = field(default_factory=dict)
    #: work-queue key -> failed reconciles in a row (the back-off).
    failures: dict[Key, int] = field(default_factory=dict)

    def forget_domain(self, uid: str) -> None:
        """The domain ``uid`` is gone from this host."""
        self.stopping.pop(uid, None)
        self.build_started.pop(uid, None)
        self.awaiting_address.pop(uid, None)


@dataclass
class AgentContext:
    """The agent's shared collaborators (one per agent process)."""

    cfg: AgentSettings
    kube: SyncKube
    driver: LibvirtDriver
    images: ImageCache
    metrics: AgentMetrics
    queue: WorkQueue
    #: Cache mode of the guests' disks (``--disk-cache``, or probed).
    disk_cache: str
    #: Set when the agent stops.
    stopping: threading.Event = field(default_factory=threading.Event)
    memory: InstanceMemory = field(default_factory=InstanceMemory)
    #: Dedicated and shared host CPUs, as last registered from the Host spec.
    cpus: CpuLayout = field(default_factory=CpuLayout)
    #: The host's CPU architecture as libvirt reports it (once registered).
    arch: str = ""
    #: Held while dedicated CPUs are chosen and the domain defined, so that
    #: two builds never pick the same CPU.
    pinning: threading.Lock = field(default_factory=threading.Lock)
    #: The nwfilter on guest NICs and its parameters (set at start by
    #: :meth:`kova.agents.app.Agent.start`; None: no filter).
    guest_filter: str | None = None
    #: The guests' network serves DHCP (libvirt learns their IP from the lease).
    guest_dhcp: bool = False
    #: What guests may not reach, and the subnet of the node's guest network
    #: (a libvirt network: namespaces are isolated on it; None: not known).
    guest_policy: FilterPolicy | None = None
    guest_subnet: ipaddress.IPv4Network | None = None
    #: Held while a namespace's filter is rewritten (two builds in one
    #: namespace must not drop each other's MAC).
    filter_lock: threading.Lock = field(default_factory=threading.Lock)
    #: namespace -> MACs given to its guests by this agent, so that builds
    #: running side by side (whose domains are not defined yet) keep each
    #: other's MAC in the namespace's filter.
    namespace_macs: dict[str, set[str]] = field(default_factory=dict)

    def define_guest_filter(self) -> None:
        """Define the nwfilter of guest NICs on libvirtd (idempotent) with this
        node's addresses, the API server's and Placement's, and the guests'
        libvirt network's gateway.  A host whose libvirt cannot filter stops
        the agent here (guests would run unfiltered); libvirt's test driver
        has no nwfilter and is left as it is.  A libvirt network that does
        not exist yet is read again at the next build (builds fail until it
        exists)."""
        cfg, conn = self.cfg, self.driver.conn
        if not self.with_nic or not cfg.guest_network_filter:
            return
        if conn.getType().lower() == "test":
            log.warning("libvirt's test driver has no network filters: guest NICs unfiltered")
            return
        net = netfilter.GuestNetwork()
        if cfg.network:
            try:
                net = netfilter.guest_network(conn, cfg.network)
            except libvirt.libvirtError as exc:
                log.warning("guest network %s: %s (read again at the next build)",
                            cfg.network, exc)
        addresses = [*netfilter.node_addresses(), *(net.gateway or "").split(),
                     *netfilter.url_addresses([self.kube.aio.creds.server, cfg.placement_url])]
        policy = netfilter.policy([*cfg.node_addresses, *cfg.guest_blocked_networks],
                                  cfg.guest_allowed_networks, addresses, net.gateway)
        self.guest_filter = netfilter.ensure_filters(conn, policy, self.host)
        self.guest_dhcp = net.dhcp
        self.guest_policy = policy
        self.guest_subnet = net.subnet

    def nic_filter(self, namespace: str, mac: str) -> str | None:
        """The nwfilter for a NIC with ``mac`` of a guest of ``namespace``:
        the namespace's (redefined with the MACs of the namespace's guests on
        this host, ``mac`` included) on a libvirt network, else the agent's
        guest filter."""
        if self.guest_filter is not None and self.cfg.network and self.guest_subnet is None:
            self.define_guest_filter()  # the network was missing at start
        if self.guest_filter is None or self.guest_policy is None or self.guest_subnet is None:
            return self.guest_filter
        with self.filter_lock:
            given = self.namespace_macs.setdefault(namespace, set())
            given.add(mac)
            peers = {m for m, _, ns in domain_nics(self.driver.conn) if ns == namespace} | given
            return netfilter.ensure_namespace_filter(
                self.driver.conn, namespace, self.host, self.guest_subnet, peers,
                self.guest_policy)

    def guest_mac(self, uid: str) -> str:
        """The MAC of ``uid``'s NIC: its domain's, else a new one no other
        domain on this host uses."""
        return choose_mac(uid, {mac: owner for mac, owner, _ in domain_nics(self.driver.conn)})

    @property
    def host(self) -> str:
        return self.cfg.host

    @property
    def instance_dir(self) -> Path:
        return Path(self.cfg.instance_dir)

    @property
    def with_nic(self) -> bool:
        """Guests get a NIC (``--network`` or ``--bridge``)."""
        return bool(self.cfg.network or self.cfg.bridge)

    @functools.cached_property
    def user_data_key(self) -> sealing.X25519PrivateKey:
        """This host's key for user data sealed by the operator (kova.sealing)."""
        return sealing.load_or_create(self.instance_dir / ".user-data-key")

    def files(self, uid: str) -> InstanceFiles:
        return InstanceFiles.of(self.instance_dir, uid)
