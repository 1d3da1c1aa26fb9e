"""User data sealed for one host.

A compute agent may not read Secrets: a compromised node would read every
Secret of the cluster.  Instead each agent holds an X25519 key pair (the
private key in a 0600 file on its node, the public key in its Host's
``status.userDataKey``, which only that agent may write), and the operator,
which may read Secrets, seals the user data of an Instance for the public
key of the host it is placed on (``status.sealedUserData`` of the Instance).
Any agent can read the sealed text; only the Instance's host can open it.

The box: an ephemeral X25519 key agreed with the host's key, HKDF-SHA256,
ChaCha20-Poly1305 with the Instance (namespace/name/uid) and host as
associated data, so a sealed text opens for that Instance on that host only.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"kova.dev sealed user data v1"


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class SealError(Exception):
    """A sealed text that does not open (another host's key, altered, or
    made for another Instance)."""


def load_or_create(path: Path) -> X25519PrivateKey:
    """The host's private key, created (mode 0600) on first use."""
    try:
        return X25519PrivateKey.from_private_bytes(path.read_bytes())
    except FileNotFoundError:
        pass
    key = X25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    os.replace(tmp, path)
    return key


def public_text(key: X25519PrivateKey) -> str:
    """The public key as published in Host ``status.userDataKey``."""
    return base64.b64encode(_raw(key.public_key())).decode()


def key_id(public: str) -> str:
    """A short fingerprint of a published public key."""
    return hashlib.sha256(public.encode()).hexdigest()[:16]


def context(namespace: str, name: str, uid: str, host: str) -> bytes:
    return f"{namespace}/{name}/{uid}@{host}".encode()


def _key(shared: bytes, eph: bytes, peer: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=eph + peer, info=_INFO).derive(shared)


def seal(public: str, plaintext: bytes, aad: bytes) -> str:
    peer_raw = base64.b64decode(public)
    peer = X25519PublicKey.from_public_bytes(peer_raw)
    eph = X25519PrivateKey.generate()
    eph_raw = _raw(eph.public_key())
    nonce = os.urandom(12)
    box = ChaCha20Poly1305(_key(eph.exchange(peer), eph_raw, peer_raw))
    return base64.b64encode(eph_raw + nonce + box.encrypt(nonce, plaintext, aad)).decode()


def unseal(key: X25519PrivateKey, sealed: str, aad: bytes) -> bytes:
    try:
        raw = base64.b64decode(sealed)
        eph_raw, nonce, body = raw[:32], raw[32:44], raw[44:]
        own = _raw(key.public_key())
        shared = key.exchange(X25519PublicKey.from_public_bytes(eph_raw))
        return ChaCha20Poly1305(_key(shared, eph_raw, own)).decrypt(nonce, body, aad)
    except Exception as exc:  # noqa: BLE001 - any failure means: does not open here
        raise SealError("the sealed user data does not open with this host's key") from exc
