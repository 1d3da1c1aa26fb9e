"""The compute agent's settings: ``kova agent run`` options and their
``KOVA_AGENT_*`` environment variables, each default written once here (see
:mod:`kova.settings`; the table in docs/agent.md is generated from these
fields).  The Placement client settings keep the names the chart and the
development stack set (``KOVA_PLACEMENT_URL``, ``KOVA_PLACEMENT_TOKEN``,
``KOVA_PLACEMENT_CA_FILE``) and read ``KOVA_AGENT_PLACEMENT_*`` too."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import click

from kova.crds import names
from kova.settings import format_setting, level_setting, off_if_negative, setting

PREFIX = "KOVA_AGENT_"


def default_host() -> str:
    """This host's name: ``$KOVA_HOST``, ``$NODE_NAME`` (a DaemonSet sets it
    from the downward API ``spec.nodeName``), else the machine's host name."""
    return os.environ.get("KOVA_HOST") or os.environ.get("NODE_NAME") or socket.gethostname()


def _ca_file(value: str) -> str:
    """A CA bundle that ssl can load (checked at start, not at the first download)."""
    from kova.agents.virt.images import tls_context

    tls_context(value)
    return value


def _networks(values: tuple[str, ...]) -> tuple[str, ...]:
    """CIDRs, checked at start."""
    from kova.agents.virt.image_sources import networks

    return tuple(str(n) for n in networks(values))


