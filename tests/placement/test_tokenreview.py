"""Kubernetes service-account tokens verified with TokenReview (real apiserver)."""

from __future__ import annotations

import warnings

import pytest

from kova.placement.app import create_app
from kova.placement.auth import TokenReviewAuth

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.integration


def _token(core, namespace, name):
    from kubernetes import client

    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
    req = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))
    return core.create_namespaced_service_account_token(name, namespace, req).status.token


def test_tokenreview_roles(k8s_client, namespace, tmp_path):
    from kubernetes import client

    core = client.CoreV1Api(k8s_client)
    admin = _token(core, namespace, "placement-admin")
    reader = _token(core, namespace, "placement-reader")
    stranger = _token(core, namespace, "someone-else")
    auth = TokenReviewAuth(k8s_client, {
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
