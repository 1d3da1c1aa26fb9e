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
    @click.option("--log-level", envvar="KOVA_AGENT_LOG_LEVEL", default="info", show_default=True)
    @click.option("--log-format", envvar="KOVA_AGENT_LOG_FORMAT", type=click.Choice(["text", "json"]),
                  default="text", show_default=True)
    def run(host, libvirt_uri, instance_dir, image_cache_dir, placement_url, placement_token,
            placement_ca_file, image_ca_file,
            kubeconfig, domain_type, machine, cpu_mode, guest_vcpu_scheduler, network, bridge, metrics_port,
            metrics_bind, workers, resync_seconds, shutdown_timeout, lease_duration_seconds,
            lease_renew_seconds, lease_namespace, image_cache_ttl, log_level, log_format):
        """Run the compute agent for one host."""
        setup_logging(log_level, log_format)
        from kova.agents.agent import Agent, AgentConfig

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
