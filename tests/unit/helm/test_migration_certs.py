"""The chart's certificate for moves between hosts: every agent gets a
client certificate (common name kova-agent-mover) signed by the stream CA,
to send another agent's stream endpoint an Instance's disk; the agents
accept it next to the API component's, and the NetworkPolicy lets agents
reach each other's stream port.  (That every flag is an option of the real
agent CLI: test_chart.py::test_args_and_env_are_options_of_the_real_cli.)  (Which routes each name may use is the
agent's: tests/integration/agents/test_disk_copy.py.)"""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kova.crds import names
from tests.support.chart import by_kind, one, pod_spec, render

FLAGS = {"--migration-client-cert-file": "tls.crt", "--migration-client-key-file": "tls.key",
         "--migration-ca-file": "ca.crt"}


def _cert(secret: dict, key: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"][key]))


def _cn(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def _agent(objs: list[dict]) -> tuple[list[str], dict, dict]:
    spec = pod_spec(one(objs, "DaemonSet", "kova-agent"))
    (c,) = [c for c in spec["containers"] if c["name"] == "agent"] or spec["containers"][:1]
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec["volumes"]}
    return c["args"], mounts, volumes


def test_agents_get_a_migration_client_certificate_of_the_stream_ca() -> None:
    objs = render()
    stream = one(objs, "Secret", "kova-agent-stream-tls")
    mover = one(objs, "Secret", "kova-agent-migration-tls")
    assert mover["type"] == "kubernetes.io/tls"
    assert mover["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    ca = _cert(stream, "ca.crt")
    crt = _cert(mover, "tls.crt")
    assert _cn(crt) == names.STREAM_MIGRATION_CLIENT_NAME
    assert crt.issuer == ca.subject
    ca.public_key().verify(crt.signature, crt.tbs_certificate_bytes,
                           *_verify_args(ca, crt))  # signed by the stream CA
    eku = crt.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert _cert(mover, "ca.crt") == ca  # the CA the destination's certificate is checked with
    assert base64.b64decode(mover["data"]["tls.key"]).startswith(b"-----BEGIN")

    args, mounts, volumes = _agent(objs)
    # both names accepted by every agent's stream endpoint
    allowed = [a.split("=", 1)[1] for a in args if a.startswith("--stream-allowed-client=")]
    assert sorted(allowed) == sorted([names.STREAM_CLIENT_NAME,
                                      names.STREAM_MIGRATION_CLIENT_NAME])
    # the three flags point into the mounted Secret
    root = mounts["migration-tls"]["mountPath"]
    assert mounts["migration-tls"]["readOnly"] is True
    for flag, key in FLAGS.items():
        assert f"{flag}={root}/{key}" in args, (flag, args)
    assert volumes["migration-tls"]["secret"]["secretName"] == "kova-agent-migration-tls"
    # the console's certificate is another Secret, not mounted for the mover flags
    assert volumes["stream-tls"]["secret"]["secretName"] == "kova-agent-stream-tls"
    assert mounts["stream-tls"]["mountPath"] != root

    # the agents reach each other's stream port
    pol = one(objs, "NetworkPolicy", "kova-agent-stream")
    (rule,) = pol["spec"]["ingress"]
    comps = [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rule["from"]]
    assert sorted(comps) == ["agent", "api"]


def _verify_args(ca: x509.Certificate, crt: x509.Certificate) -> tuple:
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    key = ca.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return (padding.PKCS1v15(), crt.signature_hash_algorithm)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return (ec.ECDSA(crt.signature_hash_algorithm),)


def test_one_ca_across_the_three_certificates_of_a_rendering() -> None:
    objs = render()
    cas = {base64.b64decode(s["data"]["ca.crt"]) for s in by_kind(objs, "Secret")
           if s["metadata"]["name"] in ("kova-api-tls", "kova-agent-stream-tls",
                                        "kova-agent-migration-tls")}
    assert len(cas) == 1


def test_existing_secrets() -> None:
    """With the API component's certificates from the user (api.tls.existingSecret)
    the chart makes none: the agents get the migration flags only with
    agent.migrationTLS.existingSecret."""
    base = {"api.tls.existingSecret": "kova-api-tls-own", "api.tls.caBundle": "PEM",
            "agent.streamTLS.existingSecret": "kova-agent-own"}
    objs = render(base)
    assert not [s for s in by_kind(objs, "Secret") if "migration" in s["metadata"]["name"]]
    args, mounts, volumes = _agent(objs)
    assert not [a for a in args if a.startswith("--migration-")]
    assert "migration-tls" not in mounts and "migration-tls" not in volumes
    assert f"--stream-allowed-client={names.STREAM_MIGRATION_CLIENT_NAME}" in args

    objs = render({**base, "agent.migrationTLS.existingSecret": "kova-mover-own"})
    args, mounts, volumes = _agent(objs)
    assert volumes["migration-tls"]["secret"]["secretName"] == "kova-mover-own"
    for flag in FLAGS:
        assert any(a.startswith(flag + "=") for a in args), flag


def test_no_api_component_no_stream_certificates() -> None:
    objs = render({"api.enabled": False})
    args, mounts, volumes = _agent(objs)
    assert not [a for a in args if a.startswith(("--migration-", "--stream-"))]
    assert "migration-tls" not in volumes
