"""The operator's settings: ``kova operator run`` and ``kova operator audit``
options and their ``KOVA_OPERATOR_*`` environment variables, each default
written once here (see :mod:`kova.settings`; the table in docs/operator.md is
generated from these fields)."""

from __future__ import annotations

from dataclasses import dataclass

import click

from kova.crds import names
from kova.operator.scheduler.filters import DEFAULT_FILTERS, FILTERS
from kova.operator.scheduler.scheduler import SchedulerConfig
from kova.operator.scheduler.weighers import WeighConfig
from kova.settings import format_setting, level_setting, off_if_negative, setting

PREFIX = "KOVA_OPERATOR_"


def _filters(value: str) -> str:
    chosen = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in FILTERS]
    if unknown:
        raise ValueError(f"unknown filter(s) {unknown}; known: {list(FILTERS)}")
    return ",".join(chosen)


def _namespaces(value: tuple[str, ...]) -> tuple[str, ...]:
    """Repeated flags, or one variable holding several (comma or space separated)."""
    return tuple(n for v in value for n in v.replace(",", " ").split() if n)


@dataclass
class ClientSettings:
    """What every operator command needs: the API server and Placement."""

    kubeconfig: str | None = setting(
        None, "Kubeconfig file (default: in-cluster, then ~/.kube/config).", env="KUBECONFIG")
    placement_url: str = setting("http://127.0.0.1:8778", "Base URL of the Placement API.")
    placement_token: str | None = setting(None, "X-Auth-Token for Placement.",
                                          show_default=False)
    placement_ca_file: str | None = setting(
        None, "CA bundle (PEM) that signed an https:// Placement's certificate (default: the "
        "system's trust store).", type=click.Path(exists=True, dir_okay=False))
    placement_retry_seconds: float = setting(
        30.0, "How long a Placement call is retried (connection errors, 502/503/504) before "
        "the reconcile fails and is retried with back-off.",
        type=click.FloatRange(min=0))
    log_level: str = level_setting()
    log_format: str = format_setting()


