"""The subresource API end to end without QEMU: ``kubectl kova`` -> the real
kube-apiserver (authentication, RBAC, the aggregator's proxy) -> ``kova api
serve`` (request-header authentication, SubjectAccessReview) -> the agent's
stream endpoint over mutual TLS -> libvirt's test driver.

Users are ServiceAccounts with tokens bound to the chart's kova-view and
kova-edit roles, as people of a real cluster would be. (Console, VNC and the
soft reboot of a real guest: test_access_e2e.py.)
"""

from __future__ import annotations

import json
import ssl
import uuid

import httpx
import pytest

from kova.crds.names import MAX_ACTIONS
from kova.dev.pki import issue_cert
from tests.fixtures.vm import plugin

SUB = "/apis/subresources.kova.dev/v1alpha1"
#: How a refused TLS client certificate shows (with TLS 1.3 the server drops
#: the connection after the client thinks the handshake is done).
REFUSED = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError)


def test_apiservice_and_discovery(kova_api, kubectl) -> None:
    """The API server reports the APIService Available and serves its
    discovery document; kubectl's discovery of the whole cluster is happy."""
    svc = json.loads(kubectl("get", "apiservice", "v1alpha1.subresources.kova.dev",
                             "-o", "json").stdout)
    (avail,) = [c for c in svc["status"]["conditions"] if c["type"] == "Available"]
    assert avail["status"] == "True", avail
    doc = json.loads(kubectl("get", "--raw", SUB).stdout)
    verbs = {r["name"]: r["verbs"] for r in doc["resources"]}
    assert verbs == {
        "instances/console": ["get"], "instances/vnc": ["get"], "instances/log": ["get"],
        **{f"instances/{a}": ["update"] for a in
           ("start", "stop", "restart", "reboot", "pause", "unpause", "resize-confirm",
            "resize-revert", "migrate", "snapshot", "eject")}}
    kubectl("api-resources", "-o", "name")  # fails on a broken aggregated API
    groups = json.loads(kubectl("get", "--raw", "/apis").stdout)
    assert "subresources.kova.dev" in {g["name"] for g in groups["groups"]}


def test_power_actions_change_the_power_state_and_are_recorded(vm, make_user, namespace) -> None:
    editor = make_user("editor", "kova-edit", namespace)
    steps = [  # action, powerState after it, words of the plugin's line
        ("pause", "Paused", "paused"),
        ("pause", "Paused", "already paused"),
        ("unpause", "Running", "unpaused"),
        ("restart", "Running", "restarted"),
        ("reboot", "Running", "rebooted"),
        ("stop", "Shutdown", "runStrategy Always -> Halted"),
        ("stop", "Shutdown", "already stopped"),
        ("start", "Running", "runStrategy Halted -> Always"),
    ]
    for action, power, words in steps:
        out = plugin(editor, action, "vm")
        assert out.returncode == 0, (action, out.stdout, out.stderr)
        assert words in out.stdout and f"powerState {power}" in out.stdout, out.stdout
        assert vm.status()["powerState"] == power
    assert vm.obj()["spec"]["runStrategy"] == "Always"

    history = vm.status()["actions"]
    assert [(a["action"], a["result"]) for a in history] == [
        (a, "Success") for a, _p, _w in steps]
    assert {a["user"] for a in history} == {editor.username}
    for a in history:
        assert a["startTime"] <= a["finishTime"] and a["requestId"].startswith("req-")
    table = plugin(editor, "actions", "vm")
    assert table.returncode == 0 and table.stdout.count(editor.username) == len(steps)


def test_refused_actions_say_why_and_record_nothing(vm, make_user, namespace) -> None:
    editor = make_user("editor", "kova-edit", namespace)
    assert plugin(editor, "stop", "vm").returncode == 0
    before = len(vm.status()["actions"])
    for action in ("pause", "unpause", "restart", "reboot"):
        out = plugin(editor, action, "vm")
        assert out.returncode == 1, out
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "Traceback" not in out.stderr
        assert "it is Shutdown, not Running" in last, out.stderr
    for sub in ("console", "vnc"):
        out = plugin(editor, sub, "vm")
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert "is Stopped" in out.stderr and "kubectl kova start vm" in out.stderr, out.stderr
    # a live migration needs a running guest; --abort needs a live migration
    out = plugin(editor, "migrate", "vm", "--live")
    assert out.returncode == 1 and "only a running guest can be live-migrated" in out.stderr, out
    out = plugin(editor, "migrate", "vm", "--abort")
    assert out.returncode == 1 and "has no live migration to abort" in out.stderr, out
    assert "migration" not in vm.status()
    assert len(vm.status()["actions"]) == before
    missing = plugin(editor, "stop", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == (f'error: stop instance {namespace}/nope: '
                                      f'instances.kova.dev "nope" not found in namespace '
                                      f'"{namespace}"')


def test_action_history_keeps_the_last_twenty(vm, make_user, namespace) -> None:
    editor = make_user("editor", "kova-edit", namespace)
    for _ in range(MAX_ACTIONS + 3):
        assert plugin(editor, "pause", "vm").returncode == 0
    history = vm.status()["actions"]
    assert len(history) == MAX_ACTIONS
    assert all(a["action"] == "pause" for a in history)


def test_who_may_do_what(vm, make_user, namespace, kubectl) -> None:
    """kova-view reads but may not use the console, VNC or power; kova-edit
    of another namespace may do nothing here; no token, no stream."""
    viewer = make_user("viewer", "kova-view", namespace)
    other = f"other-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", other)
    try:
        outsider = make_user("outsider", "kova-edit", namespace, bind_in=other)
        for user in (viewer, outsider):
            for args in (["console", "vm"], ["vnc", "vm"], ["stop", "vm"], ["restart", "vm"]):
                out = plugin(user, "-n", namespace, *args)
                assert out.returncode == 1, (user.name, args, out)
                assert "forbidden" in out.stderr.lower() or "cannot" in out.stderr, out.stderr
                assert "Traceback" not in out.stderr
        # a viewer may read the history and the console log (like pods/log)
        assert plugin(viewer, "actions", "vm").returncode == 0
        log = plugin(viewer, "logs", "vm")
        assert "forbidden" not in log.stderr.lower(), log.stderr
    finally:
        kubectl("delete", "namespace", other, "--wait=false")
    assert vm.status()["powerState"] == "Running"
    assert not vm.status().get("actions")

    # no credentials at all: the API server refuses before Kova sees anything
    anonymous = viewer.kubeconfig.with_name("anonymous.kubeconfig")
    cfg = json.loads(viewer.kubeconfig.read_text())
    cfg["users"][0]["user"] = {}
    anonymous.write_text(json.dumps(cfg))
    for args in (["console", "vm"], ["stop", "vm"]):
        out = plugin(anonymous, *args)
        assert out.returncode == 1
        assert "system:anonymous" in out.stderr or "not logged in" in out.stderr, out.stderr


