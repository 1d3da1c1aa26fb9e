"""Microversion negotiation: ``OpenStack-API-Version: placement X.Y``.

A request without a version header gets the minimum (1.0); ``latest`` gets
the maximum.  A malformed version is a 400, a well-formed one outside
[min, max] a 406 -- both before any handler runs.
"""

from __future__ import annotations

import re

SERVICE_TYPE = "placement"
MIN_VERSION = (1, 0)
MAX_VERSION = (1, 39)
HEADER = "openstack-api-version"
LEGACY_HEADER = "x-openstack-placement-api-version"

_VERSION_RE = re.compile(r"^([1-9]\d*|0)\.([1-9]\d*|0)$")
#: More digits than this cannot be a version in range.
_MAX_DIGITS = 6


class Version(tuple):
    """A (major, minor) tuple with the comparisons handlers need."""

    def __new__(cls, major: int, minor: int) -> "Version":
        return super().__new__(cls, (major, minor))

    def matches(self, min_version=None, max_version=None) -> bool:
        if min_version is not None and self < tuple(min_version):
            return False
        if max_version is not None and self > tuple(max_version):
            return False
        return True

    def __str__(self) -> str:
        return f"{self[0]}.{self[1]}"


def max_version_string() -> str:
    return "%d.%d" % MAX_VERSION


def min_version_string() -> str:
    return "%d.%d" % MIN_VERSION


class MalformedVersion(ValueError):
    pass


class UnacceptableVersion(ValueError):
    pass


def parse_version_string(value: str) -> Version:
    value = value.strip()
    if value == "latest":
        return Version(*MAX_VERSION)
    match = _VERSION_RE.match(value)
    if not match:
        raise MalformedVersion(f"invalid version string: {_shown(value)}")
    if len(match.group(1)) > _MAX_DIGITS or len(match.group(2)) > _MAX_DIGITS:
        # well-formed (no leading zeros), so far beyond MAX_VERSION: not
        # worth converting (Python refuses more than 4 300 digits anyway)
        raise UnacceptableVersion(f"Unacceptable version header: {_shown(value)}")
    return Version(int(match.group(1)), int(match.group(2)))


def _shown(value: str) -> str:
    """A header value as quoted in an error message: at most 64 characters."""
    return value if len(value) <= 64 else value[:64] + "..."


def _placement_value(header_value: str) -> str | None:
    """Find the placement entry in a possibly multi-service header."""
    for part in header_value.split(","):
        part = part.strip()
        if not part:
            continue
        pieces = part.split(None, 1)
        if pieces[0].lower() == SERVICE_TYPE:
            return pieces[1] if len(pieces) > 1 else ""
    return None


def extract_version(headers) -> Version:
    """Return the requested version from request headers (a mapping with
    lower-case keys) or raise MalformedVersion/UnacceptableVersion."""
    raw = None
    value = headers.get(HEADER)
    if value is not None:
        raw = _placement_value(value)
    if raw is None:
        legacy = headers.get(LEGACY_HEADER)
        if legacy is not None:
            raw = legacy
    if raw is None:
        return Version(*MIN_VERSION)
    version = parse_version_string(raw)
    if not (MIN_VERSION <= version <= MAX_VERSION):
        raise UnacceptableVersion(f"Unacceptable version header: {_shown(raw.strip())}")
    return version
