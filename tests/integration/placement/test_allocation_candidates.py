"""GET /allocation_candidates: query features up to 1.39."""

from __future__ import annotations

from tests.fixtures.placement import new_uuid

AC = "/allocation_candidates"


def _get(api, qs, version="1.39", status=200):
    r = api.get(f"{AC}?{qs}", version=version)
    assert r.status_code == status, r.text
    return r.json()


def _sets(body):
    """Allocation requests as a set of frozensets of (rp, rc, amount)."""
    out = set()
    for ar in body["allocation_requests"]:
        items = frozenset((rp, rc, amt) for rp, v in ar["allocations"].items()
                          for rc, amt in v["resources"].items())
        out.add(items)
    return out


def test_flat_basics_and_formats(api):
    a = api.provider("a", inventory={"VCPU": 8, "MEMORY_MB": 2048, "DISK_GB": 100})
    b = api.provider("b", inventory={"VCPU": 2, "MEMORY_MB": 2048})
    body = _get(api, "resources=VCPU:2,MEMORY_MB:1024")
    assert _sets(body) == {frozenset({(a, "VCPU", 2), (a, "MEMORY_MB", 1024)}),
                           frozenset({(b, "VCPU", 2), (b, "MEMORY_MB", 1024)})}
    assert body["allocation_requests"][0]["mappings"] == {"": [a]}
    ps = body["provider_summaries"][a]
    assert ps["resources"]["DISK_GB"] == {"capacity": 100, "used": 0}
    assert ps["traits"] == [] and ps["root_provider_uuid"] == a
    # 1.10: list format, only requested classes, no traits
    body = _get(api, "resources=VCPU:3", version="1.10")
    assert body["allocation_requests"] == [
        {"allocations": [{"resource_provider": {"uuid": a}, "resources": {"VCPU": 3}}]}]
    assert body["provider_summaries"] == {a: {"resources": {"VCPU": {"capacity": 8, "used": 0}}}}
    # 1.12 dict format without mappings; 1.17 traits; 1.27 all classes
    body = _get(api, "resources=VCPU:3", version="1.12")
    assert body["allocation_requests"] == [{"allocations": {a: {"resources": {"VCPU": 3}}}}]
    assert "traits" in _get(api, "resources=VCPU:3", version="1.17")["provider_summaries"][a]
    assert set(_get(api, "resources=VCPU:3", version="1.26")["provider_summaries"][a][
        "resources"]) == {"VCPU"}
    assert set(_get(api, "resources=VCPU:3", version="1.27")["provider_summaries"][a][
        "resources"]) == {"VCPU", "MEMORY_MB", "DISK_GB"}
    assert "mappings" not in _get(api, "resources=VCPU:3", version="1.33")[
        "allocation_requests"][0]


def test_capacity_usage_and_unit_constraints(api):
    a = api.provider("a", inventory={"VCPU": {"total": 4, "max_unit": 2},
                                     "MEMORY_MB": {"total": 1024, "step_size": 256}})
    assert _get(api, "resources=VCPU:3")["allocation_requests"] == []
    assert _get(api, "resources=MEMORY_MB:100")["allocation_requests"] == []
    assert len(_get(api, "resources=MEMORY_MB:512")["allocation_requests"]) == 1
    api.allocate(new_uuid(), {a: {"VCPU": 2}})
    api.allocate(new_uuid(), {a: {"VCPU": 1}})
    assert _get(api, "resources=VCPU:2")["allocation_requests"] == []
    body = _get(api, "resources=VCPU:1")
    assert body["provider_summaries"][a]["resources"]["VCPU"] == {"capacity": 4, "used": 3}


def test_limit_and_determinism(api):
    rps = [api.provider(f"n{i}", inventory={"VCPU": 4}) for i in range(5)]
    body = _get(api, "resources=VCPU:1&limit=2")
    got = [list(ar["allocations"])[0] for ar in body["allocation_requests"]]
    assert got == rps[:2] and set(body["provider_summaries"]) == set(rps[:2])
    assert _get(api, "resources=VCPU:1&limit=2") == body
    _get(api, "resources=VCPU:1&limit=0", status=400)
    _get(api, "resources=VCPU:1&limit=x", status=400)
    _get(api, "resources=VCPU:1&limit=2", version="1.15", status=400)


