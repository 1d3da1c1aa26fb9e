"""``kova operator run`` and ``kova operator audit``."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys

import click

from kova.operator.scheduler.filters import DEFAULT_FILTERS, FILTERS

ENV = "KOVA_OPERATOR_"


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
               "logger": record.name, "msg": record.getMessage()}
        for key in ("namespace", "name", "uid", "host"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("kopf").setLevel(root.level)
    logging.getLogger("httpcore").setLevel(logging.INFO)
    if root.level > logging.DEBUG:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _common(f):
    options = [
        click.option("--kubeconfig", envvar="KUBECONFIG", default=None,
                     help="Kubeconfig file (default: in-cluster, then ~/.kube/config)."),
        click.option("--placement-url", envvar=ENV + "PLACEMENT_URL",
                     default="http://127.0.0.1:8778", show_default=True,
                     help="Base URL of the Placement API."),
        click.option("--placement-token", envvar=ENV + "PLACEMENT_TOKEN", default=None,
                     help="X-Auth-Token for Placement (env KOVA_OPERATOR_PLACEMENT_TOKEN)."),
        click.option("--placement-ca-file", envvar=ENV + "PLACEMENT_CA_FILE", default=None,
                     type=click.Path(exists=True, dir_okay=False),
                     help="CA bundle (PEM) that signed an https:// Placement's certificate "
                          "(default: the system's trust store)."),
        click.option("--log-level", envvar=ENV + "LOG_LEVEL", default="info",
                     show_default=True),
        click.option("--log-format", envvar=ENV + "LOG_FORMAT",
                     type=click.Choice(["json", "text"]), default="json", show_default=True),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def register(group: click.Group) -> None:
    @group.command("run")
    @_common
    @click.option("--namespace", "namespaces", envvar=ENV + "NAMESPACES", multiple=True,
                  help="Handle Instances in this namespace only (repeatable).")
    @click.option("--all-namespaces", "all_namespaces", is_flag=True, default=False,
                  help="Handle Instances in every namespace (the default without --namespace).")
    @click.option("--peering/--standalone", envvar=ENV + "PEERING", default=True,
                  show_default=True,
                  help="Leader election through kopf peering, or run alone (one replica).")
    @click.option("--peering-name", envvar=ENV + "PEERING_NAME", default="kova",
                  show_default=True)
    @click.option("--priority", envvar=ENV + "PRIORITY", type=int, default=None,
                  help="Peering priority (default: random, so replicas never tie).")
    @click.option("--metrics-port", envvar=ENV + "METRICS_PORT", type=int, default=9090,
                  show_default=True, help="Prometheus metrics port (0 = off).")
    @click.option("--health-port", envvar=ENV + "HEALTH_PORT", type=int, default=0,
                  show_default=True,
                  help="Serve kopf's liveness probe on http://0.0.0.0:PORT/healthz (0 = off).")
    @click.option("--workers", envvar=ENV + "WORKERS", type=int, default=16, show_default=True,
                  help="Concurrent reconciles.")
    @click.option("--max-attempts", envvar=ENV + "MAX_ATTEMPTS", type=int, default=3,
                  show_default=True, help="Build attempts per Instance before phase Error.")
    @click.option("--weigh", "strategy", envvar=ENV + "WEIGH", default="spread",
                  type=click.Choice(["spread", "pack"]), show_default=True,
                  help="Prefer the hosts with the most (spread) or least (pack) free resources.")
    @click.option("--ram-weight", envvar=ENV + "RAM_WEIGHT", type=float, default=1.0,
                  show_default=True)
    @click.option("--cpu-weight", envvar=ENV + "CPU_WEIGHT", type=float, default=0.0,
                  show_default=True)
    @click.option("--disk-weight", envvar=ENV + "DISK_WEIGHT", type=float, default=0.0,
                  show_default=True)
    @click.option("--soft-affinity-weight", envvar=ENV + "SOFT_AFFINITY_WEIGHT", type=float,
                  default=1.0, show_default=True)
    @click.option("--soft-anti-affinity-weight", envvar=ENV + "SOFT_ANTI_AFFINITY_WEIGHT",
                  type=float, default=1.0, show_default=True)
    @click.option("--build-failure-weight", envvar=ENV + "BUILD_FAILURE_WEIGHT", type=float,
                  default=1_000_000.0, show_default=True)
    @click.option("--host-subset-size", envvar=ENV + "HOST_SUBSET_SIZE", type=int, default=1,
                  show_default=True, help="Pick randomly among the best N hosts.")
    @click.option("--max-placement-results", "--candidate-limit", "candidate_limit",
                  envvar=[ENV + "MAX_PLACEMENT_RESULTS", ENV + "CANDIDATE_LIMIT"], type=int,
                  default=100, show_default=True,
                  help="Nova's max_placement_results: `limit` of GET /allocation_candidates "
                       "(0 = all). Needs Placement's --randomize-allocation-candidates to "
                       "spread over more hosts than this.")
    @click.option("--max-batch", envvar=ENV + "MAX_BATCH", type=int, default=256,
                  show_default=True,
                  help="Most new Instances decided and claimed together (1 = one at a time).")
    @click.option("--filters", envvar=ENV + "FILTERS", default=",".join(DEFAULT_FILTERS),
                  show_default=True, help="Filters to apply, in order.")
    @click.option("--image-traits/--no-image-traits", envvar=ENV + "IMAGE_TRAITS", default=True,
                  show_default=True,
                  help="Require HW_ARCH_* / COMPUTE_FIRMWARE_UEFI from image properties.")
    @click.option("--host-check-interval", envvar=ENV + "HOST_CHECK_INTERVAL", type=float,
                  default=2.0, show_default=True, help="Seconds between Lease checks.")
    @click.option("--heartbeat-grace", envvar=ENV + "HEARTBEAT_GRACE", type=float, default=0.0,
                  show_default=True, help="Seconds past a Lease's expiry before a host is Down.")
    @click.option("--node-fencing/--no-node-fencing", envvar=ENV + "NODE_FENCING", default=True,
                  show_default=True,
                  help="Watch Nodes: a Node tainted node.kubernetes.io/out-of-service fences "
                  "the Host of the same name (needs get/list/watch on nodes).")
    @click.option("--audit-interval", envvar=ENV + "AUDIT_INTERVAL", type=float, default=300.0,
                  show_default=True, help="Seconds between allocation audits (0 = off).")
    @click.option("--audit-heal/--no-audit-heal", envvar=ENV + "AUDIT_HEAL", default=False,
                  show_default=True, help="Let the periodic audit heal what it finds.")
    @click.option("--events/--no-events", envvar=ENV + "EVENTS", default=True,
                  show_default=True, help="Post Kubernetes Events (Scheduled, NoValidHost, ...).")
    @click.option("--event-qps", envvar=ENV + "EVENT_QPS", type=float, default=5.0,
                  show_default=True,
                  help="Normal Events (Scheduled, Rescheduled, ...) per second, in bursts of "
                       "--event-burst; more are dropped (the status has the same). 0 = no "
                       "limit. Warning Events are never limited.")
    @click.option("--event-burst", envvar=ENV + "EVENT_BURST", type=int, default=25,
                  show_default=True)
    @click.option("--backoff-max", envvar=ENV + "BACKOFF_MAX", type=float, default=60.0,
                  show_default=True, help="Longest NoValidHost retry delay (seconds).")
    def run(kubeconfig, placement_url, placement_token, placement_ca_file, log_level, log_format,
            namespaces,
            all_namespaces, peering, peering_name, priority, metrics_port, health_port, workers,
            max_attempts, strategy, ram_weight, cpu_weight, disk_weight, soft_affinity_weight,
            soft_anti_affinity_weight, build_failure_weight, host_subset_size, candidate_limit,
            max_batch, filters,
            image_traits, host_check_interval, heartbeat_grace, node_fencing, audit_interval,
            audit_heal, events, event_qps, event_burst, backoff_max):
        """Run the scheduler, conductor and host monitor."""
        from kova.operator.config import Settings
        from kova.operator.scheduler.scheduler import SchedulerConfig
        from kova.operator.scheduler.weighers import WeighConfig

        names = tuple(n.strip() for n in filters.split(",") if n.strip())
        unknown = [n for n in names if n not in FILTERS]
        if unknown:
            raise click.BadParameter(f"unknown filter(s) {unknown}; known: {list(FILTERS)}",
                                     param_hint="--filters")
        if isinstance(namespaces, str):
            namespaces = tuple(n for n in namespaces.replace(",", " ").split() if n)
        if all_namespaces and namespaces:
            raise click.UsageError("--namespace and --all-namespaces exclude each other")
        setup_logging(log_level, log_format)
        weigh = WeighConfig.strategy(
            strategy, ram=ram_weight, cpu=cpu_weight, disk=disk_weight,
            soft_affinity=soft_affinity_weight, soft_anti_affinity=soft_anti_affinity_weight,
            build_failure=build_failure_weight)
        settings = Settings(
            kubeconfig=kubeconfig, placement_url=placement_url,
            placement_token=placement_token, placement_ca_file=placement_ca_file,
            namespaces=tuple(namespaces),
            all_namespaces=not namespaces, peering=peering, peering_name=peering_name,
            priority=priority, metrics_port=metrics_port or None,
            health_port=health_port or None, workers=workers, max_batch=max(1, max_batch),
            max_attempts=max_attempts, backoff_max=backoff_max,
            host_check_interval=host_check_interval, heartbeat_grace=heartbeat_grace,
            node_fencing=node_fencing,
            audit_interval=audit_interval, audit_heal=audit_heal, image_traits=image_traits,
            events=events, event_qps=max(0.0, event_qps), event_burst=max(1, event_burst),
            scheduler=SchedulerConfig(filters=names, weigh=weigh,
                                      host_subset_size=host_subset_size,
                                      candidate_limit=candidate_limit),
        )
        sys.exit(run_operator(settings))

    @group.command("audit")
    @_common
    @click.option("--heal", is_flag=True, help="Delete orphan allocations and claim missing ones.")
    @click.option("--namespace", "namespaces", multiple=True,
                  help="Only this namespace's Instances and allocations (repeatable; "
                       "default: all).")
    def audit(kubeconfig, placement_url, placement_token, placement_ca_file, log_level,
              log_format, heal, namespaces):
        """Compare Placement's allocations with the Instances; print a JSON report.

        Exit status 0 when clean (or everything was healed), 1 otherwise."""
        setup_logging(log_level if log_level != "info" else "warning", log_format)
        report = asyncio.run(_audit(kubeconfig, placement_url, placement_token, heal,
                                    placement_ca_file, namespaces))
        click.echo(json.dumps(report.as_dict(), indent=2))
        remaining = report.heal_failed if heal else (not report.clean)
        sys.exit(1 if remaining else 0)


async def _audit(kubeconfig, placement_url, placement_token, heal, placement_ca_file=None,
                 namespaces=()):
    from kova.operator.audit import run_audit
    from kova.operator.kube import Kube, KubeCredentials
    from kova.operator.placement import Placement

    kube = Kube(KubeCredentials.load(kubeconfig))
    placement = Placement(placement_url, placement_token, ca_file=placement_ca_file)
    try:
        return await run_audit(kube, placement, heal=heal, namespaces=tuple(namespaces))
    finally:
        await kube.close()
        await placement.close()


def run_operator(settings) -> int:
    from kova.operator.controller import Controller

    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port)
    controller = Controller(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if settings.peering:
            from kova.operator.peering import ensure_peering

            await ensure_peering(controller, settings)
        await controller.run(stop_flag=stop)

    asyncio.run(main())
    return 0
