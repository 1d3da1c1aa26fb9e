"""``kova agent run``: the compute agent's command line.

Every option has an environment variable (``KOVA_AGENT_*``; the host name also
from ``KOVA_HOST`` or ``NODE_NAME``, which a DaemonSet sets from the downward
API ``spec.nodeName``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from pathlib import Path

import click


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, thread, message."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        out = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str, fmt: str) -> None:
    import sys
    import time

    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = JSONFormatter()
        formatter.converter = time.gmtime  # type: ignore[assignment]
    else:
        formatter = logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("kubernetes", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _default_host() -> str:
    return os.environ.get("KOVA_HOST") or os.environ.get("NODE_NAME") or socket.gethostname()


def register(group: click.Group) -> None:
    @group.command("run")
    @click.option("--host", default=_default_host, show_default="$KOVA_HOST, $NODE_NAME or hostname",
                  help="Name of this host (the Host object, Lease and provider name).")
    @click.option("--libvirt-uri", envvar="KOVA_AGENT_LIBVIRT_URI", default="qemu:///system",
                  show_default=True)
    @click.option("--instance-dir", envvar="KOVA_AGENT_INSTANCE_DIR",
                  default="/var/lib/kova/instances", show_default=True,
                  type=click.Path(file_okay=False, path_type=Path),
                  help="Overlays, seeds and console logs, one directory per instance uid.")
    @click.option("--image-cache-dir", envvar="KOVA_AGENT_IMAGE_CACHE_DIR", default=None,
                  type=click.Path(file_okay=False, path_type=Path),
                  help="Image cache (default: <instance-dir>/_base).")
    @click.option("--placement-url", envvar="KOVA_PLACEMENT_URL", default=None,
                  help="Placement endpoint; without it no resource provider is registered.")
    @click.option("--placement-token", envvar="KOVA_PLACEMENT_TOKEN", default=None)
    @click.option("--placement-ca-file", envvar="KOVA_PLACEMENT_CA_FILE", default=None,
                  type=click.Path(exists=True, dir_okay=False),
                  help="CA bundle (PEM) that signed an https:// Placement's certificate "
                       "(default: the system's trust store).")
    @click.option("--image-ca-file", envvar="KOVA_AGENT_IMAGE_CA_FILE", default=None,
                  type=click.Path(exists=True, dir_okay=False),
                  help="CA bundle (PEM) trusted for https:// image URLs, in addition to the "
                       "system's trust store (default: the system's trust store only).")
    @click.option("--kubeconfig", envvar="KUBECONFIG", default=None,
                  help="kubeconfig file (default: in-cluster service account, then ~/.kube/config).")
    @click.option("--domain-type", envvar="KOVA_AGENT_DOMAIN_TYPE",
                  type=click.Choice(["qemu", "kvm"]), default="qemu", show_default=True,
                  help="kvm on real hardware; qemu for software emulation (nested or CI hosts).")
    @click.option("--machine", envvar="KOVA_AGENT_MACHINE", default="pc", show_default=True)
    @click.option("--cpu-mode", envvar="KOVA_AGENT_CPU_MODE", default=None,
                  type=click.Choice(["none", "host-model", "host-passthrough"]),
                  help="Guest CPU (default: host-model with kvm, QEMU's default with qemu).")
    @click.option("--guest-vcpu-scheduler", envvar="KOVA_AGENT_GUEST_VCPU_SCHEDULER",
                  type=click.Choice(["default", "batch", "idle"]), default="default",
                  show_default=True,
                  help="Linux scheduling class of the guests' vCPU threads (libvirt vcpusched): "
                       "idle lets running guests yield the CPUs to libvirtd, QEMU start-up and "
                       "the agent (for overcommitted software-emulation hosts).")
    @click.option("--network", envvar="KOVA_AGENT_NETWORK", default=None,
                  help="libvirt network for the guests' NIC (none: no NIC).")
    @click.option("--bridge", envvar="KOVA_AGENT_BRIDGE", default=None,
                  help="Host bridge for the guests' NIC (instead of --network).")
    @click.option("--metrics-port", envvar="KOVA_AGENT_METRICS_PORT", default=9465,
                  show_default=True, type=int, help="/metrics and /healthz; -1 disables.")
    @click.option("--metrics-bind", envvar="KOVA_AGENT_METRICS_BIND", default="0.0.0.0",
                  show_default=True)
    @click.option("--workers", envvar="KOVA_AGENT_WORKERS", default=4, show_default=True, type=int)
    @click.option("--resync-seconds", envvar="KOVA_AGENT_RESYNC_SECONDS", default=30.0,
                  show_default=True, type=float)
    @click.option("--shutdown-timeout", envvar="KOVA_AGENT_SHUTDOWN_TIMEOUT", default=60.0,
                  show_default=True, type=float,
                  help="Seconds a guest gets to power off cleanly before it is destroyed.")
    @click.option("--lease-duration-seconds", envvar="KOVA_AGENT_LEASE_DURATION_SECONDS",
                  default=40, show_default=True, type=click.IntRange(min=2),
                  help="Heartbeat Lease duration: the host is Down this long after the last "
                  "renewal.")
    @click.option("--lease-renew-seconds", envvar="KOVA_AGENT_LEASE_RENEW_SECONDS",
                  default=10.0, show_default=True, type=click.FloatRange(min=0.2),
                  help="How often the Lease is renewed (well below the duration).")
    @click.option("--lease-namespace", envvar="KOVA_LEASE_NAMESPACE", default="kova-system",
                  show_default=True, help="Namespace of the heartbeat Leases.")
    @click.option("--image-cache-ttl", envvar="KOVA_AGENT_IMAGE_CACHE_TTL", default=86400.0,
                  show_default=True, type=float,
                  help="Seconds before a cached image no instance uses is removed (0: never).")
    @click.option("--vnc/--no-vnc", envvar="KOVA_AGENT_VNC", default=True, show_default=True,
                  help="Give new domains a VGA display whose VNC server listens on no address "
                       "(reached through libvirt, for kubectl kova vnc).")
    @click.option("--stream-cert-file", envvar="KOVA_AGENT_STREAM_CERT_FILE", default=None,
                  type=click.Path(exists=True, dir_okay=False),
                  help="Serving certificate (PEM) of the stream endpoint that Kova's API "
                       "component reaches consoles, VNC and power actions through; without it "
                       "the endpoint is off.")
    @click.option("--stream-key-file", envvar="KOVA_AGENT_STREAM_KEY_FILE", default=None,
                  type=click.Path(exists=True, dir_okay=False), help="Its private key.")
    @click.option("--stream-client-ca-file", envvar="KOVA_AGENT_STREAM_CLIENT_CA_FILE",
                  default=None, type=click.Path(exists=True, dir_okay=False),
                  help="CA (PEM) that signed the API component's client certificate; no "
                       "other client is accepted.")
    @click.option("--stream-allowed-client", "stream_allowed_clients", multiple=True,
                  default=("kova-api",), show_default=True,
                  help="Common name a client certificate must carry (repeatable).")
    @click.option("--stream-port", envvar="KOVA_AGENT_STREAM_PORT", default=9466,
                  show_default=True, type=click.IntRange(0, 65535),
                  help="Port of the stream endpoint (0: any free port).")
    @click.option("--stream-bind", envvar="KOVA_AGENT_STREAM_BIND", default="0.0.0.0",
                  show_default=True)
    @click.option("--stream-advertise-address", envvar="KOVA_AGENT_STREAM_ADDRESS",
                  default=None,
                  help="Address written into the Host's status.streamEndpoint (default: the "
                       "bind address, or this machine's own address); the chart gives the "
                       "pod's IP.")
    @click.option("--log-level", envvar="KOVA_AGENT_LOG_LEVEL", default="info", show_default=True)
    @click.option("--log-format", envvar="KOVA_AGENT_LOG_FORMAT", type=click.Choice(["text", "json"]),
                  default="text", show_default=True)
    def run(host, libvirt_uri, instance_dir, image_cache_dir, placement_url, placement_token,
            placement_ca_file, image_ca_file,
            kubeconfig, domain_type, machine, cpu_mode, guest_vcpu_scheduler, network, bridge, metrics_port,
            metrics_bind, workers, resync_seconds, shutdown_timeout, lease_duration_seconds,
            lease_renew_seconds, lease_namespace, image_cache_ttl, vnc, stream_cert_file,
            stream_key_file, stream_client_ca_file, stream_allowed_clients, stream_port,
            stream_bind, stream_advertise_address, log_level, log_format):
        """Run the compute agent for one host."""
        setup_logging(log_level, log_format)
        from kova.agents.agent import Agent, AgentConfig
        from kova.agents.stream import StreamConfig

        stream = None
        if stream_cert_file:
            if not (stream_key_file and stream_client_ca_file):
                raise click.UsageError("--stream-cert-file needs --stream-key-file and "
                                       "--stream-client-ca-file (mutual TLS, nothing less)")
            stream = StreamConfig(
                cert_file=stream_cert_file, key_file=stream_key_file,
                client_ca_file=stream_client_ca_file, port=stream_port, bind=stream_bind,
                advertise_address=stream_advertise_address,
                allowed_clients=tuple(stream_allowed_clients))

        if network and bridge:
            raise click.UsageError("--network and --bridge are exclusive")
        if image_ca_file:
            from kova.agents.images import tls_context

            try:
                tls_context(image_ca_file)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--image-ca-file") from None
        cfg = AgentConfig(
            host=host, libvirt_uri=libvirt_uri, instance_dir=instance_dir,
            image_cache_dir=image_cache_dir, placement_url=placement_url,
            placement_token=placement_token, placement_ca_file=placement_ca_file,
            image_ca_file=image_ca_file, kubeconfig=kubeconfig, domain_type=domain_type,
            machine=machine, cpu_mode=cpu_mode, guest_vcpu_scheduler=guest_vcpu_scheduler,
            network=network, bridge=bridge,
            metrics_port=None if metrics_port < 0 else metrics_port, metrics_bind=metrics_bind,
            workers=workers, resync_seconds=resync_seconds, shutdown_timeout=shutdown_timeout,
            image_cache_ttl=image_cache_ttl, lease_namespace=lease_namespace,
            lease_duration_seconds=lease_duration_seconds, lease_renew_seconds=lease_renew_seconds,
            vnc=vnc, stream=stream,
        )
        if lease_renew_seconds >= lease_duration_seconds:
            raise click.BadParameter("must be shorter than --lease-duration-seconds",
                                     param_hint="--lease-renew-seconds")
        agent = Agent(cfg)

        def _term(signum, _frame):
            logging.getLogger("kova.agents").info("signal %d: stopping (domains keep running)",
                                                  signum)
            agent._stop.set()

        signal.signal(signal.SIGTERM, _term)
        signal.signal(signal.SIGINT, _term)
        agent.run_forever()
