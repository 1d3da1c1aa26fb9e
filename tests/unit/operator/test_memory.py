"""The operator's memory is bounded: everything it keeps about an Instance
goes in one ``forget`` when the Instance is deleted, a server group's lock
exists only while it is used, and a Host's or Node's entries go when it
goes."""

from __future__ import annotations

import asyncio

import pytest

from kova.crds import names
from kova.kube import Credentials, Kube
from kova.operator.context import Context
from kova.operator.host.controller import HostController
from kova.operator.host.view import HostView
from kova.operator.informer import Informer
from kova.operator.ledger import GroupLocks, Ledger
from kova.operator.recorder import EventRecorder
from kova.operator.scheduler.weighers import BuildFailures
from kova.operator.settings import Settings
from kova.placement_client import PlacementClient
from kova.workqueue import AsyncWorkQueue

KEY = ("inst", "ns", "vm-1")


def filled_ledger(uid: str = "u1") -> Ledger:
    ledger = Ledger()
    ledger.claimed(uid, "h1")
    ledger.restarted(uid, "img/1")
    ledger.failed(uid)
    ledger.unrecorded[uid] = "h1"
    ledger.no_claim.add(uid)
    ledger.wait(KEY)
    ledger.backoff(KEY, 1.0, 10.0)
    return ledger


def test_forget_drops_everything_about_an_instance():
    ledger = filled_ledger()
    ledger.claimed("u2", "h2")  # another Instance: kept
    assert all(n > 0 for k, n in ledger.sizes().items() if k != "group_locks")
    ledger.forget("u1", KEY)
    assert ledger.own_hosts == {"u2": "h2"}
    assert {k: n for k, n in ledger.sizes().items() if k != "own_hosts"} == dict.fromkeys(
        ["unrecorded", "no_claim", "pending", "retries", "errored", "retried", "group_locks"],
        0)


def test_forget_without_a_uid_drops_the_key_state():
    ledger = Ledger()
    ledger.wait(KEY)
    ledger.backoff(KEY, 1.0, 10.0)
    ledger.forget(None, KEY)
    assert not ledger.pending and not ledger.retries


def test_claim_bookkeeping():
    ledger = Ledger()
    ledger.no_claim.add("u1")
    ledger.claimed("u1", "h1")
    assert ledger.own_hosts["u1"] == "h1" and "u1" not in ledger.no_claim
    assert ledger.host_of("u1", None) == "h1" and ledger.host_of("u1", "h9") == "h9"
    ledger.unrecorded["u2"] = "h3"
    assert ledger.member_host("u2", None) == "h3"
    ledger.released("u1")
    assert ledger.host_of("u1", None) is None
    ledger.new_term()
    assert not ledger.unrecorded and not ledger.no_claim


def test_backoff_doubles_up_to_the_cap_and_resets():
    ledger = Ledger()
    delays = [ledger.backoff(KEY, 1.0, 5.0) for _ in range(6)]
    for delay, base in zip(delays, [1, 2, 4, 5, 5, 5]):
        assert base * 0.8 <= delay <= base * 1.2
    ledger.reset_backoff(KEY)
    assert ledger.backoff(KEY, 1.0, 5.0) <= 1.2


async def test_group_locks_serialize_and_vanish_when_unused():
    locks = GroupLocks()
    order: list[str] = []

    async def member(name: str) -> None:
        async with locks.hold("ns", "web"):
            order.append(f"{name}+")
            await asyncio.sleep(0.01)
            order.append(f"{name}-")

    await asyncio.gather(member("a"), member("b"), member("c"))
    assert order in ([f"{x}{s}" for x in p for s in "+-"]
                     for p in ("abc", "acb", "bac", "bca", "cab", "cba"))
    assert len(locks) == 0
    async with locks.hold("ns", "web"), locks.hold("ns", "db"):
        assert len(locks) == 2
    assert len(locks) == 0


async def test_group_lock_released_when_the_holder_fails():
    locks = GroupLocks()
    with pytest.raises(RuntimeError):
        async with locks.hold("ns", "web"):
            raise RuntimeError("schedule failed")
    assert len(locks) == 0
    async with locks.hold("ns", "web"):  # not left locked
        pass


# ============================================================ hosts
def host(name: str, fenced: bool = False, rp: str | None = "rp-1") -> dict:
    return {"metadata": {"name": name}, "spec": {"fenced": fenced},
            "status": {"resourceProviderUUID": rp} if rp else {}}


def informer_with(*bodies: dict) -> Informer:
    """An informer whose Host cache holds ``bodies``."""
    informer = Informer(Credentials("https://127.0.0.1:1"))
    informer.hosts_watch.items.update({b["metadata"]["name"]: b for b in bodies})
    return informer


