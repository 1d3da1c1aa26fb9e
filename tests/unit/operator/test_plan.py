"""The operator's decisions as a pure function: ``next_step(instance, facts)``
for new builds, reschedules after failed builds, evacuation from fenced
hosts, Down hosts, deletion, phase Error and image retries, and stale copies
of the operator's own writes; then properties over generated Instances."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as s

from kova.crds import names
from kova.operator.instance import plan
from kova.operator.instance.plan import Action, Facts, HostFacts, next_step

from .instances import HOST, build_failed, instance

A = Action
UP = HostFacts(exists=True)
DOWN = HostFacts(exists=True, down=True)
FENCED = HostFacts(exists=True, fenced=names.HOST_REASON_FENCED_SPEC)
NODE_FENCED = HostFacts(exists=True, fenced=names.HOST_REASON_FENCED_NODE)
FENCED_NO_HOST_OBJECT = HostFacts(exists=False, fenced=names.HOST_REASON_FENCED_NODE)
BOTH = (names.FINALIZER_AGENT, names.FINALIZER_OPERATOR)

# (id, Instance, Facts, expected actions, settled)
CASES = [
    # ---- new builds
    ("gone", None, Facts(), (A.NOTHING,), True),
    ("new", instance(), Facts(), (A.BUILD,), False),
    ("new, no finalizer yet", instance(finalizers=()), Facts(), (A.BUILD,), False),
    ("pending after NoValidHost", instance(phase=names.InstancePhase.PENDING, conditions=[
        {"type": names.COND_SCHEDULED, "status": "False",
         "reason": names.REASON_NO_VALID_HOST, "message": "no room"}]), Facts(),
     (A.BUILD,), False),
    ("pending after retry (host cleared)", instance(phase=names.InstancePhase.PENDING),
     Facts(retried_image="u/1", image_identity="u/2"), (A.BUILD,), False),
    ("member of a server group", instance(group="web"), Facts(), (A.BUILD,), False),
    ("stale: claimed, status not seen yet", instance(), Facts(own_host=HOST),
     (A.NOTHING,), False),
    ("stale: put in Error, watch behind", instance(phase=names.InstancePhase.PENDING),
     Facts(errored=True), (A.NOTHING,), False),
    ("stale: put in Error, placed copy", instance(host=HOST), Facts(errored=True, host=UP),
     (A.NOTHING,), False),
    # ---- placed
    ("placed", instance(host=HOST, phase=names.InstancePhase.RUNNING), Facts(host=UP),
     (A.NOTHING,), True),
    ("placed by this process", instance(host=HOST), Facts(own_host=HOST, host=UP),
     (A.NOTHING,), True),
    ("placed, label missing", instance(host=HOST, label=None), Facts(host=UP),
     (A.ENSURE_LABEL,), True),
    ("placed, label names another host", instance(host=HOST, label="compute-9"),
     Facts(host=UP), (A.ENSURE_LABEL,), True),
    ("placed, finalizer missing", instance(host=HOST, finalizers=()), Facts(host=UP),
     (A.ENSURE_FINALIZER,), True),
    ("placed, label and finalizer missing", instance(host=HOST, label=None, finalizers=()),
     Facts(host=UP), (A.ENSURE_LABEL, A.ENSURE_FINALIZER), True),
    ("placed on a host with no Host object", instance(host=HOST), Facts(),
     (A.NOTHING,), True),
    ("stale: moved by this process", instance(host=HOST), Facts(own_host="compute-2", host=UP),
     (A.NOTHING,), False),
    ("built", instance(host=HOST, built=("True", names.REASON_BUILT, "")), Facts(host=UP),
     (A.NOTHING,), True),
    ("building (Built=False, not a failure)",
     instance(host=HOST, built=("False", names.REASON_BUILDING, "")), Facts(host=UP),
     (A.NOTHING,), True),
    # ---- failed builds
    ("build failed, attempt 1 of 3", instance(host=HOST, attempts=1, built=build_failed()),
     Facts(host=UP), (A.RESCHEDULE,), True),
    ("build failed, attempts unset", instance(host=HOST, built=build_failed()),
     Facts(host=UP), (A.RESCHEDULE,), True),
    ("build failed, attempt 2 of 3", instance(host=HOST, attempts=2, built=build_failed()),
     Facts(host=UP), (A.RESCHEDULE,), True),
    ("build failed, attempt 3 of 3", instance(host=HOST, attempts=3, built=build_failed()),
     Facts(host=UP), (A.FAIL_BUILD,), True),
    ("build failed, attempt 4 of 3", instance(host=HOST, attempts=4, built=build_failed()),
     Facts(host=UP), (A.FAIL_BUILD,), True),
    ("build failed, one attempt allowed", instance(host=HOST, built=build_failed()),
     Facts(host=UP, max_attempts=1), (A.FAIL_BUILD,), True),
    ("build failed, image too big for the disk (terminal)",
     instance(host=HOST, attempts=1, built=build_failed("DiskTooSmall: 20 GiB > 1 GiB")),
     Facts(host=UP), (A.FAIL_BUILD,), True),
    ("build failed, image invalid (terminal)",
     instance(host=HOST, attempts=1, built=build_failed("ImageInvalid: not a qcow2")),
     Facts(host=UP), (A.FAIL_BUILD,), True),
    ("build failed, image download (another host may do)",
     instance(host=HOST, attempts=1, built=build_failed("ImageDownloadFailed: timeout")),
     Facts(host=UP), (A.RESCHEDULE,), True),
    ("build failed, label missing: reschedule only",
     instance(host=HOST, label=None, built=build_failed()), Facts(host=UP),
     (A.RESCHEDULE,), True),
    ("build failed, stale copy of a move",
     instance(host=HOST, built=build_failed()), Facts(own_host="compute-2", host=UP),
     (A.NOTHING,), False),
    # ---- Down and fenced hosts
    ("host fenced (spec)", instance(host=HOST), Facts(host=FENCED), (A.EVACUATE,), True),
    ("host fenced (Node out of service)", instance(host=HOST), Facts(host=NODE_FENCED),
     (A.EVACUATE,), True),
    ("host fenced and Down", instance(host=HOST),
     Facts(host=HostFacts(exists=True, down=True, fenced=names.HOST_REASON_FENCED_NODE)),
     (A.EVACUATE,), True),
    ("host fenced, build failed: evacuate", instance(host=HOST, built=build_failed()),
     Facts(host=FENCED), (A.EVACUATE,), True),
    ("fenced node without a Host object: left alone", instance(host=HOST),
     Facts(host=FENCED_NO_HOST_OBJECT), (A.NOTHING,), True),
    ("host Down", instance(host=HOST, phase=names.InstancePhase.RUNNING), Facts(host=DOWN),
     (A.MARK_UNKNOWN,), True),
    ("host Down, already Unknown", instance(host=HOST, phase=names.InstancePhase.UNKNOWN),
     Facts(host=DOWN), (A.NOTHING,), True),
    ("host Down, build failed", instance(host=HOST, built=build_failed()), Facts(host=DOWN),
     (A.MARK_UNKNOWN, A.RESCHEDULE), True),
    ("host Down, label missing", instance(host=HOST, label=None), Facts(host=DOWN),
     (A.MARK_UNKNOWN, A.ENSURE_LABEL), True),
    ("Down host without a Host object", instance(host=HOST),
     Facts(host=HostFacts(exists=False, down=True)), (A.NOTHING,), True),
    # ---- deletion
    ("deleted, agent still tearing down", instance(host=HOST, deleting=True, finalizers=BOTH),
     Facts(host=UP), (A.WAIT_FOR_AGENT,), True),
    ("deleted on a Down host: wait for its agent",
     instance(host=HOST, deleting=True, finalizers=BOTH), Facts(host=DOWN),
     (A.WAIT_FOR_AGENT,), True),
    ("deleted, agent done: free the allocation", instance(host=HOST, deleting=True),
     Facts(host=UP), (A.DELETE,), True),
    ("deleted before it had a host (no allocation recorded)", instance(deleting=True),
     Facts(), (A.DELETE,), True),
    ("deleted, claimed but not recorded", instance(deleting=True), Facts(own_host=HOST),
     (A.DELETE,), True),
    ("deleted, not ours (finalizer gone)", instance(host=HOST, deleting=True, finalizers=()),
     Facts(host=UP), (A.NOTHING,), True),
    ("deleted, only the agent's finalizer left",
     instance(host=HOST, deleting=True, finalizers=(names.FINALIZER_AGENT,)),
     Facts(host=UP), (A.NOTHING,), True),
    ("deleted on a fenced host", instance(host=HOST, deleting=True, finalizers=BOTH),
     Facts(host=FENCED), (A.RELEASE_AGENT, A.DELETE), True),
    ("deleted on a fenced node without a Host object",
     instance(host=HOST, deleting=True, finalizers=BOTH), Facts(host=FENCED_NO_HOST_OBJECT),
     (A.RELEASE_AGENT, A.DELETE), True),
    ("deleted on a fenced host, agent already gone", instance(host=HOST, deleting=True),
     Facts(host=FENCED), (A.DELETE,), True),
    ("deleted in Error", instance(deleting=True, phase=names.InstancePhase.ERROR),
     Facts(errored=True), (A.DELETE,), True),
    ("deleted after a failed build", instance(host=HOST, deleting=True, finalizers=BOTH,
                                              built=build_failed()),
     Facts(host=UP), (A.WAIT_FOR_AGENT,), True),
    # ---- phase Error and image retries
    ("Error", instance(phase=names.InstancePhase.ERROR), Facts(errored=True),
     (A.NOTHING,), True),
    ("Error, image changed since", instance(phase=names.InstancePhase.ERROR,
                                            failed_image="u/1"),
     Facts(image_identity="u/2"), (A.RETRY_IMAGE,), True),
    ("Error, image re-created", instance(phase=names.InstancePhase.ERROR, failed_image="u/1"),
     Facts(image_identity="v/1"), (A.RETRY_IMAGE,), True),
    ("Error, image unchanged", instance(phase=names.InstancePhase.ERROR, failed_image="u/1"),
     Facts(image_identity="u/1"), (A.NOTHING,), True),
    ("Error, image deleted", instance(phase=names.InstancePhase.ERROR, failed_image="u/1"),
     Facts(image_identity=plan.MISSING_IMAGE), (A.NOTHING,), True),
    ("Error, already retried after that failure",
     instance(phase=names.InstancePhase.ERROR, failed_image="u/1"),
     Facts(retried_image="u/1", image_identity="u/2"), (A.NOTHING,), True),
    ("Error again after an earlier retry",
     instance(phase=names.InstancePhase.ERROR, failed_image="u/2"),
     Facts(retried_image="u/1", image_identity="u/3"), (A.RETRY_IMAGE,), True),
    ("Error on a fenced host: stays in Error", instance(host=HOST,
                                                        phase=names.InstancePhase.ERROR),
     Facts(host=FENCED), (A.NOTHING,), True),
]


@pytest.mark.parametrize("body, facts, actions, settled",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_next_step(body, facts, actions, settled):
    before = copy.deepcopy(body)
    todo = next_step(body, facts)
    assert todo.actions == actions
    assert todo.settled == settled
    assert body == before  # pure: the Instance is not touched


def test_at_least_forty_cases():
    assert len(CASES) >= 40


def test_fail_build_says_why():
    terminal = next_step(instance(host=HOST, built=build_failed("DiskTooSmall: x")),
                         Facts(host=UP))
    assert terminal.first.reason == names.ERROR_DISK_TOO_SMALL
    exhausted = next_step(instance(host=HOST, attempts=3, built=build_failed()),
                          Facts(host=UP))
    assert exhausted.first.reason == names.REASON_MAX_ATTEMPTS


def test_evacuation_and_release_carry_the_fence_reason():
    assert next_step(instance(host=HOST), Facts(host=NODE_FENCED)).first.reason == \
        names.HOST_REASON_FENCED_NODE
    todo = next_step(instance(host=HOST, deleting=True, finalizers=BOTH), Facts(host=FENCED))
    assert todo.first.reason == names.HOST_REASON_FENCED_SPEC


def test_image_retry_names_both_identities():
    todo = next_step(instance(phase=names.InstancePhase.ERROR, failed_image="u/1"),
                     Facts(image_identity="u/2"))
    assert (todo.first.image_from, todo.first.image_to) == ("u/1", "u/2")


def test_backoff_is_reset_only_on_a_usable_host():
    assert next_step(instance(host=HOST), Facts(host=UP)).reset_backoff
    assert next_step(instance(host=HOST), Facts(host=DOWN)).reset_backoff
    assert not next_step(instance(host=HOST), Facts(host=FENCED)).reset_backoff
    assert not next_step(instance(), Facts()).reset_backoff


def test_stale_copies_say_which():
    assert next_step(instance(), Facts(own_host=HOST)).first.reason == plan.STALE_SCHEDULED
    assert next_step(instance(host=HOST), Facts(own_host="x")).first.reason == plan.STALE_MOVED
    assert next_step(instance(), Facts(errored=True)).first.reason == plan.STALE_ERRORED


# ============================================================ properties
hosts = s.sampled_from([None, HOST, "compute-2"])
phases = s.sampled_from([None, *names.InstancePhase])
finalizer_sets = s.sampled_from([(), (names.FINALIZER_OPERATOR,), (names.FINALIZER_AGENT,),
                                 BOTH])
builts = s.sampled_from([None, ("True", names.REASON_BUILT, ""), build_failed(),
                         build_failed("DiskTooSmall: x"), build_failed("ImageInvalid: y"),
                         ("False", names.REASON_BUILDING, "")])


@s.composite
def instances(draw):
    return instance(host=draw(hosts), phase=draw(phases), deleting=draw(s.booleans()),
                    finalizers=draw(finalizer_sets),
                    label=draw(s.sampled_from(["same", None, "compute-2"])),
                    attempts=draw(s.sampled_from([None, 1, 2, 3, 5])), built=draw(builts),
                    failed_image=draw(s.sampled_from([None, "u/1", "u/2"])))


host_facts = s.builds(HostFacts, exists=s.booleans(),
                      fenced=s.sampled_from([None, names.HOST_REASON_FENCED_SPEC,
                                             names.HOST_REASON_FENCED_NODE]),
                      down=s.booleans())
facts = s.builds(Facts, own_host=hosts, errored=s.booleans(),
                 retried_image=s.sampled_from([None, "u/1", "u/2"]),
                 image_identity=s.sampled_from([plan.MISSING_IMAGE, "u/1", "u/2", "u/3"]),
                 host=host_facts, max_attempts=s.integers(min_value=1, max_value=5))


@settings(max_examples=300, deadline=None)
@given(body=s.one_of(s.none(), instances()), known=facts)
def test_never_both_deletes_and_places(body, known):
    actions = set(next_step(body, known).actions)
    assert not (actions & plan.DELETING and actions & plan.PLACING)
    assert len(actions & plan.PLACING) <= 1


@settings(max_examples=300, deadline=None)
@given(body=instances(), known=facts)
def test_an_instance_on_a_fenced_host_is_never_left_where_it_is(body, known):
    host = (body.get("status") or {}).get("host")
    todo = next_step(body, known)
    if (host and known.host.exists and known.host.fenced
            and not body["metadata"].get("deletionTimestamp")
            and body["status"].get("phase") != names.InstancePhase.ERROR
            and not known.errored and known.own_host in (None, host)):
        assert todo.actions == (A.EVACUATE,)
    if A.EVACUATE in todo.actions:
        assert host and known.host.fenced


@settings(max_examples=300, deadline=None)
@given(body=s.one_of(s.none(), instances()), known=facts)
def test_a_plan_is_well_formed_and_pure(body, known):
    before = copy.deepcopy(body)
    todo = next_step(body, known)
    assert todo.steps
    assert A.NOTHING not in todo.actions or todo.actions == (A.NOTHING,)
    assert next_step(body, known) == todo  # the same answer for the same input
    assert body == before
    if A.BUILD in todo.actions:
        assert not (body.get("status") or {}).get("host") and known.own_host is None
    if todo.actions and todo.actions[-1] in plan.DELETING:
        assert body and body["metadata"].get("deletionTimestamp")


@settings(max_examples=300, deadline=None)
@given(body=instances(), known=facts)
def test_a_down_host_alone_never_moves_an_instance(body, known):
    """Down without fencing: the Instance is marked Unknown, never evacuated."""
    down_only = HostFacts(exists=True, down=True, fenced=None)
    todo = next_step(body, Facts(**{**known.__dict__, "host": down_only}))
    assert A.EVACUATE not in todo.actions
