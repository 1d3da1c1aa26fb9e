"""kova.kube.Credentials: tokens that change under a running process.

A kubeconfig ``tokenFile`` is read again when the file changes; an ``exec``
credential plugin is run again when its token expires (and after a 401,
:meth:`Credentials.refresh`).  The plugin here is a real executable that
prints an ExecCredential, as kubectl's plugins do."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from kova import kube
from kova.kube import Credentials


def _kubeconfig(path: Path, user: dict) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443",
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x"}))
    return path


@pytest.fixture
def no_throttle(monkeypatch):
    monkeypatch.setattr(kube, "TOKEN_CHECK_SECONDS", 0.0)


def test_token_file_is_read_again_when_it_changes(tmp_path, no_throttle):
    token = tmp_path / "token"
    token.write_text("token-a\n")
    creds = Credentials.load(str(_kubeconfig(tmp_path / "kc", {"tokenFile": "token"})))
    assert creds.server == "https://127.0.0.1:6443" and creds.insecure
    assert creds.bearer() == "token-a"
    (tmp_path / "new").write_text("token-b")
    os.replace(tmp_path / "new", token)
    assert creds.bearer() == "token-b"
    assert creds.refresh() is False  # forced re-read: unchanged


def test_token_file_is_looked_at_once_a_second_at_most(tmp_path):
    token = tmp_path / "token"
    token.write_text("token-a")
    creds = Credentials.load(str(_kubeconfig(tmp_path / "kc", {"tokenFile": str(token)})))
    assert creds.bearer() == "token-a"
    token.write_text("token-b")
    assert creds.bearer() == "token-a"  # within the second: no stat
    assert creds.refresh() is True and creds.bearer() == "token-b"  # after a 401


def test_exec_plugin_is_run_again_when_its_token_expires(tmp_path, no_throttle):
    counter = tmp_path / "runs"
    plugin = tmp_path / "plugin"
    # Each run prints the next token, already expired (as a short-lived token
    # near its end is treated).
    expired = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    plugin.write_text(f"""#!{sys.executable}
import json, pathlib
p = pathlib.Path({str(counter)!r})
n = int(p.read_text()) + 1 if p.exists() else 1
p.write_text(str(n))
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {{"token": f"exec-{{n}}", "expirationTimestamp": {expired!r}}}}}))
""")
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    creds = Credentials.load(str(_kubeconfig(tmp_path / "kc", {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin),
        "interactiveMode": "Never"}})))
    first = creds.bearer()
    assert first and first.startswith("exec-")
    second = creds.bearer()
    assert second != first and second.startswith("exec-")


def test_static_token_and_refresh_reloads_the_kubeconfig(tmp_path):
    kc = _kubeconfig(tmp_path / "kc", {"token": "static-1"})
    creds = Credentials.load(str(kc))
    assert creds.bearer() == "static-1"
    _kubeconfig(kc, {"token": "static-2"})
    assert creds.refresh() is True and creds.bearer() == "static-2"


def test_in_cluster_credentials_read_the_pods_service_account(tmp_path, monkeypatch):
    """In a pod (KUBERNETES_SERVICE_HOST and the mounted token): the token
    file is the service account's, and ``in_cluster`` says so -- the agent
    then names its ServiceAccount as its heartbeat Lease's owner."""
    from kubernetes.config import incluster_config

    from kova.agents.heartbeat import lease_owner

    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    claims = {"kubernetes.io": {"namespace": "kova-system",
                                "serviceaccount": {"name": "kova-agent", "uid": "u-1"}}}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    (sa_dir / "token").write_text(f"e30.{payload}.sig")
    (sa_dir / "ca.crt").write_text("not read here")
    monkeypatch.setattr(kube, "SERVICE_ACCOUNT_DIR", sa_dir)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(sa_dir / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(sa_dir / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    creds = Credentials.load()
    assert creds.in_cluster and creds.server == "https://10.0.0.1:443"
    assert lease_owner(creds.bearer() or "", "kova-system") == {
        "apiVersion": "v1", "kind": "ServiceAccount", "name": "kova-agent", "uid": "u-1"}
    # from a kubeconfig: not in a pod, no owner looked for
    kc = _kubeconfig(tmp_path / "kc", {"token": "t"})
    assert not Credentials.load(str(kc)).in_cluster


def _plain_kubeconfig(tmp_path: Path, user: dict, cluster: dict | None = None) -> Path:
    (tmp_path / "pki").mkdir(exist_ok=True)
    (tmp_path / "pki" / "ca.crt").write_text("not read until a connection is made\n")
    kc = tmp_path / "conf" / "kubeconfig"
    kc.parent.mkdir(exist_ok=True)
    kc.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster or {
            "server": "https://127.0.0.1:6443/", "certificate-authority": "../pki/ca.crt"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u",
                                               "namespace": "team-a"}}],
        "current-context": "x"}))
    return kc


def test_a_plain_kubeconfig_is_read_without_the_official_client(tmp_path):
    """A server, a CA file, a token (or token file, or client certificate
    files): read as the official loader reads them -- paths relative to the
    kubeconfig's folder -- without importing the ``kubernetes`` package
    (a fresh interpreter shows it stays unimported)."""
    import subprocess

    kc = _plain_kubeconfig(tmp_path, {"token": "plain-1"})
    probe = ("import json, sys\nfrom kova.kube import Credentials\n"
             f"c = Credentials.load({str(kc)!r})\n"
             "print(json.dumps([c.server, c.ca_file, c.insecure, c.bearer(), c.namespace,"
             " 'kubernetes' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == ["https://127.0.0.1:6443", str(tmp_path / "pki" / "ca.crt"),
                               False, "plain-1", "team-a", False]
    (tmp_path / "conf" / "token").write_text("from-file\n")
    kc = _plain_kubeconfig(tmp_path, {"tokenFile": "token", "token": "ignored"})
    assert Credentials.load(str(kc)).bearer() == "from-file"
    for name in ("client.crt", "client.key"):
        (tmp_path / "pki" / name).write_text("x")
    kc = _plain_kubeconfig(tmp_path, {"client-certificate": "../pki/client.crt",
                                      "client-key": "../pki/client.key"})
    creds = Credentials.load(str(kc))
    assert (creds.cert_file, creds.key_file, creds.bearer()) == (
        str(tmp_path / "pki" / "client.crt"), str(tmp_path / "pki" / "client.key"), None)


def test_other_kubeconfigs_are_read_by_the_official_loader(tmp_path):
    """Embedded data (here the CA), a missing file: the official loader
    reads them as before (the CA written to a file of its own; the missing
    file named in its error)."""
    from kubernetes.config.config_exception import ConfigException

    pem = "-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n"
    kc = _plain_kubeconfig(tmp_path, {"token": "embedded"}, cluster={
        "server": "https://127.0.0.1:6443",
        "certificate-authority-data": base64.b64encode(pem.encode()).decode()})
    creds = Credentials.load(str(kc))
    assert creds.bearer() == "embedded" and creds.ca_file
    assert Path(creds.ca_file).read_text() == pem
    kc = _plain_kubeconfig(tmp_path, {"token": "t"}, cluster={
        "server": "https://127.0.0.1:6443", "certificate-authority": "missing.crt"})
    with pytest.raises(ConfigException, match="missing.crt"):
        Credentials.load(str(kc))
