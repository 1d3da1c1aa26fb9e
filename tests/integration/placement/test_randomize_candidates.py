"""``randomize_allocation_candidates``: with ``limit``, a random sample of all
candidates rather than the first N (OpenStack's ``[placement]
randomize_allocation_candidates``), so a scheduler asking for few candidates
still spreads over every host.  Over HTTP against a real ``kova placement
serve``, and through the app for the multi-provider (sharing) path."""

from __future__ import annotations

import httpx

from tests.fixtures.placement import new_uuid
from tests.helpers import PlacementServer

AC = "/allocation_candidates"
H = {"OpenStack-API-Version": "placement 1.39"}


def _providers(http: httpx.Client, n: int, vcpus: int = 8) -> list[str]:
    out = []
    for i in range(n):
        r = http.post("/resource_providers", json={"name": f"cn-{i:02d}"}, headers=H)
        assert r.status_code == 200, r.text
        rp = r.json()["uuid"]
        r = http.put(f"/resource_providers/{rp}/inventories", headers=H, json={
            "resource_provider_generation": 0,
            "inventories": {"VCPU": {"total": vcpus}, "MEMORY_MB": {"total": 4096}}})
        assert r.status_code == 200, r.text
        out.append(rp)
    return out


def _candidates(http: httpx.Client, qs: str) -> list[str]:
    r = http.get(f"{AC}?{qs}", headers=H)
    assert r.status_code == 200, r.text
    body = r.json()
    rps = [next(iter(ar["allocations"])) for ar in body["allocation_requests"]]
    assert all(len(ar["allocations"]) == 1 for ar in body["allocation_requests"])
    # the summaries describe exactly the providers that were returned
    assert set(body["provider_summaries"]) == set(rps)
    return rps


def _check_sampling(http: httpx.Client, rps: list[str], full: str) -> None:
    usable = set(rps) - {full}
    seen: set[str] = set()
    for _ in range(20):
        got = _candidates(http, "resources=VCPU:2&limit=5")
        assert len(got) == 5 and len(set(got)) == 5
        assert set(got) <= usable, "a full provider was offered"
        seen |= set(got)
    # The first five would be the same five every time; 20 random samples of 5
    # from 29 cover well over 20 of them (expected ~28.5; < 20 has a
    # probability far below 1e-9).
    assert len(seen) >= 20, len(seen)
    # A limit above the number of candidates returns all of them.
    assert set(_candidates(http, "resources=VCPU:2&limit=100")) == usable
    # No limit: all of them, shuffled (20 calls all in one order: ~(1/29!)^19).
    orders = {tuple(_candidates(http, "resources=VCPU:2")) for _ in range(20)}
    assert all(set(o) == usable for o in orders)
    assert len(orders) > 1


def _fill(http: httpx.Client, rp: str) -> None:
    r = http.put(f"/allocations/{new_uuid()}", headers=H, json={
        "allocations": {rp: {"resources": {"VCPU": 8}}}, "project_id": "p", "user_id": "u",
        "consumer_generation": None, "consumer_type": "INSTANCE"})
    assert r.status_code == 204, r.text


def test_randomized_limit_over_http(tmp_path):
    """``serve --randomize-allocation-candidates``; the default server keeps
    the deterministic first N."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    on = PlacementServer(tmp_path / "a", ("--randomize-allocation-candidates",))
    try:
        rps = _providers(on.http, 30)
        _fill(on.http, rps[3])
        _check_sampling(on.http, rps, rps[3])
    finally:
        on.stop()
    off = PlacementServer(tmp_path / "b")
    try:
        rps = _providers(off.http, 12)
        first = _candidates(off.http, "resources=VCPU:2&limit=5")
        assert first == rps[:5]
        for _ in range(5):
            assert _candidates(off.http, "resources=VCPU:2&limit=5") == first
    finally:
        off.stop()


def test_randomize_from_the_environment(tmp_path):
    """KOVA_PLACEMENT_RANDOMIZE_ALLOCATION_CANDIDATES=true (what a deployment
    sets), and the flag's negative form overriding it."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    env = {"KOVA_PLACEMENT_RANDOMIZE_ALLOCATION_CANDIDATES": "true"}
    on = PlacementServer(tmp_path / "a", env=env)
    try:
        rps = _providers(on.http, 30)
        _fill(on.http, rps[0])
        _check_sampling(on.http, rps, rps[0])
    finally:
        on.stop()
    off = PlacementServer(tmp_path / "b", ("--no-randomize-allocation-candidates",), env=env)
    try:
        rps = _providers(off.http, 10)
        for _ in range(5):
            assert _candidates(off.http, "resources=VCPU:2&limit=3") == rps[:3]
    finally:
        off.stop()