def test_required_and_forbidden_traits(api):
    a = api.provider("a", inventory={"VCPU": 4}, traits=["HW_CPU_X86_AVX2", "HW_CPU_X86_SSE2"])
    b = api.provider("b", inventory={"VCPU": 4}, traits=["HW_CPU_X86_SSE2"])
    c = api.provider("c", inventory={"VCPU": 4})

    def rps(qs, version="1.39"):
        return {list(ar["allocations"])[0] for ar in _get(api, qs, version)["allocation_requests"]}

    assert rps("resources=VCPU:1&required=HW_CPU_X86_AVX2") == {a}
    assert rps("resources=VCPU:1&required=HW_CPU_X86_SSE2") == {a, b}
    assert rps("resources=VCPU:1&required=!HW_CPU_X86_AVX2") == {b, c}
    assert rps("resources=VCPU:1&required=HW_CPU_X86_SSE2,!HW_CPU_X86_AVX2") == {b}
    for _ in range(5):  # OpenStack Placement 16.0.0 answered 500 here intermittently
        assert rps("resources=VCPU:1&required=!HW_CPU_X86_SSE2") == {c}
    assert rps("resources=VCPU:1&required=in:HW_CPU_X86_AVX2,HW_CPU_X86_SSE2") == {a, b}
    assert rps("resources=VCPU:1&required=in:HW_CPU_X86_AVX2,HW_CPU_X86_SSE2"
               "&required=!HW_CPU_X86_AVX2") == {b}
    _get(api, "resources=VCPU:1&required=HW_CPU_X86_AVX2", version="1.16", status=400)
    _get(api, "resources=VCPU:1&required=!HW_CPU_X86_AVX2", version="1.21", status=400)
    _get(api, "resources=VCPU:1&required=in:HW_CPU_X86_AVX2", version="1.38", status=400)
    _get(api, "resources=VCPU:1&required=CUSTOM_NOT_THERE", status=400)
    _get(api, "resources=VCPU:1&required=HW_CPU_X86_AVX2,!HW_CPU_X86_AVX2", status=400)
    _get(api, "resources=VCPU:1&required=in:A,!B", status=400)


def test_member_of(api):
    agg1, agg2 = new_uuid(), new_uuid()
    a = api.provider("a", inventory={"VCPU": 4}, aggregates=[agg1])
    b = api.provider("b", inventory={"VCPU": 4}, aggregates=[agg1, agg2])
    c = api.provider("c", inventory={"VCPU": 4})

    def rps(qs, version="1.39"):
        return {list(ar["allocations"])[0] for ar in _get(api, qs, version)["allocation_requests"]}

    assert rps(f"resources=VCPU:1&member_of={agg1}") == {a, b}
    assert rps(f"resources=VCPU:1&member_of=in:{agg2},{new_uuid()}") == {b}
    assert rps(f"resources=VCPU:1&member_of={agg1}&member_of={agg2}") == {b}
    assert rps(f"resources=VCPU:1&member_of=!{agg2}") == {a, c}
    assert rps(f"resources=VCPU:1&member_of=!in:{agg1},{agg2}") == {c}
    assert rps(f"resources=VCPU:1&member_of={new_uuid()}") == set()
    _get(api, f"resources=VCPU:1&member_of={agg1}", version="1.20", status=400)
    _get(api, f"resources=VCPU:1&member_of={agg1}&member_of={agg2}", version="1.23",
         status=400)
    _get(api, f"resources=VCPU:1&member_of=!{agg1}", version="1.31", status=400)
    _get(api, "resources=VCPU:1&member_of=not-a-uuid", status=400)
    _get(api, f"resources=VCPU:1&member_of={agg1},{agg2}", status=400)