def _front_proxy(k8s) -> tuple[str, str]:
    pki = k8s.workdir / "pki"
    return str(pki / "front-proxy-client.crt"), str(pki / "front-proxy-client.key")


def _tls(ca, cert: tuple[str, str] | None = None, check_hostname: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = check_hostname
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


def test_the_api_component_trusts_only_the_front_proxy(vm, kova_api, k8s, make_user,
                                                       namespace) -> None:
    """Straight to ``kova api serve``, past the API server: without the front
    proxy's certificate nobody is anyone (401); with it, the user named in
    the headers still needs RBAC (the component's own SubjectAccessReview)."""
    viewer = make_user("viewer", "kova-view", namespace)
    editor = make_user("editor", "kova-edit", namespace)
    url = f"{kova_api.url}{SUB}/namespaces/{namespace}/instances/vm/pause"
    ca, pki = kova_api.pki.ca_crt, kova_api.pki
    as_editor = {"X-Remote-User": editor.username, "X-Remote-Group": "system:authenticated"}
    anon = httpx.put(url, verify=_tls(ca), headers=as_editor)
    assert anon.status_code == 401 and anon.json()["kind"] == "Status"
    with pytest.raises(REFUSED):  # a client certificate of another CA
        httpx.put(url, verify=_tls(ca, (str(pki.agent_crt), str(pki.agent_key))),
                  headers=as_editor)
    proxy = _tls(ca, _front_proxy(k8s))
    nobody = httpx.put(url, verify=proxy)
    assert nobody.status_code == 401, nobody.text
    denied = httpx.put(url, verify=proxy, headers={"X-Remote-User": viewer.username,
                                                   "X-Remote-Group": "system:authenticated"})
    assert denied.status_code == 403, denied.text
    assert 'cannot update resource "instances/pause"' in denied.json()["message"]
    allowed = httpx.put(url, verify=proxy, timeout=60, headers=as_editor)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["powerState"] == "Paused" and allowed.json()["user"] == editor.username


def test_the_agent_stream_endpoint_takes_only_the_api_component(vm, kova_api, k8s,
                                                                tmp_path) -> None:
    ep = vm.h.host_obj()["status"]["streamEndpoint"]
    url = f"https://{ep['address']}:{ep['port']}/healthz"
    pki = kova_api.pki
    # the agent's certificate names kova-agent, not the address
    for cert in (None, _front_proxy(k8s)):  # no certificate; one of another CA
        with pytest.raises(REFUSED):
            httpx.get(url, verify=_tls(pki.ca_crt, cert, check_hostname=False)).raise_for_status()
    with pytest.raises(REFUSED):  # the stream CA, but a server-only certificate (the agent's)
        httpx.get(url, verify=_tls(pki.ca_crt, (str(pki.agent_crt), str(pki.agent_key)),
                                   check_hostname=False))
    # the stream CA, a client certificate, another name: 403
    other = issue_cert(pki.ca_crt, pki.ca_crt.with_suffix(".key"), "someone", server=False,
                       client=True, out_dir=tmp_path)
    wrong_name = httpx.get(url, verify=_tls(pki.ca_crt, (str(other["crt"]), str(other["key"])),
                                            check_hostname=False))
    assert wrong_name.status_code == 403
    ok = httpx.get(url, verify=_tls(pki.ca_crt, (str(pki.api_crt), str(pki.api_key)),
                                    check_hostname=False))
    assert ok.status_code == 200 and ok.json()["ok"] is True


def test_an_instance_not_placed_yet(harness, kova_api, make_user, namespace) -> None:
    editor = make_user("editor", "kova-edit", namespace)
    harness.instance("pending", "no-such-image", schedule=False)
    for args in (["pause", "pending"], ["console", "pending"], ["logs", "pending"]):
        out = plugin(editor, *args)
        assert out.returncode == 1 and "not placed on a host yet" in out.stderr, out.stderr
