"""Kubernetes service-account tokens verified with TokenReview (real apiserver)."""

from __future__ import annotations

import warnings

from kova.placement.app import create_app
from kova.placement.auth import DEFAULT_AUDIENCE, TokenReviewAuth

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient



def _token(core, namespace, name, audiences=(DEFAULT_AUDIENCE,), create=True):
    """A TokenRequest token of a new service account, for ``audiences``
    (Placement's by default; ``()``: the API server's own, as a pod's default
    token)."""
    from kubernetes import client

    if create:
        core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
    req = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=list(audiences), expiration_seconds=600))
    return core.create_namespaced_service_account_token(name, namespace, req).status.token


def test_tokenreview_roles(k8s_client, sync_kube, namespace, tmp_path):
    from kubernetes import client

    core = client.CoreV1Api(k8s_client)
    admin = _token(core, namespace, "placement-admin")
    reader = _token(core, namespace, "placement-reader")
    stranger = _token(core, namespace, "someone-else")
    auth = TokenReviewAuth(sync_kube, {
        f"system:serviceaccount:{namespace}:placement-admin": "admin",
        f"system:serviceaccount:{namespace}:placement-reader": "reader"})
    app = create_app(f"sqlite:///{tmp_path}/p.db", auth=auth)
    try:
        with TestClient(app) as c:
            hdr = {"openstack-api-version": "placement 1.39"}
            r = c.post("/resource_providers", json={"name": "x"},
                       headers={**hdr, "authorization": f"Bearer {admin}"})
            assert r.status_code == 200
            r = c.get("/resource_providers", headers={**hdr, "x-auth-token": reader})
            assert r.status_code == 200
            r = c.post("/resource_providers", json={"name": "y"},
                       headers={**hdr, "x-auth-token": reader})
            assert r.status_code == 403
            assert c.get("/resource_providers",
                         headers={**hdr, "x-auth-token": stranger}).status_code == 401
            assert c.get("/resource_providers",
                         headers={**hdr, "x-auth-token": "garbage"}).status_code == 401
    finally:
        app.db.dispose()


def test_tokenreview_wants_placements_audience(k8s_client, sync_kube, namespace, tmp_path):
    """The admin service account's default-audience token (what every pod
    mounts, valid for any client of the API server) and a token for another
    audience are refused (401); its token for ``kova-placement`` is accepted;
    an explicitly empty audience list accepts the default-audience token."""
    from kubernetes import client

    core = client.CoreV1Api(k8s_client)
    right = _token(core, namespace, "aud-admin")
    default = _token(core, namespace, "aud-admin", audiences=(), create=False)
    other = _token(core, namespace, "aud-admin", audiences=("vault",), create=False)
    roles = {f"system:serviceaccount:{namespace}:aud-admin": "admin"}
    auth = TokenReviewAuth(sync_kube, roles)
    app = create_app(f"sqlite:///{tmp_path}/p.db", auth=auth)
    try:
        with TestClient(app) as c:
            hdr = {"openstack-api-version": "placement 1.39"}
            for token, status in ((default, 401), (other, 401), (right, 200)):
                r = c.post("/resource_providers", json={"name": f"aud-{status}-{len(token)}"},
                           headers={**hdr, "authorization": f"Bearer {token}"})
                assert r.status_code == status, r.text
                if status == 401:
                    assert r.json()["errors"][0]["status"] == 401
    finally:
        app.db.dispose()
    assert TokenReviewAuth(sync_kube, roles, audiences=()).role_for(default) == "admin"
    assert TokenReviewAuth(sync_kube, roles, audiences=()).role_for(other) is None


def test_tokenreview_unreachable_api_is_503_without_the_token(tmp_path, caplog):
    """The Kubernetes API cannot be asked (nothing listens on its port): the
    request is a 503 in Placement's error format, nothing is cached, and the
    log line names the failure, not the token."""
    from kova.kube import Credentials, SyncKube
    from tests.helpers import free_port

    kube = SyncKube(Credentials(f"https://127.0.0.1:{free_port()}", insecure=True))
    auth = TokenReviewAuth(kube, {"system:serviceaccount:x:y": "admin"})
    app = create_app(f"sqlite:///{tmp_path}/p.db", auth=auth)
    token = "tr-" + "7" * 40
    try:
        with TestClient(app) as c, caplog.at_level("DEBUG"):
            r = c.get("/resource_providers", headers={"x-auth-token": token,
                                                      "openstack-api-version": "placement 1.39"})
            assert r.status_code == 503, r.text
            err = r.json()["errors"][0]
            assert err["status"] == 503 and "TokenReview" in err["detail"]
            assert r.headers["retry-after"] == "5"
        assert not auth._cache
        assert "TokenReview failed" in caplog.text and token not in caplog.text
    finally:
        app.db.dispose()
        kube.close()


def test_tokenreview_cache_is_bounded_and_holds_no_token(sync_kube, namespace, tmp_path):
    auth = TokenReviewAuth(sync_kube, {}, max_entries=5)
    for i in range(12):
        assert auth.role_for(f"made-up-token-{i}") is None
    assert len(auth._cache) <= 5
    assert not any("made-up" in key for key in auth._cache)


def test_workers_get_the_agents_and_the_operators_token_file(kubeconfig, tmp_path,
                                                             monkeypatch):
    """``serve --token-file F --k8s-agent ns:sa`` hands both to its worker
    processes: the static admin token first, TokenReview for the agents."""
    import dataclasses

    from kova.placement import cli
    from kova.placement.auth import AGENT, StaticTokenAuth
    from kova.placement.settings import PlacementSettings

    tokens = tmp_path / "tokens"
    tokens.write_text("admin operator-token\n")
    fields = {f.name: f.default for f in dataclasses.fields(PlacementSettings)
              if f.default is not dataclasses.MISSING}
    s = PlacementSettings(**{**fields, "k8s_admin": (), "k8s_reader": (), "cors_allowed_origin": (),
                             "token_file": str(tokens), "kubeconfig": str(kubeconfig),
                             "k8s_agent": ("kova-system:kova-agent",)})
    for name in (cli.ENV_TOKEN_FILE, cli.ENV_K8S_AUTH, cli.ENV_NO_AUTH):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli.os, "environ", dict(cli.os.environ))
    cli._serve_env(s, f"sqlite:///{tmp_path}/p.db")
    auth = cli._auth_from_env()
    try:
        assert isinstance(auth, TokenReviewAuth) and isinstance(auth.static, StaticTokenAuth)
        assert auth.roles == {"system:serviceaccount:kova-system:kova-agent": AGENT}
        assert auth.identity_for("operator-token") == ("admin", None)
        assert auth.audiences == [DEFAULT_AUDIENCE]
    finally:
        auth.kube.close()