def test_granular_groups_and_policy(api):
    cn = api.provider("cn", inventory={"VCPU": 8})
    pf1 = api.provider("pf1", parent=cn, inventory={"SRIOV_NET_VF": 4},
                       traits=["CUSTOM_PHYSNET_A"])
    pf2 = api.provider("pf2", parent=cn, inventory={"SRIOV_NET_VF": 4},
                       traits=["CUSTOM_PHYSNET_B"])
    qs = "resources=VCPU:1&resources1=SRIOV_NET_VF:1&resources2=SRIOV_NET_VF:1"
    _get(api, qs, status=400)  # group_policy is required with two granular groups
    none = _get(api, qs + "&group_policy=none")
    assert len(none["allocation_requests"]) == 4
    # same provider for both groups: amounts are summed, exactly
    both_pf1 = [ar for ar in none["allocation_requests"]
                if set(ar["allocations"]) == {cn, pf1}]
    assert both_pf1[0]["allocations"][pf1]["resources"] == {"SRIOV_NET_VF": 2}
    assert both_pf1[0]["mappings"] == {"": [cn], "1": [pf1], "2": [pf1]}
    isolate = _get(api, qs + "&group_policy=isolate")
    assert len(isolate["allocation_requests"]) == 2
    assert all(len(ar["allocations"]) == 3 for ar in isolate["allocation_requests"])
    body = _get(api, "resources=VCPU:1&resources1=SRIOV_NET_VF:1&required1=CUSTOM_PHYSNET_B")
    assert _sets(body) == {frozenset({(cn, "VCPU", 1), (pf2, "SRIOV_NET_VF", 1)})}
    assert set(body["provider_summaries"]) == {cn, pf1, pf2}
    assert body["provider_summaries"][pf1]["parent_provider_uuid"] == cn
    # suffixes: digits from 1.25, names from 1.33
    _get(api, "resources_NET=SRIOV_NET_VF:1", version="1.32", status=400)
    body = _get(api, "resources_NET=SRIOV_NET_VF:1&required_NET=CUSTOM_PHYSNET_A",
                version="1.33")
    assert _sets(body) == {frozenset({(pf1, "SRIOV_NET_VF", 1)})}
    assert _get(api, "resources_NET=SRIOV_NET_VF:1&required_NET=CUSTOM_PHYSNET_A")[
        "allocation_requests"][0]["mappings"] == {"_NET": [pf1]}
    _get(api, "resources1=VCPU:1", version="1.24", status=400)
    _get(api, "resources=VCPU:1&required1=CUSTOM_PHYSNET_A", version="1.35", status=400)


def test_overlapping_groups_never_overcount(api):
    cn = api.provider("cn", inventory={"VCPU": 32})
    qs = "resources1=VCPU:13&resources2=VCPU:7&group_policy=none"
    body = _get(api, qs)
    assert [ar["allocations"] for ar in body["allocation_requests"]] == [
        {cn: {"resources": {"VCPU": 20}}}]
    assert _get(api, "resources1=VCPU:13&resources2=VCPU:7&group_policy=isolate")[
        "allocation_requests"] == []
    assert _get(api, "resources1=VCPU:20&resources2=VCPU:13&group_policy=none")[
        "allocation_requests"] == []


def test_nested_trees_and_old_microversions(api):
    cn = api.provider("cn", inventory={"VCPU": 8})
    numa = api.provider("numa", parent=cn, inventory={"MEMORY_MB": 4096})
    flat = api.provider("flat", inventory={"VCPU": 8, "MEMORY_MB": 4096})
    body = _get(api, "resources=VCPU:1,MEMORY_MB:512")
    assert _sets(body) == {
        frozenset({(cn, "VCPU", 1), (numa, "MEMORY_MB", 512)}),
        frozenset({(flat, "VCPU", 1), (flat, "MEMORY_MB", 512)})}
    assert set(body["provider_summaries"]) == {cn, numa, flat}
    old = _get(api, "resources=VCPU:1,MEMORY_MB:512", version="1.28")
    assert _sets(old) == {frozenset({(flat, "VCPU", 1), (flat, "MEMORY_MB", 512)})}
    assert set(old["provider_summaries"]) == {flat}
    assert "root_provider_uuid" not in old["provider_summaries"][flat]
    # in_tree from 1.31
    body = _get(api, f"resources=VCPU:1&in_tree={numa}")
    assert _sets(body) == {frozenset({(cn, "VCPU", 1)})}
    _get(api, f"resources=VCPU:1&in_tree={numa}", version="1.30", status=400)
    assert _get(api, f"resources=VCPU:1&in_tree={new_uuid()}")["allocation_requests"] == []
    body = _get(api, f"resources=VCPU:1&resources1=MEMORY_MB:512&in_tree1={flat}"
                     "&group_policy=none")
    assert _sets(body) == {frozenset({(flat, "VCPU", 1), (flat, "MEMORY_MB", 512)})}


def test_sharing_providers(api):
    agg = new_uuid()
    cn1 = api.provider("cn1", inventory={"VCPU": 8}, aggregates=[agg])
    cn2 = api.provider("cn2", inventory={"VCPU": 8}, aggregates=[agg])
    cn3 = api.provider("cn3", inventory={"VCPU": 8, "DISK_GB": 50})
    ss = api.provider("ss", inventory={"DISK_GB": 1000},
                      traits=["MISC_SHARES_VIA_AGGREGATE"], aggregates=[agg])
    body = _get(api, "resources=VCPU:1,DISK_GB:100")
    assert _sets(body) == {
        frozenset({(cn1, "VCPU", 1), (ss, "DISK_GB", 100)}),
        frozenset({(cn2, "VCPU", 1), (ss, "DISK_GB", 100)})}
    assert set(body["provider_summaries"]) == {cn1, cn2, ss}
    body = _get(api, "resources=VCPU:1,DISK_GB:10")
    assert len(body["allocation_requests"]) == 3
    assert frozenset({(cn3, "VCPU", 1), (cn3, "DISK_GB", 10)}) in _sets(body)
    # a sharing provider alone satisfies a granular group, once
    body = _get(api, "resources1=DISK_GB:100")
    assert _sets(body) == {frozenset({(ss, "DISK_GB", 100)})}
    body = _get(api, "resources=VCPU:1&resources1=DISK_GB:100&group_policy=isolate")
    assert _sets(body) == {
        frozenset({(cn1, "VCPU", 1), (ss, "DISK_GB", 100)}),
        frozenset({(cn2, "VCPU", 1), (ss, "DISK_GB", 100)})}
    # deterministic whatever the row order
    assert _get(api, "resources=VCPU:1,DISK_GB:100") == _get(api, "resources=VCPU:1,DISK_GB:100")


