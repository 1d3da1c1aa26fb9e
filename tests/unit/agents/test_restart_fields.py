"""Which spec fields wait for a restart, the condition and the seed's
instance-id (pure functions of kova.agents.instance.restart_fields)."""

from __future__ import annotations

from kova.agents.instance import restart_fields as rf

SPEC = {"userData": {"inline": "#!/bin/sh\necho hi"}, "sshKeys": ["ssh-ed25519 AAAAC3Nz me"],
        "hostname": "web", "runStrategy": "Always"}


def test_fingerprint_covers_exactly_the_seed_fields() -> None:
    base = rf.fingerprint(SPEC)
    assert base.count(";") == 2 and base.startswith("userData=")
    assert rf.fingerprint({**SPEC, "runStrategy": "Halted", "traits": {}}) == base
    for field, value in (("userData", {"inline": "other"}), ("sshKeys", []),
                         ("hostname", "db")):
        changed = {**SPEC, field: value}
        assert rf.pending_fields(base, changed) == [field]
    assert rf.pending_fields(base, {**SPEC, "hostname": "db", "userData": None}) == [
        "userData", "hostname"]
    assert rf.pending_fields(base, SPEC) == []
    assert rf.pending_fields("", {}) == []  # nothing known: nothing pending


def test_instance_id_changes_only_after_a_change() -> None:
    uid = "0b7b8c4e-2f6a-4f2b-9a33-3c1f1f1f1f1f"
    fp = rf.fingerprint(SPEC)
    assert rf.instance_id(uid, fp, first=True) == uid
    later = rf.instance_id(uid, fp, first=False)
    assert later.startswith(uid + "-") and len(later) == len(uid) + 9
    assert rf.instance_id(uid, rf.fingerprint({**SPEC, "hostname": "x"}), first=False) != later


def test_message_names_the_fields_and_the_way_out() -> None:
    assert rf.message(["userData"], "web") == (
        "userData changed and applies at the next start or restart (kubectl kova restart web)")
    assert rf.message(["sshKeys", "hostname"], "web").startswith(
        "sshKeys, hostname changed and apply at")
    assert rf.message([], "web") == "the guest runs with the current spec"


def test_condition_and_adoption() -> None:
    from kova.agents.virt.domain import DomainMetadata
    from kova.crds import names

    obj = {"metadata": {"name": "web", "generation": 3}, "spec": SPEC}
    cond = rf.condition(obj, ["hostname"])
    assert (cond["type"], cond["status"], cond["reason"], cond["observedGeneration"]) == (
        names.COND_RESTART_REQUIRED, "True", names.REASON_SPEC_CHANGED, 3)
    assert "hostname changed" in cond["message"]
    up = rf.condition(obj, [])
    assert (up["status"], up["reason"]) == ("False", names.REASON_UP_TO_DATE)
    # a domain defined before fingerprints existed runs with the current spec
    old = DomainMetadata(uid="u", namespace="ns", name="web")
    assert rf.adopted(old, SPEC).applied_spec == rf.fingerprint(SPEC)
    known = DomainMetadata(uid="u", namespace="ns", name="web", applied_spec="x")
    assert rf.adopted(known, SPEC) is known
