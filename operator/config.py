"""Operator settings: one documented default each (flags and KOVA_OPERATOR_*
environment variables map onto these fields in :mod:`kova.operator.cli`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kova.operator.scheduler.scheduler import SchedulerConfig


@dataclass
class Settings:
    kubeconfig: str | None = None
    placement_url: str = "http://127.0.0.1:8778"
    placement_token: str | None = None
    #: CA bundle to verify an https:// Placement with (None: the system's).
    placement_ca_file: str | None = None
    #: Namespaces whose Instances are handled; empty with all_namespaces.
    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = True
    #: Leader election through kopf peering (False = standalone).
    peering: bool = True
    peering_name: str = "kova"
    #: Peering priority; None picks a random one, so replicas never tie.
    priority: int | None = None
    metrics_port: int | None = 9090
    health_port: int | None = None
    workers: int = 16
    #: Most new Instances decided and claimed together (kova.operator.scheduler.batch);
    #: 1 = one at a time.
    max_batch: int = 256
    max_attempts: int = 3
    backoff_base: float = 2.0
    backoff_max: float = 60.0
    host_check_interval: float = 2.0
    #: Extra seconds after a Lease's renewTime + leaseDurationSeconds before
    #: its Host counts as down.
    heartbeat_grace: float = 0.0
    #: Watch Nodes: a Node tainted node.kubernetes.io/out-of-service fences
    #: the Host of the same name (needs get/list/watch on nodes).
    node_fencing: bool = True
    audit_interval: float = 300.0
    audit_heal: bool = False
    image_traits: bool = True
    events: bool = True
    #: Normal (informational) Events per second, bucket of event_burst;
    #: 0 = no limit.  Warning Events are never limited.
    event_qps: float = 5.0
    event_burst: int = 25
    build_failure_window: float = 600.0
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