def test_randomized_limit_with_sharing_providers(api, placement_app):
    """The general path (a compute node plus a shared disk pool): a sample of
    whole allocation requests, each still complete."""
    agg = new_uuid()
    cns = [api.provider(f"cn{i}", inventory={"VCPU": 8}, aggregates=[agg]) for i in range(12)]
    ss = api.provider("ss", inventory={"DISK_GB": 1000},
                      traits=["MISC_SHARES_VIA_AGGREGATE"], aggregates=[agg])
    placement_app.randomize_allocation_candidates = True
    try:
        seen = set()
        for _ in range(15):
            r = api.get(f"{AC}?resources=VCPU:1,DISK_GB:100&limit=3", version="1.39")
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["allocation_requests"]) == 3
            used = set()
            for ar in body["allocation_requests"]:
                allocs = ar["allocations"]
                assert allocs[ss] == {"resources": {"DISK_GB": 100}}
                (cn,) = set(allocs) - {ss}
                assert cn in cns and allocs[cn] == {"resources": {"VCPU": 1}}
                seen.add(cn)
                used |= set(allocs)
            assert set(body["provider_summaries"]) == used
        assert len(seen) >= 8, len(seen)  # the first 3 only, were it not random
    finally:
        placement_app.randomize_allocation_candidates = False


def test_sampled_limit_spreads_uniformly(api, placement_app):
    """With few candidates wanted out of many, the limited answer is drawn
    without finding every candidate first (``candidates._sampled``); it must
    still be a uniform sample of all of them.  200 providers, 150 of them
    with the required trait; 600 answers of 10.  Each fitting provider is
    expected in 40 answers: the counts' chi-square over the 300 must be
    within 6 standard deviations of its mean (a provider favoured or left
    out shows at once), no provider without the trait appears, and
    neighbours (in creation order) appear together as often as chance
    says -- a sample taken as a window from a random start would put
    them together 9 times as often."""
    import math

    fit: list[str] = []
    for i in range(200):
        traits = ["CUSTOM_FIT"] if i % 4 else []
        rp = api.provider(f"s{i:03d}", inventory={"VCPU": 8}, traits=traits)
        if traits:
            fit.append(rp)
    index = {rp: i for i, rp in enumerate(fit)}
    placement_app.randomize_allocation_candidates = True
    answers, limit = 600, 10
    counts = dict.fromkeys(fit, 0)
    together = 0
    try:
        for _ in range(answers):
            r = api.get(f"{AC}?resources=VCPU:1&required=CUSTOM_FIT&limit={limit}",
                        version="1.39")
            assert r.status_code == 200, r.text
            got = [next(iter(ar["allocations"])) for ar in r.json()["allocation_requests"]]
            assert len(got) == limit and len(set(got)) == limit
            assert set(got) <= set(fit), "a provider without the required trait"
            for rp in got:
                counts[rp] += 1
            positions = {index[rp] for rp in got}
            together += sum(1 for i in positions if i + 1 in positions)
    finally:
        placement_app.randomize_allocation_candidates = False
    m = len(fit)
    expected = answers * limit / m
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    # without replacement within an answer the counts vary a little less
    # than multinomial ones: the test is, if anything, lenient
    assert abs(chi2 - (m - 1)) < 6 * math.sqrt(2 * (m - 1)), (chi2, sorted(counts.values()))
    # adjacent pairs: (m - 1) of them, each in an answer with p = l(l-1)/(m(m-1))
    pairs_expected = answers * limit * (limit - 1) / m
    assert abs(together - pairs_expected) < 6 * math.sqrt(pairs_expected) + 10, (
        together, pairs_expected)