@dataclass
class Settings(ClientSettings):
    """``kova operator run``."""

    namespaces: tuple[str, ...] = setting(
        factory=tuple, help="Handle Instances in this namespace only (repeatable).",
        flag="--namespace", metavar="NAMESPACE", convert=_namespaces)
    all_namespaces: bool = setting(
        False, "Handle Instances in every namespace (the default without --namespace).",
        flag="--all-namespaces")
    peering: bool = setting(
        True, "Leader election through kopf peering, or run alone (one replica).",
        flag="--peering/--standalone")
    peering_name: str = setting("kova", "Name of the kopf peering object.")
    priority: int | None = setting(
        None, "Peering priority (default: random, so replicas never tie).")
    share_instances: bool = setting(
        False, "Every replica schedules: the Instances are shared among the live replicas "
        "by a hash of their uid (or server group), membership through one "
        "coordination.k8s.io Lease per replica in --member-namespace; the oldest live "
        "replica alone runs the host monitor's writes, provider syncs and the audit. kopf "
        "peering is not used then.", flag="--share-instances/--no-share-instances")
    replica_identity: str | None = setting(
        None, "This replica's name among the replicas (its member Lease is "
        "<peering-name>-<identity>; default: host name and process id).",
        show_default=False)
    replica_pod_uid: str | None = setting(
        None, "uid of the Pod named --replica-identity that runs this replica (the chart "
        "sets it): the member Lease is owned by the Pod and deleted with it.",
        show_default=False)
    member_namespace: str | None = setting(
        None, "Namespace of the replicas' member Leases (default: --lease-namespace).",
        show_default=False)
    member_lease_seconds: int = setting(
        15, "Duration of a replica's member Lease (renewed every third of it): a replica "
        "that dies is replaced in its share of the Instances within about this long.",
        type=click.IntRange(min=1))
    lease_namespace: str = setting(
        names.LEASE_NAMESPACE, "Namespace of the hosts' heartbeat Leases (the agents' "
        "--lease-namespace: the same value on both sides).", env="KOVA_LEASE_NAMESPACE")
    metrics_port: int = setting(9090, "Prometheus metrics on this port (0: off).",
                                type=click.IntRange(min=-1), convert=off_if_negative)
    health_port: int = setting(
        0, "Serve kopf's liveness probe on http://0.0.0.0:PORT/healthz (0: off).",
        type=click.IntRange(min=-1), convert=off_if_negative)
    workers: int = setting(16, "Concurrent reconciles.", type=click.IntRange(min=1))
    max_attempts: int = setting(3, "Build attempts per Instance before phase Error.",
                                type=click.IntRange(min=1))
    weigh: str = setting("spread", "Prefer the hosts with the most (spread) or least (pack) "
                         "free resources.", type=click.Choice(["spread", "pack"]))
    ram_weight: float = setting(1.0, "Multiplier of the free-RAM weigher.")
    cpu_weight: float = setting(0.0, "Multiplier of the free-vCPU weigher.")
    disk_weight: float = setting(0.0, "Multiplier of the free-disk weigher.")
    soft_affinity_weight: float = setting(
        1.0, "Multiplier of the soft-affinity weigher (members on the host).")
    soft_anti_affinity_weight: float = setting(
        1.0, "Multiplier of the soft-anti-affinity weigher (members not on the host).")
    build_failure_weight: float = setting(
        1_000_000.0, "Multiplier of the recent-build-failures weigher (hosts that failed "
        "builds lately come last).")
    build_failure_window: float = setting(
        600.0, "Seconds a build failure counts against its host.")
    host_subset_size: int = setting(1, "Pick randomly among the best N hosts.",
                                    type=click.IntRange(min=1))
    max_placement_results: int = setting(
        100, "Nova's max_placement_results: `limit` of GET /allocation_candidates (0: all). "
        "Needs Placement's --randomize-allocation-candidates to spread over more hosts "
        "than this.", aliases=("--candidate-limit",),
        env_aliases=(PREFIX + "CANDIDATE_LIMIT",), type=click.IntRange(min=0))
    max_batch: int = setting(
        256, "Most new Instances decided and claimed together (1: one at a time).",
        type=click.IntRange(min=1))
    filters: str = setting(",".join(DEFAULT_FILTERS),
                           "Filters to apply, in order (comma separated).", convert=_filters)
    image_traits: bool = setting(
        True, "Require HW_ARCH_* / COMPUTE_FIRMWARE_UEFI from image properties.")
    host_check_interval: float = setting(2.0, "Longest sleep of the Lease expiry timer "
                                         "(it wakes at the earliest Lease deadline).",
                                         type=click.FloatRange(min=0.05))
    heartbeat_grace: float = setting(
        0.0, "Seconds past a Lease's expiry before a host is Down.",
        type=click.FloatRange(min=0))
    shutdown_grace: float = setting(
        20.0, "Seconds from SIGTERM to exit at the latest: what the orderly shutdown has not "
        "finished by then is cut short (keep it under the pod's "
        "terminationGracePeriodSeconds).", type=click.FloatRange(min=0.1))
    node_fencing: bool = setting(
        True, "Watch Nodes: a Node tainted node.kubernetes.io/out-of-service fences the Host "
        "of the same name (needs get/list/watch on nodes).")
    seal_user_data: bool = setting(
        True, "Seal the user data of spec.userData.secretRef for the Instance's host "
        "(status.sealedUserData; agents run with --user-data-from operator and need no "
        "access to Secrets). Needs get on secrets.")
    resize_confirm_window: float = setting(
        3600.0, "Seconds a resize or cold migration waits in ResizeVerify for a confirm or "
        "revert before it is confirmed on its own (0: it waits for the user; Nova's "
        "resize_confirm_window).", type=click.FloatRange(min=0))
    allow_resize_to_same_host: bool = setting(
        True, "A resize may stay on the Instance's host (Nova's allow_resize_to_same_host).",
        flag="--allow-resize-to-same-host/--no-allow-resize-to-same-host")
    drain_parallel: int = setting(
        2, "Instances a host drain (Host spec.drain) moves at the same time, per host "
        "(a Host's spec.drainParallel overrides it).", type=click.IntRange(1, 64))
    drain_retry_interval: float = setting(
        60.0, "Seconds before a drain tries again to move an Instance it could not move "
        "(no valid host, a failed live migration).", type=click.FloatRange(min=1))
    audit_interval: float = setting(300.0, "Seconds between allocation audits (0: off).",
                                    type=click.FloatRange(min=0))
    audit_heal: bool = setting(
        True, "Let the periodic audit heal what it finds: delete orphan allocations (a "
        "consumer with no Instance, e.g. after its finalizer was removed by hand) and "
        "claim missing ones again.")
    events: bool = setting(True, "Post Kubernetes Events (Scheduled, NoValidHost, ...).")
    event_qps: float = setting(
        5.0, "Normal Events (Scheduled, Rescheduled, ...) per second, in bursts of "
        "--event-burst; more are dropped (the status has the same). 0: no limit. Warning "
        "Events are never limited.", type=click.FloatRange(min=0))
    event_burst: int = setting(25, "Burst of --event-qps.", type=click.IntRange(min=1))
    backoff_base: float = setting(
        2.0, "First retry delay (seconds) of an Instance that waits (NoValidHost, a "
        "missing Flavor, a failed reconcile); doubled each time.",
        type=click.FloatRange(min=0.01))
    backoff_max: float = setting(60.0, "Longest retry delay (seconds).",
                                 type=click.FloatRange(min=0.01))

    @property
    def scheduler(self) -> SchedulerConfig:
        weigh = WeighConfig.strategy(
            self.weigh, ram=self.ram_weight, cpu=self.cpu_weight, disk=self.disk_weight,
            soft_affinity=self.soft_affinity_weight,
            soft_anti_affinity=self.soft_anti_affinity_weight,
            build_failure=self.build_failure_weight)
        return SchedulerConfig(filters=tuple(f for f in self.filters.split(",") if f),
                               weigh=weigh,
                               host_subset_size=self.host_subset_size,
                               candidate_limit=self.max_placement_results)
