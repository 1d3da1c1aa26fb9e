"""Quota arithmetic (operator/quota.py): limits from ResourceQuotas, usage
from what is claimed, the message."""

from __future__ import annotations

import pytest

from kova.crds import names
from kova.operator import quota


def _rq(name: str, **hard) -> dict:
    return {"metadata": {"name": name}, "spec": {"hard": hard}}


def _inst(uid: str, host: str | None = None, size: dict | None = None) -> dict:
    status = {}
    if host:
        status = {"host": host, "resources": size}
    return {"metadata": {"uid": uid}, "status": status}


def test_limits_take_the_smallest_and_convert_units() -> None:
    lims = quota.limits([
        _rq("a", **{names.QUOTA_MEMORY: "4Gi", names.QUOTA_VCPUS: "10", "pods": "3"}),
        _rq("b", **{names.QUOTA_MEMORY: "3000Mi", names.QUOTA_DISK: "1Ti",
                    names.QUOTA_INSTANCES: "5"}),
    ])
    assert lims["memoryMiB"] == quota.Limit(3000, "b")
    assert lims["vcpus"] == quota.Limit(10, "a")
    assert lims["diskGiB"] == quota.Limit(1024, "b")
    assert lims["instances"] == quota.Limit(5, "b")
    assert quota.limits([_rq("c", pods="3")]) == {}


def test_usage_counts_claims_only() -> None:
    size = {"vcpus": 2, "memoryMiB": 1024, "diskGiB": 10}
    bodies = [_inst("a", "h1", size), _inst("b"), _inst("c"), _inst("me", "h1", size)]
    used = quota.usage(bodies, {"c": size}, exclude="me")  # c: claimed, not yet recorded
    assert used == {"instances": 2, "vcpus": 4, "memoryMiB": 2048, "diskGiB": 20}


def test_check_names_every_resource_over() -> None:
    lims = {"vcpus": quota.Limit(4, "q"), "instances": quota.Limit(10, "q")}
    used = {"instances": 1, "vcpus": 3, "memoryMiB": 0, "diskGiB": 0}
    quota.check("ns", lims, used, {"vcpus": 1, "memoryMiB": 9999, "diskGiB": 1})  # fits
    with pytest.raises(quota.QuotaExceeded) as err:
        quota.check("ns", lims, used, {"vcpus": 2, "memoryMiB": 1, "diskGiB": 1})
    assert err.value.reason == "QuotaExceeded"
    assert err.value.message == ("quota of namespace ns exceeded: vCPUs: requested 2, 3 in use "
                                 f"of 4 ({names.QUOTA_VCPUS} in ResourceQuota q)")


@pytest.mark.parametrize(("text", "value"), [
    ("10", 10), ("64Gi", 64 * 2**30), ("1.5Gi", 3 * 2**29), ("2T", 2 * 10**12),
    ("500m", 0.5), ("1e3", 1000), ("3000Mi", 3000 * 2**20)])
def test_quantities(text: str, value: float) -> None:
    assert quota.parse_quantity(text) == value


def test_a_bad_quantity_is_refused() -> None:
    with pytest.raises(ValueError):
        quota.parse_quantity("lots")
