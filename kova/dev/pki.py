"""Key material for the local control plane: a CA, the API server's serving
certificate, the service-account signing key, the front-proxy CA and client
certificate the API server proxies aggregated APIs with, and certificates
signed by a CA of one's own (``cryptography``)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ca_cert(ca_key: rsa.RSAPrivateKey, ca_name: x509.Name,
             now: dt.datetime) -> x509.Certificate:
    """A self-signed CA certificate valid for ten years."""
    return (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _apiserver_cert(srv_key: rsa.RSAPrivateKey, ca_key: rsa.RSAPrivateKey, ca_name: x509.Name,
                    now: dt.datetime, extra_ips: tuple[str, ...] = ()) -> x509.Certificate:
    """The API server's serving certificate (loopback and in-cluster names,
    and ``extra_ips``)."""
    sans = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips),
    ]
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def ensure_pki(directory: Path, ca_common_name: str = "kova-dev-ca",
               extra_ips: tuple[str, ...] = ()) -> dict[str, Path]:
    """Create (once) ``ca.crt/ca.key``, ``apiserver.crt/.key`` and ``sa.key/sa.pub``;
    the CA is named ``ca_common_name`` (two test CAs need distinct names, or
    OpenSSL takes one for the other and reports a signature failure).
    ``extra_ips`` are further addresses the API server's certificate names
    (the node address of a control plane with a kubelet).

    Existing files are reused, so a restarted stack keeps trusting the same CA
    and the service-account tokens it already issued stay valid.
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "ca_crt": directory / "ca.crt",
        "ca_key": directory / "ca.key",
        "apiserver_crt": directory / "apiserver.crt",
        "apiserver_key": directory / "apiserver.key",
        "sa_key": directory / "sa.key",
        "sa_pub": directory / "sa.pub",
    }
    if all(p.exists() for p in paths.values()):
        return paths

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_common_name)])
    ca_cert = _ca_cert(ca_key, ca_name, now)
    srv_key = _key()
    srv_cert = _apiserver_cert(srv_key, ca_key, ca_name, now, extra_ips)

    sa_key = _key()
    _write_key(ca_key, paths["ca_key"])
    _write_cert(ca_cert, paths["ca_crt"])
    _write_key(srv_key, paths["apiserver_key"])
    _write_cert(srv_cert, paths["apiserver_crt"])
    _write_key(sa_key, paths["sa_key"])
    paths["sa_pub"].write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return paths


def issue_server_cert(pki_dir: Path, name: str, hosts: list[str], out_dir: Path | None = None,
                      days: int = 365, ca_common_name: str = "kova-dev-ca") -> dict[str, Path]:
    """A serving certificate for ``hosts`` (DNS names or IP addresses) signed
    by the CA of :func:`ensure_pki` in ``pki_dir``: ``<name>.crt``/``<name>.key``
    in ``out_dir`` (default ``pki_dir``), plus the CA's path as ``ca_crt``.
    For a local Placement served over TLS (``kova placement serve
    --tls-cert-file/--tls-key-file``)."""
    paths = ensure_pki(pki_dir, ca_common_name)
    return issue_cert(paths["ca_crt"], paths["ca_key"], name, hosts=hosts,
                      out_dir=out_dir or pki_dir, days=days)


def ensure_ca(directory: Path, name: str, common_name: str) -> dict[str, Path]:
    """A CA of its own (``<name>-ca.crt``/``<name>-ca.key`` in ``directory``),
    created once and reused."""
    directory.mkdir(parents=True, exist_ok=True)
    crt, key_path = directory / f"{name}-ca.crt", directory / f"{name}-ca.key"
    if not (crt.exists() and key_path.exists()):
        key = _key()
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        _write_key(key, key_path)
        _write_cert(_ca_cert(key, ca_name, dt.datetime.now(dt.timezone.utc)), crt)
    return {"ca_crt": crt, "ca_key": key_path}


def issue_cert(ca_crt: Path, ca_key: Path, name: str, *, common_name: str | None = None,
               organizations: tuple[str, ...] = (),
               hosts: list[str] | tuple[str, ...] = (), server: bool = True,
               client: bool = False, out_dir: Path, days: int = 365) -> dict[str, Path]:
    """A certificate signed by the CA ``ca_crt``/``ca_key``: subject CN
    ``common_name`` (default ``name``) and O ``organizations`` (a client's
    groups, as Kubernetes reads them), SANs ``hosts`` (DNS names or IP
    addresses), usable for serving and/or as a TLS client; written to
    ``out_dir/<name>.crt`` and ``.key``."""
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(signer, rsa.RSAPrivateKey), f"{ca_key}: not an RSA key"
    issuer = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    usages = ([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    now = dt.datetime.now(dt.timezone.utc)
    key = _key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, common_name or name),
            *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations)]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(signer, hashes.SHA256())
    out_dir.mkdir(parents=True, exist_ok=True)
    crt, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    _write_key(key, key_path)
    _write_cert(cert, crt)
    return {"crt": crt, "key": key_path, "ca_crt": ca_crt}


#: The name the API server's front-proxy client certificate carries; the
#: aggregated API servers accept request headers only from it
#: (--requestheader-allowed-names).
FRONT_PROXY_CLIENT = "front-proxy-client"


def ensure_front_proxy_pki(directory: Path) -> dict[str, Path]:
    """The front-proxy CA and the API server's front-proxy client certificate
    (``--requestheader-client-ca-file``, ``--proxy-client-cert-file``): the
    API server presents it when it proxies a request to an aggregated API
    (Kova's subresource API), which trusts the X-Remote-User/-Group/-Extra
    headers of that connection only. A CA of its own, as kubeadm makes it:
    no certificate of the cluster CA can pose as the proxy."""
    ca = ensure_ca(directory, "front-proxy", "kova-dev-front-proxy-ca")
    client_crt = directory / f"{FRONT_PROXY_CLIENT}.crt"
    if not client_crt.exists():
        issue_cert(ca["ca_crt"], ca["ca_key"], FRONT_PROXY_CLIENT, server=False, client=True,
                   out_dir=directory, days=3650)
    return {"front_proxy_ca_crt": ca["ca_crt"], "front_proxy_client_crt": client_crt,
            "front_proxy_client_key": directory / f"{FRONT_PROXY_CLIENT}.key"}


def issue_client_cert(pki_dir: Path, common_name: str, organizations: tuple[str, ...] = (),
                      days: int = 3650) -> dict[str, Path]:
    """A client certificate (``<common_name>.crt``/``.key`` in ``pki_dir``)
    signed by the CA of :func:`ensure_pki`: user ``common_name`` in the groups
    ``organizations``, as Kubernetes reads x509 client certificates.  The API
    server presents one to the kubelet (``--kubelet-client-certificate``)."""
    paths = ensure_pki(pki_dir)
    crt, key_path = pki_dir / f"{common_name}.crt", pki_dir / f"{common_name}.key"
    if not (crt.exists() and key_path.exists()):
        issue_cert(paths["ca_crt"], paths["ca_key"], common_name, organizations=organizations,
                   server=False, client=True, out_dir=pki_dir, days=days)
    return {"crt": crt, "key": key_path}
