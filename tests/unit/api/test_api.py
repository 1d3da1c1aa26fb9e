"""The subresource API's pure parts: what a power action means for each
runStrategy and power state, the action history, request-header
authentication, the access review, the discovery documents."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from kova import actions
from kova.api import discovery, power
from kova.api.auth import (
    RequestHeaderConfig,
    Unauthenticated,
    access_review,
    authenticate,
)
from kova.crds.names import MAX_ACTIONS


def inst(strategy="Always", power_state="Running", host="h1", phase="Running", **md) -> dict:
    status = {"powerState": power_state, "phase": phase}
    if host:
        status["host"] = host
    return {"metadata": {"name": "vm", **md}, "spec": {"runStrategy": strategy},
            "status": status}


# action, runStrategy, powerState -> (kind, target powerState or refusal reason)
CASES = [
    ("start", "Always", "Running", "noop", "Running"),
    ("start", "Halted", "Shutdown", "patch", "Running"),
    ("start", "Manual", "Shutdown", "patch", "Running"),
    ("start", "Once", "Shutdown", "refuse", "RunStrategyOnce"),
    ("start", "Always", "Shutdown", "agent", "Running"),
    ("start", "RerunOnFailure", "Shutdown", "agent", "Running"),
    ("start", "RerunOnFailure", "Crashed", "agent", "Running"),
    ("start", "Always", "Paused", "refuse", "Paused"),
    ("stop", "Always", "Running", "patch", "Shutdown"),
    ("stop", "Always", "Shutdown", "patch", "Shutdown"),  # else Always starts it again
    ("stop", "RerunOnFailure", "Running", "patch", "Shutdown"),
    ("stop", "Manual", "Running", "patch", "Shutdown"),
    ("stop", "Halted", "Shutdown", "noop", "Shutdown"),
    ("stop", "Halted", "Running", "noop", "Shutdown"),  # the agent is stopping it
    ("stop", "Once", "Running", "agent", "Shutdown"),
    ("stop", "Once", "Shutdown", "noop", "Shutdown"),
    ("stop", "Once", "Paused", "agent", "Shutdown"),
    ("restart", "Always", "Running", "agent", "Running"),
    ("restart", "Manual", "Paused", "agent", "Running"),
    ("restart", "Halted", "Shutdown", "refuse", "NotRunning"),
    ("reboot", "Always", "Running", "agent", "Running"),
    ("reboot", "Always", "Paused", "refuse", "Paused"),
    ("reboot", "Once", "Shutdown", "refuse", "NotRunning"),
    ("pause", "Always", "Running", "agent", "Paused"),
    ("pause", "Always", "Paused", "noop", "Paused"),
    ("pause", "Halted", "Shutdown", "refuse", "NotRunning"),
    ("pause", "Always", "Crashed", "refuse", "NotRunning"),
    ("unpause", "Always", "Paused", "agent", "Running"),
    ("unpause", "Always", "Running", "noop", "Running"),
    ("unpause", "Halted", "Shutdown", "refuse", "NotRunning"),
]


@pytest.mark.parametrize(("action", "strategy", "state", "kind", "expect"), CASES)
def test_plan(action, strategy, state, kind, expect) -> None:
    plan = power.plan(action, inst(strategy, state))
    assert plan.kind == kind, plan
    if kind == "refuse":
        assert plan.reason == expect and plan.code == 409 and "vm" in plan.message
    else:
        assert plan.target == expect


def test_plan_patches() -> None:
    assert power.plan("stop", inst("Always")).patch == {"spec": {"runStrategy": "Halted"}}
    assert power.plan("start", inst("Halted", "Shutdown")).patch == {
        "spec": {"runStrategy": "Always"}}
    assert power.plan("start", inst("Manual", "Shutdown")).patch == {
        "metadata": {"annotations": {"kova.dev/power": "on"}}}
    assert power.plan("stop", inst("Manual")).patch == {
        "metadata": {"annotations": {"kova.dev/power": "off"}}}


def test_plan_without_a_host_or_while_deleting() -> None:
    for action in ("pause", "unpause", "restart", "reboot"):
        plan = power.plan(action, inst(host=None, power_state="NoState", phase="Pending"))
        assert (plan.kind, plan.reason) == ("refuse", "NotPlaced"), action
        assert "phase Pending" in plan.message
    # start/stop of an unplaced Instance change its desired state only
    assert power.plan("stop", inst(host=None, power_state="NoState")).kind == "patch"
    assert power.plan("start", inst("Halted", "NoState", host=None)).kind == "patch"
    assert power.plan("start", inst("Always", "NoState", host=None)).reason == "NotPlaced"
    gone = inst(deletionTimestamp="2026-01-01T00:00:00Z")
    assert power.plan("start", gone).reason == "Deleting"


@pytest.mark.parametrize(("state", "host", "refused"), [
    ("Running", "h1", None), ("Paused", "h1", None), ("Shutdown", "h1", "NotRunning"),
    ("Crashed", "h1", "NotRunning"), (None, None, "NotPlaced")])
def test_console_refusal(state, host, refused) -> None:
    got = power.console_refusal(inst(power_state=state, host=host, phase="Stopped"), "console")
    assert (got[0] if got else None) == refused
    if got and refused == "NotRunning":
        assert "kubectl kova start vm" in got[1] and "is Stopped" in got[1]


def test_action_history_helpers() -> None:
    history: list[dict] = []
    for i in range(MAX_ACTIONS + 5):
        history = actions.append(history, actions.started("pause", "alice", f"req-{i}",
                                                          at="2026-01-01T00:00:00Z"))
    assert len(history) == MAX_ACTIONS and history[0]["requestId"] == "req-5"
    assert history[-1] == {"action": "pause", "requestId": f"req-{MAX_ACTIONS + 4}",
                           "user": "alice", "startTime": "2026-01-01T00:00:00Z",
                           "result": "InProgress"}
    done = actions.finish(history, "req-7", "Success", "paused", at="2026-01-01T00:00:01Z")
    assert actions.find(done, "req-7")["finishTime"] == "2026-01-01T00:00:01Z"
    assert actions.find(done, "req-7")["result"] == "Success"
    assert actions.find(history, "req-7")["result"] == "InProgress"  # not changed in place
    assert actions.finish(history, "req-0", "Success", "dropped meanwhile") is None
    # appending the same request again replaces it
    assert len(actions.append(done, actions.started("pause", "bob", "req-7"))) == MAX_ACTIONS


CFG = RequestHeaderConfig(client_ca="", allowed_names=("front-proxy-client",))
PROXY_CERT = {"subject": ((("commonName", "front-proxy-client"),),)}


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_request_header_authentication() -> None:
    user = authenticate(PROXY_CERT, headers(
        ("X-Remote-User", "alice@example.org"), ("X-Remote-Group", "devs"),
        ("X-Remote-Group", "system:authenticated"),
        ("X-Remote-Extra-Scopes", "openid"), ("X-Remote-Extra-Acme.com%2Fproject", "p1")), CFG)
    assert user.name == "alice@example.org"
    assert user.groups == ("devs", "system:authenticated")
    assert user.extra == {"scopes": ["openid"], "acme.com/project": ["p1"]}
    with pytest.raises(Unauthenticated, match="no client certificate"):
        authenticate(None, headers(("X-Remote-User", "alice")), CFG)
    with pytest.raises(Unauthenticated, match="not an allowed front proxy"):
        authenticate({"subject": ((("commonName", "mallory"),),)},
                     headers(("X-Remote-User", "alice")), CFG)
    with pytest.raises(Unauthenticated, match="names no user"):
        authenticate(PROXY_CERT, headers(("X-Remote-Group", "devs")), CFG)


def test_request_header_config_from_the_configmap() -> None:
    cm = {"data": {"requestheader-client-ca-file": "PEM",
                   "requestheader-allowed-names": '["front-proxy-client"]',
                   "requestheader-username-headers": '["X-Remote-User"]',
                   "requestheader-group-headers": '["X-Remote-Group"]',
                   "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]'}}
    cfg = RequestHeaderConfig.from_configmap(cm)
    assert cfg.client_ca == "PEM" and cfg.allowed_names == ("front-proxy-client",)
    with pytest.raises(ValueError, match="--requestheader-client-ca-file"):
        RequestHeaderConfig.from_configmap({"data": {"client-ca-file": "PEM"}})


def test_access_review() -> None:
    user = authenticate(PROXY_CERT, headers(("X-Remote-User", "alice"),
                                            ("X-Remote-Group", "devs")), CFG)
    review = access_review(user, verb="update", namespace="ns", name="vm", subresource="stop")
    assert review["spec"] == {"user": "alice", "groups": ["devs"], "resourceAttributes": {
        "namespace": "ns", "verb": "update", "group": "subresources.kova.dev",
        "version": "v1alpha1", "resource": "instances", "subresource": "stop", "name": "vm"}}


def test_discovery_documents_and_errors() -> None:
    assert discovery.api_group_list()["groups"][0]["preferredVersion"]["groupVersion"] == \
        "subresources.kova.dev/v1alpha1"
    names = [r["name"] for r in discovery.api_resource_list()["resources"]]
    assert all(n.startswith("instances/") for n in names) and len(names) == 14
    assert "instances/eject" in names
    err = discovery.status(409, "busy", kova_reason="ConsoleBusy", name="vm",
                           subresource="console")
    assert err["reason"] == "Conflict" and err["code"] == 409
    assert err["details"]["causes"] == [{"reason": "ConsoleBusy", "message": "busy",
                                         "field": "console"}]