@dataclass
class AgentSettings:
    host: str = setting(factory=default_host,
                        help="Name of this host (the Host object, Lease and provider name).",
                        show_default="$KOVA_HOST, $NODE_NAME or hostname")
    libvirt_uri: str = setting("qemu:///system", "libvirt connection URI.")
    user_data_from: str = setting(
        "secret", "Where the user data of spec.userData.secretRef comes from: 'operator' "
        "(sealed for this host in the Instance's status.sealedUserData; the agent needs no "
        "access to Secrets, as the chart installs it) or 'secret' (read from the Secret).",
        type=click.Choice(["operator", "secret"]))
    instance_dir: Path = setting(
        Path("/var/lib/kova/instances"),
        "Overlays, seeds and console logs, one directory per instance uid.",
        type=click.Path(file_okay=False, path_type=Path))
    image_cache_dir: Path | None = setting(
        None, "Image cache (default: <instance-dir>/_base).",
        type=click.Path(file_okay=False, path_type=Path))
    placement_url: str | None = setting(
        None, "Placement endpoint; without it no resource provider is registered.",
        env="KOVA_PLACEMENT_URL")
    placement_token: str | None = setting(None, "X-Auth-Token for Placement.",
                                          env="KOVA_PLACEMENT_TOKEN")
    placement_token_file: str | None = setting(
        None, "A file holding the agent's own token for Placement, read again when it "
        "changes: a projected service-account token with the audience kova-placement, which "
        "Placement (--k8s-agent) knows by its pod's node and keeps to this host's resource "
        "provider. Instead of --placement-token (the shared admin token).",
        env="KOVA_PLACEMENT_TOKEN_FILE")
    placement_ca_file: str | None = setting(
        None, "CA bundle (PEM) that signed an https:// Placement's certificate (default: the "
        "system's trust store).", env="KOVA_PLACEMENT_CA_FILE",
        type=click.Path(exists=True, dir_okay=False))
    placement_retry_seconds: float = setting(
        10.0, "How long a Placement call is retried (connection errors, 502/503/504) before "
        "the host sync gives up until the next resync.", type=click.FloatRange(min=0))
    image_ca_file: str | None = setting(
        None, "CA bundle (PEM) trusted for https:// image URLs, in addition to the system's "
        "trust store (default: the system's trust store only).",
        type=click.Path(exists=True, dir_okay=False), convert=_ca_file)
    image_host_dirs: tuple[str, ...] = setting(
        ("/var/lib/kova/images",), "Directory that Images' source.hostPath may name files in "
        "(repeatable); any other path is refused.", flag="--image-host-dir", metavar="DIR")
    image_url_blocked_networks: tuple[str, ...] = setting(
        (), "Network (CIDR) image URLs must not reach, besides loopback, link-local and "
        "multicast, e.g. the cluster's pod and service networks (repeatable).",
        flag="--image-url-blocked-network", metavar="CIDR", convert=_networks)
    image_url_allowed_networks: tuple[str, ...] = setting(
        (), "Network (CIDR) image URLs may reach even if it is blocked, e.g. an image "
        "store on a cluster address (repeatable).",
        flag="--image-url-allowed-network", metavar="CIDR", convert=_networks)
    image_store_url: str | None = setting(
        None, "URL of Kova's image store (kova images serve); image URLs under it are "
        "fetched with the agent's Kubernetes token.")
    image_store_ca_file: str | None = setting(
        None, "CA (PEM) that signed the certificate of Kova's image store, trusted for "
        "https:// image URLs and snapshot uploads besides --image-ca-file and the system's "
        "trust store (the chart sets it with images.enabled).",
        type=click.Path(exists=True, dir_okay=False), convert=_ca_file)
    image_max_bytes: int = setting(
        64 << 30, "Largest image file the agent fetches, in bytes (0: no limit).",
        type=click.IntRange(min=0))
    image_download_seconds: float = setting(
        3600.0, "Longest an image download may take, in seconds (0: no limit).",
        type=click.FloatRange(min=0))
    kubeconfig: str | None = setting(
        None, "kubeconfig file (default: in-cluster service account, then ~/.kube/config).",
        env="KUBECONFIG")
    domain_type: str = setting(
        "qemu", "kvm on real hardware; qemu for software emulation (nested or CI hosts).",
        type=click.Choice(["qemu", "kvm"]))
    machine: str = setting("pc", "QEMU machine type of the guests.")
    cpu_mode: str | None = setting(
        None, "Guest CPU (default: host-model with kvm, QEMU's default with qemu).",
        type=click.Choice(["none", "host-model", "host-passthrough"]))
    guest_vcpu_scheduler: str = setting(
        "default", "Linux scheduling class of the guests' vCPU threads (libvirt vcpusched): "
        "idle lets running guests yield the CPUs to libvirtd, QEMU start-up and the agent "
        "(for overcommitted software-emulation hosts).",
        type=click.Choice(["default", "batch", "idle"]))
    network: str | None = setting(None, "libvirt network for the guests' NIC (none: no NIC).")
    bridge: str | None = setting(None, "Host bridge for the guests' NIC (instead of --network).")
    guest_network_filter: bool = setting(
        True, "Put libvirt's clean-traffic filter and Kova's block list (kova-guest-* nwfilters) "
        "on every guest NIC: no MAC/IP/ARP spoofing, no link-local, node, API server, "
        "Placement or --guest-blocked-network addresses.")
    guest_blocked_networks: tuple[str, ...] = setting(
        (), "Network (CIDR) guests must not reach, besides link-local, the node's own "
        "addresses, the API server and Placement: the cluster's control-plane, pod and "
        "service networks (repeatable).",
        flag="--guest-blocked-network", metavar="CIDR", convert=_networks)
    node_addresses: tuple[str, ...] = setting(
        (), "This node's addresses, blocked for guests besides the local addresses the agent "
        "sees and the guest network's gateway (the chart gives the node's status.hostIP: the "
        "agent's pod has a network namespace of its own) (repeatable).",
        flag="--node-address", metavar="CIDR", convert=_networks)
    guest_allowed_networks: tuple[str, ...] = setting(
        (), "Network (CIDR) guests may reach even if it is blocked (repeatable).",
        flag="--guest-allowed-network", metavar="CIDR", convert=_networks)
    disk_cache: str | None = setting(
        None, "Cache mode of the guests' disks (default: none if the instance directory "
        "supports O_DIRECT, else writeback).",
        type=click.Choice(["none", "writeback", "writethrough", "directsync", "unsafe"]))
    metrics_port: int | None = setting(
        9465, "/metrics and /healthz on this port (0: off; -1 is taken as 0).",
        type=click.IntRange(min=-1), convert=off_if_negative)
    metrics_bind: str = setting("0.0.0.0", "Address the metrics server listens on.")
    workers: int = setting(4, "Concurrent reconciles.", type=click.IntRange(min=1))
    resync_seconds: float = setting(
        30.0, "Seconds between full resyncs (every Instance and domain looked at again).",
        type=click.FloatRange(min=0.1))
    host_check_seconds: float = setting(
        5.0, "Seconds between checks that libvirtd and Placement answer (the Host's "
        "HypervisorReachable and PlacementRegistered conditions).",
        type=click.FloatRange(min=0.1))
    shutdown_timeout: float = setting(
        60.0, "Seconds a guest gets to power off cleanly before it is destroyed.",
        type=click.FloatRange(min=0))
    lease_duration_seconds: int = setting(
        names.LEASE_DURATION_SECONDS,
        "Heartbeat Lease duration: the host is Down this long after the last renewal.",
        type=click.IntRange(min=2))
    lease_renew_seconds: float = setting(
        names.LEASE_RENEW_SECONDS,
        "How often the Lease is renewed (well below the duration).",
        type=click.FloatRange(min=0.2))
    lease_namespace: str = setting(
        names.LEASE_NAMESPACE, "Namespace of the heartbeat Leases (the operator's "
        "--lease-namespace: the same value on both sides).", env="KOVA_LEASE_NAMESPACE")
    image_cache_ttl: float = setting(
        24 * 3600.0, "Seconds before a cached image no instance uses is removed (0: never).",
        type=click.FloatRange(min=0))
    image_cache_min_free_percent: float = setting(
        5.0, "Evict cached images no instance uses, least recently used first, while the "
        "cache's file system has less than this percentage free (0: never).",
        type=click.FloatRange(0, 100))
    image_cache_check_seconds: float = setting(
        600.0, "Seconds between checks of the image cache for images to evict.",
        type=click.FloatRange(min=0.1))
    vnc: bool = setting(
        True, "Give new domains a VGA display whose VNC server listens on no address "
        "(reached through libvirt, for kubectl kova vnc).")
    stream_cert_file: str | None = setting(
        None, "Serving certificate (PEM) of the stream endpoint that Kova's API component "
        "reaches consoles, VNC and power actions through; without it the endpoint is off.",
        type=click.Path(exists=True, dir_okay=False))
    stream_key_file: str | None = setting(
        None, "The private key (PEM) of --stream-cert-file.",
        type=click.Path(exists=True, dir_okay=False))
    stream_client_ca_file: str | None = setting(
        None, "CA (PEM) that signed the API component's client certificate; no other client "
        "is accepted.", type=click.Path(exists=True, dir_okay=False))
    stream_allowed_clients: tuple[str, ...] = setting(
        (names.STREAM_CLIENT_NAME,), "Common name a client certificate of the stream endpoint "
        "must carry (repeatable).", flag="--stream-allowed-client", metavar="NAME")
    stream_port: int = setting(
        9466, "Port of the stream endpoint (0: any free port, advertised as it is; the "
        "endpoint is off without --stream-cert-file).", type=click.IntRange(0, 65535))
    stream_bind: str = setting("0.0.0.0", "Address the stream endpoint listens on.")
    stream_advertise_address: str | None = setting(
        None, "Address written into the Host's status.streamEndpoint (default: the bind "
        "address, or this machine's own address); the chart gives the pod's IP.")
    migration_client_cert_file: str | None = setting(
        None, "Client certificate (PEM) this agent presents to another agent's stream "
        "endpoint to send it an Instance's disk (a cold migration); its common name must be "
        "in the destination's --stream-allowed-client list. Without it this host cannot "
        "migrate Instances away.", type=click.Path(exists=True, dir_okay=False))
    migration_client_key_file: str | None = setting(
        None, "The private key (PEM) of --migration-client-cert-file.",
        type=click.Path(exists=True, dir_okay=False))
    migration_ca_file: str | None = setting(
        None, "CA (PEM) that signed the other agents' stream certificates (default: "
        "--stream-client-ca-file).", type=click.Path(exists=True, dir_okay=False))
    live_migration_uri: str | None = setting(
        None, "This host's libvirt URI as the other hosts' libvirtd reach it for a live "
        "migration (e.g. qemu+tls://node-2.example/system); written into "
        "status.migration.destUri when this host prepares to receive a guest. Unset: this "
        "host cannot receive live migrations.")
    live_migration_timeout: float = setting(
        600.0, "Seconds a live migration sent from this host may take before it is aborted "
        "(the guest keeps running here).")
    live_migration_bandwidth_mib: int = setting(
        0, "MiB/s limit for a live migration sent from this host (0: no limit).")
    live_migration_post_copy: bool = setting(
        False, "Switch a live migration that has not converged to post-copy (after 10 s of "
        "memory copy or 3 iterations); auto-converge is always on.")
    log_level: str = level_setting()
    log_format: str = format_setting()

    @property
    def stream(self) -> bool:
        """Whether the stream endpoint is served."""
        return bool(self.stream_cert_file)