def test_root_required_and_same_subtree(api):
    cn1 = api.provider("cn1", inventory={"VCPU": 8}, traits=["COMPUTE_STATUS_DISABLED"])
    cn2 = api.provider("cn2", inventory={"VCPU": 8})
    nic = api.provider("nic", parent=cn2)
    pf1 = api.provider("pf1", parent=nic, inventory={"SRIOV_NET_VF": 2})
    pf2 = api.provider("pf2", parent=cn2, inventory={"SRIOV_NET_VF": 2})
    body = _get(api, "resources=VCPU:1&root_required=!COMPUTE_STATUS_DISABLED")
    assert _sets(body) == {frozenset({(cn2, "VCPU", 1)})}
    body = _get(api, "resources=VCPU:1&root_required=COMPUTE_STATUS_DISABLED")
    assert _sets(body) == {frozenset({(cn1, "VCPU", 1)})}
    _get(api, "resources=VCPU:1&root_required=COMPUTE_STATUS_DISABLED", version="1.34",
         status=400)
    r = api.get(f"{AC}?resources=VCPU:1&root_required=A&root_required=B")
    assert r.json()["errors"][0]["code"] == "placement.query.duplicate_key"
    r = api.get(f"{AC}?resources=VCPU:1&root_required=HW_CPU_X86_AVX,!HW_CPU_X86_AVX")
    assert r.json()["errors"][0]["code"] == "placement.query.bad_value"
    # same_subtree with a resourceless group: both VFs under the NIC
    qs = ("resources_A=SRIOV_NET_VF:1&resources_B=SRIOV_NET_VF:1&required_NIC=&"
          "group_policy=isolate")
    body = _get(api, "resources_A=SRIOV_NET_VF:1&resources_B=SRIOV_NET_VF:1"
                     "&group_policy=none&same_subtree=_A,_B")
    pairs = {frozenset(ar["mappings"]["_A"] + ar["mappings"]["_B"])
             for ar in body["allocation_requests"]}
    assert pairs == {frozenset({pf1}), frozenset({pf2})}
    body = _get(api, "resources_A=SRIOV_NET_VF:1&resources_B=SRIOV_NET_VF:1"
                     "&group_policy=isolate")
    assert len(body["allocation_requests"]) == 2
    r = api.get(f"{AC}?resources_A=SRIOV_NET_VF:1&same_subtree=_A,_Z")
    assert r.json()["errors"][0]["code"] == "placement.query.bad_value"
    r = api.get(f"{AC}?resources_A=SRIOV_NET_VF:1&same_subtree=,_A")
    assert r.json()["errors"][0]["code"] == "placement.query.bad_value"
    r = api.get(f"{AC}?resources_A=SRIOV_NET_VF:1&member_of_B={new_uuid()}")
    assert r.json()["errors"][0]["code"] == "placement.query.bad_value"
    r = api.get(f"{AC}?required=HW_CPU_X86_AVX")
    assert r.json()["errors"][0]["code"] == "placement.query.missing_value"
    _get(api, "resources_A=SRIOV_NET_VF:1&same_subtree=_A", version="1.35", status=400)
    del qs


def test_bad_requests(api):
    for qs, version in (("", "1.10"), ("resources=", "1.39"), ("resources=VCPU", "1.39"),
                        ("resources=VCPU:-1", "1.39"), ("resources=FOO:1", "1.39"),
                        ("resources=VCPU:1&colour=red", "1.39"),
                        ("resources=VCPU:1&group_policy=sometimes", "1.39"),
                        ("resources=VCPU:1&in_tree=nope", "1.39"),
                        ("resources1=VCPU:1&resources2=VCPU:1", "1.39")):
        r = api.get(f"{AC}?{qs}", version=version)
        assert r.status_code == 400, (qs, r.text)