def test_host_view_forgets_a_deleted_host():
    view = HostView(informer_with(host("h1"), host("h2", rp="rp-2")))
    view.alive.update(h1=True, h2=False)
    view.spec_changed("h1", host("h1"))
    view.spec_changed("h2", host("h2", rp="rp-2"))
    assert view.host_by_rp("rp-2") is None  # not verified in Placement yet
    assert view.host_by_name("h2").rp_uuid is None
    assert view.provider_checked("h1", "rp-1", True)
    assert view.provider_checked("h2", "rp-2", True)
    assert view.host_by_name("h1").alive and view.host_by_rp("rp-2").name == "h2"
    version = view.version
    view.informer.hosts_watch.items.pop("h1")
    view.forget("h1")
    assert "h1" not in view.alive and "h1" not in view.signatures
    assert view.sizes() == {"alive": 1, "node_oos": 0, "signatures": 1, "infos": 1}
    assert view.version > version and view.host_by_rp("rp-1") is None


def test_host_view_trusts_a_provider_only_once_verified():
    """A Host naming another host's provider gets none; the owner keeps it."""
    view = HostView(informer_with(host("h1"), host("h2", rp="rp-1")))
    view.alive.update(h1=True, h2=True)
    view.spec_changed("h1", host("h1"))
    view.provider_checked("h1", "rp-1", True)
    view.spec_changed("h2", host("h2", rp="rp-1"))
    assert not view.provider_checked("h2", "rp-1", False)  # was never trusted
    assert view.host_by_rp("rp-1").name == "h1"
    assert view.host_by_name("h2").rp_uuid is None
    # the provider of h1's status changes: trusted again only after a check
    view.informer.hosts_watch.items["h1"] = host("h1", rp="rp-9")
    view.spec_changed("h1", host("h1", rp="rp-9"))
    assert view.host_by_name("h1").rp_uuid is None and view.host_by_rp("rp-9") is None
    assert view.provider_checked("h1", "rp-9", True)
    assert view.host_by_rp("rp-9").name == "h1"


def test_host_view_notes_changes_and_fencing_flips():
    view = HostView(informer_with(host("h1")))
    assert view.spec_changed("h1", host("h1")) == (True, False)
    assert view.spec_changed("h1", host("h1")) == (False, False)
    assert view.spec_changed("h1", host("h1", fenced=True)) == (True, True)
    assert view.spec_changed("h1", host("h1", fenced=True, rp="rp-9")) == (True, False)


def test_node_taint_is_kept_only_while_present():
    view = HostView(informer_with(host("h1")))
    tainted = {"spec": {"taints": [{"key": names.TAINT_OUT_OF_SERVICE, "effect": "NoExecute"}]}}
    assert not view.node_changed("h1", {"spec": {}}, deleted=False)
    assert view.node_oos == {}
    assert view.node_changed("h1", tainted, deleted=False)
    assert view.fence_reason("h1") == names.HOST_REASON_FENCED_NODE
    assert view.host_by_name("h1").fenced
    assert not view.node_changed("h1", tainted, deleted=False)
    assert view.node_changed("h1", tainted, deleted=True)
    assert view.node_oos == {} and view.fence_reason("h1") is None


def test_spec_fence_wins_over_the_node():
    view = HostView(informer_with(host("h1", fenced=True)))
    view.node_oos["h1"] = True
    assert view.fence_reason("h1") == names.HOST_REASON_FENCED_SPEC


def test_down_means_an_expired_lease_not_a_missing_one():
    view = HostView(informer_with(host("h1")))
    view.alive["h1"] = False
    assert not view.is_down("h1")
    view.leases["h1"] = {"spec": {}}
    assert view.is_down("h1")


def context(informer: Informer) -> Context:
    """A Context over ``informer`` whose clients are never called here."""
    settings = Settings()
    kube = Kube(informer.creds)
    return Context(settings=settings, kube=kube,
                   placement=PlacementClient("http://127.0.0.1:1"), informer=informer,
                   ledger=Ledger(), hosts=HostView(informer), queue=AsyncWorkQueue(),
                   recorder=EventRecorder(kube, enabled=False),
                   failures=BuildFailures())


async def test_a_deleted_host_leaves_nothing_behind():
    informer = informer_with(host("h1"))
    ctx = context(informer)
    hosts = HostController(ctx)
    hosts.host_changed("h1", host("h1"), deleted=False)
    ctx.hosts.alive["h1"] = True
    hosts.synced["h1"] = ("rp-1", False, None)
    ctx.ledger.backoff(("host", "h1"), 1.0, 10.0)
    ctx.failures.record("h1")
    assert ctx.queue.delayed(("host", "h1")) or len(ctx.queue) == 1
    informer.hosts_watch.items.clear()
    hosts.host_changed("h1", host("h1"), deleted=True)
    assert hosts.synced == {} and ctx.ledger.retries == {} and not ctx.failures
    assert ctx.hosts.sizes() == {"alive": 0, "node_oos": 0, "signatures": 0, "infos": 0}
    ctx.queue.shutdown()
