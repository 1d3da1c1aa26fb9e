"""Integration: filters, weighers, server groups, zones, traits, NoValidHost."""

from __future__ import annotations

from kova.crds import names as contract
from tests.fixtures.operator import condition, wait_for


def host_of(inst):
    return inst["status"]["host"]


def test_no_valid_host_then_success_when_a_host_is_added(cluster):
    cluster.start_operator()
    cluster.create_instance("vm1")
    inst = cluster.wait_reason("vm1", contract.REASON_NO_VALID_HOST)
    assert inst["status"]["phase"] == "Pending"
    msg = condition(inst, contract.COND_SCHEDULED)["message"]
    assert "no host has 512 MEMORY_MB free" in msg, msg
    small = cluster.add_host("tiny", memory_mib=256)
    inst = cluster.wait(
        "vm1", lambda i: "no host has 512 MEMORY_MB free" in condition(
            i, contract.COND_SCHEDULED)["message"]
        and "VCPU free" not in condition(i, contract.COND_SCHEDULED)["message"], 15,
        "the message to name only memory as short")
    assert (inst.get("status") or {}).get("host") is None
    big = cluster.add_host("big")
    inst = cluster.wait_scheduled("vm1", timeout=20)
    assert host_of(inst) == big != small
    uid = inst["metadata"]["uid"]
    assert list(cluster.placement.allocations(uid)) == [cluster.hosts[big]]


def test_missing_flavor_waits_until_created(cluster):
    cluster.add_host("h1")
    cluster.start_operator()
    cluster.create_instance("vm1", flavorRef={"name": cluster.name("late")})
    inst = cluster.wait_reason("vm1", contract.REASON_FLAVOR_NOT_FOUND)
    assert inst["status"]["phase"] == "Pending"
    cluster.create_flavor(cluster.name("late"), vcpus=2, memoryMiB=256, diskGiB=2)
    inst = cluster.wait_scheduled("vm1")
    assert inst["status"]["resources"] == {"vcpus": 2, "memoryMiB": 256, "diskGiB": 2}


def test_hard_anti_affinity_and_max_server_per_host(cluster):
    hosts = {cluster.add_host(f"h{i}") for i in range(3)}
    cluster.create_server_group("web", "anti-affinity")
    cluster.create_server_group("db", "anti-affinity", maxServerPerHost=2)
    cluster.start_operator()
    for i in range(3):
        cluster.create_instance(f"web{i}", serverGroupRef={"name": "web"})
    placed = {host_of(cluster.wait_scheduled(f"web{i}")) for i in range(3)}
    assert placed == hosts

    def sg_status():
        sg = cluster.api.get_namespaced_custom_object(
            contract.GROUP, contract.VERSION, cluster.ns, "servergroups", "web")
        return sg.get("status") or {}
    st = wait_for(lambda: (s := sg_status()).get("hosts") and len(s["hosts"]) == 3 and s, 15,
                  what="ServerGroup status")
    assert st["members"] == ["web0", "web1", "web2"]
    assert st["conditions"][0]["type"] == "PolicySatisfied"
    assert st["conditions"][0]["status"] == "True"
    cluster.create_instance("web3", serverGroupRef={"name": "web"})
    inst = cluster.wait_reason("web3", contract.REASON_NO_VALID_HOST)
    assert "anti-affinity" in condition(inst, contract.COND_SCHEDULED)["message"]
    for i in range(6):
        cluster.create_instance(f"db{i}", serverGroupRef={"name": "db"})
    per_host = {}
    for i in range(6):
        h = host_of(cluster.wait_scheduled(f"db{i}"))
        per_host[h] = per_host.get(h, 0) + 1
    assert sorted(per_host.values()) == [2, 2, 2]


def test_hard_affinity(cluster):
    for i in range(3):
        cluster.add_host(f"h{i}")
    cluster.create_server_group("app", "affinity")
    cluster.start_operator()
    for i in range(4):
        cluster.create_instance(f"app{i}", serverGroupRef={"name": "app"})
    hosts = {host_of(cluster.wait_scheduled(f"app{i}")) for i in range(4)}
    assert len(hosts) == 1


def test_soft_anti_affinity_spreads_even_when_packing(cluster):
    a, b = cluster.add_host("a"), cluster.add_host("b")
    cluster.create_server_group("g", "soft-anti-affinity")
    cluster.start_operator("--weigh", "pack", "--soft-anti-affinity-weight", "10")
    hosts = []
    for i in range(4):
        cluster.create_instance(f"s{i}", serverGroupRef={"name": "g"})
        hosts.append(host_of(cluster.wait_scheduled(f"s{i}")))
    assert sorted(hosts) == sorted([a, a, b, b])
    # Without the group, packing puts the next one on a fuller host: both
    # hosts are equal now, so take whichever and check the next follows it.
    cluster.create_instance("p0")
    first = host_of(cluster.wait_scheduled("p0"))
    cluster.create_instance("p1")
    assert host_of(cluster.wait_scheduled("p1")) == first


def test_soft_affinity_packs_even_when_spreading(cluster):
    cluster.add_host("a")
    cluster.add_host("b")
    cluster.create_server_group("g", "soft-affinity")
    cluster.start_operator("--weigh", "spread", "--soft-affinity-weight", "10")
    hosts = set()
    for i in range(3):
        cluster.create_instance(f"s{i}", serverGroupRef={"name": "g"})
        hosts.add(host_of(cluster.wait_scheduled(f"s{i}")))
    assert len(hosts) == 1
    # Plain RAM spreading goes to the emptier host.
    cluster.create_instance("free")
    assert host_of(cluster.wait_scheduled("free")) not in hosts


def test_traits_required_and_forbidden(cluster):
    ssd = cluster.add_host("ssd", traits=["CUSTOM_SSD"])
    gpu = cluster.add_host("gpu", traits=["CUSTOM_GPU", "CUSTOM_SSD"])
    plain = cluster.add_host("plain")
    cluster.create_flavor(cluster.name("ssd"), vcpus=1, memoryMiB=128, diskGiB=1,
                          extraSpecs={"traits": {"required": ["CUSTOM_SSD"]}})
    cluster.start_operator()
    cluster.create_instance("fast", flavorRef={"name": cluster.name("ssd")},
                            traits={"forbidden": ["CUSTOM_GPU"]})
    assert host_of(cluster.wait_scheduled("fast")) == ssd
    cluster.create_instance("needs-gpu", traits={"required": ["CUSTOM_GPU"]})
    assert host_of(cluster.wait_scheduled("needs-gpu")) == gpu
    cluster.create_instance("no-gpu-no-ssd", traits={"forbidden": ["CUSTOM_GPU", "CUSTOM_SSD"]})
    assert host_of(cluster.wait_scheduled("no-gpu-no-ssd")) == plain
    cluster.create_instance("unknown", traits={"required": ["CUSTOM_NOWHERE"]})
    inst = cluster.wait_reason("unknown", contract.REASON_NO_VALID_HOST)
    assert "CUSTOM_NOWHERE" in condition(inst, contract.COND_SCHEDULED)["message"]


def test_availability_zones(cluster):
    a = cluster.add_host("a", zone="az1")
    b = cluster.add_host("b", zone="az2")
    cluster.start_operator()
    agg2 = contract.az_aggregate_uuid("az2")
    agg1 = contract.az_aggregate_uuid("az1")
    wait_for(lambda: agg2 in cluster.placement.aggregates(cluster.hosts[b])
             and agg1 in cluster.placement.aggregates(cluster.hosts[a]), 15,
             what="zone aggregates on the providers")
    for i in range(3):
        cluster.create_instance(f"z{i}", availabilityZone="az2")
    assert {host_of(cluster.wait_scheduled(f"z{i}")) for i in range(3)} == {b}
    cluster.create_instance("nowhere", availabilityZone="az3")
    inst = cluster.wait_reason("nowhere", contract.REASON_NO_VALID_HOST)
    assert "az3" in condition(inst, contract.COND_SCHEDULED)["message"]
    # Moving a host to az3 moves its aggregate, and the waiting Instance lands.
    cluster.patch_host(a, {"availabilityZone": "az3"})
    assert host_of(cluster.wait_scheduled("nowhere", timeout=20)) == a
    assert contract.az_aggregate_uuid("az1") not in cluster.placement.aggregates(cluster.hosts[a])


def test_disabled_and_maintenance_hosts_get_nothing(cluster):
    off = cluster.add_host("off", enabled=False)
    maint = cluster.add_host("maint")
    cluster.patch_host(maint, {"maintenance": {"enabled": True, "reason": "firmware"}})
    cluster.start_operator()
    wait_for(lambda: contract.TRAIT_DISABLED in cluster.placement.traits(cluster.hosts[off])
             and contract.TRAIT_DISABLED in cluster.placement.traits(cluster.hosts[maint]), 15,
             what="COMPUTE_STATUS_DISABLED on both providers")
    cluster.create_instance("vm1")
    cluster.wait_reason("vm1", contract.REASON_NO_VALID_HOST)
    cluster.patch_host(off, {"enabled": True})
    assert host_of(cluster.wait_scheduled("vm1", timeout=20)) == off
    assert contract.TRAIT_DISABLED not in cluster.placement.traits(cluster.hosts[off])


def test_a_start_syncs_every_provider_from_one_read_and_later_changes_too(cluster):
    """At a start the providers' disabled trait is checked against a read of
    all providers at once: a provider left disabled while its Host is
    enabled loses the trait, a disabled Host's provider gets it, the others
    keep theirs; changes after the start are still written."""
    stale = cluster.add_host("stale", traits=(contract.TRAIT_DISABLED, "CUSTOM_KEEP"))
    off = cluster.add_host("off", enabled=False)
    plain = cluster.add_host("plain", traits=("CUSTOM_KEEP",))
    cluster.start_operator()
    traits = cluster.placement.traits
    wait_for(lambda: contract.TRAIT_DISABLED not in traits(cluster.hosts[stale])
             and contract.TRAIT_DISABLED in traits(cluster.hosts[off]), 15,
             what="the stale trait removed and the disabled host's added")
    assert "CUSTOM_KEEP" in traits(cluster.hosts[stale])
    assert traits(cluster.hosts[plain]) == {"HW_ARCH_X86_64", "CUSTOM_KEEP"}
    cluster.patch_host(plain, {"enabled": False})
    cluster.patch_host(off, {"enabled": True})
    wait_for(lambda: contract.TRAIT_DISABLED in traits(cluster.hosts[plain])
             and contract.TRAIT_DISABLED not in traits(cluster.hosts[off]), 15,
             what="the changes after the start written")
    cluster.create_instance("vm1")
    assert host_of(cluster.wait_scheduled("vm1", timeout=20)) in {stale, off}


def test_enabled_and_maintenance_filters_without_the_trait(cluster):
    """Even if the provider's trait lags behind, the filters keep them out."""
    off = cluster.add_host("off", enabled=False)
    ok = cluster.add_host("ok")
    cluster.start_operator("--filters", "KnownHost,Enabled,Maintenance,Heartbeat")
    # Remove the trait behind the operator's back right before scheduling.
    rp = cluster.hosts[off]
    wait_for(lambda: contract.TRAIT_DISABLED in cluster.placement.traits(rp), 15)
    cur = cluster.placement.http.get(f"/resource_providers/{rp}/traits").json()
    cluster.placement.http.put(f"/resource_providers/{rp}/traits", json={
        "traits": [t for t in cur["traits"] if t != contract.TRAIT_DISABLED],
        "resource_provider_generation": cur["resource_provider_generation"]})
    for i in range(3):
        cluster.create_instance(f"vm{i}")
    assert {host_of(cluster.wait_scheduled(f"vm{i}")) for i in range(3)} == {ok}


def test_heartbeat_down_and_back(cluster):
    h = cluster.add_host("h", alive=False)
    cluster.heartbeat(h, duration=5, age=60)  # expired
    cluster.start_operator()
    wait_for(lambda: (cluster.get_host(h).get("status") or {}).get("state") == "Down", 15,
             what="host Down")
    ready = [c for c in cluster.get_host(h)["status"]["conditions"] if c["type"] == "Ready"][0]
    assert ready["status"] == "False" and ready["reason"] == "Down"
    cluster.create_instance("vm1")
    inst = cluster.wait_reason("vm1", contract.REASON_NO_VALID_HOST)
    assert "heartbeat" in condition(inst, contract.COND_SCHEDULED)["message"]
    cluster.heartbeat(h, duration=3600)
    wait_for(lambda: cluster.get_host(h)["status"]["state"] == "Up", 15, what="host Up")
    assert host_of(cluster.wait_scheduled("vm1", timeout=20)) == h


def test_pack_and_spread_ram_weigher(cluster):
    big = cluster.add_host("big", memory_mib=16384)
    small = cluster.add_host("small", memory_mib=4096)
    op = cluster.start_operator("--weigh", "spread")
    cluster.create_instance("s1")
    assert host_of(cluster.wait_scheduled("s1")) == big
    cluster.stop_operator(op)
    cluster.start_operator("--weigh", "pack")
    cluster.create_instance("p1")
    assert host_of(cluster.wait_scheduled("p1")) == small


def test_requested_host_and_different_host_hints(cluster):
    a, b = cluster.add_host("a"), cluster.add_host("b", memory_mib=4096)
    cluster.start_operator()
    cluster.create_instance("pinned", schedulingHints={"requestedHost": b})
    assert host_of(cluster.wait_scheduled("pinned")) == b
    cluster.create_instance("apart", schedulingHints={"differentHost": ["pinned"]})
    assert host_of(cluster.wait_scheduled("apart")) == a
    cluster.create_instance("together", schedulingHints={"sameHost": ["pinned"]})
    assert host_of(cluster.wait_scheduled("together")) == b


def test_unservable_requests_wait_with_a_condition_naming_the_field(cluster):
    """What no host can serve -- a custom resource nobody offers, dedicated
    CPUs where no host has PCPU, a UEFI Image where no host boots UEFI --
    waits in Pending with a NoValidHost condition that names the resource or
    trait and the field that asked for it, on the first attempt."""
    cluster.add_host("h1")
    cluster.start_operator()
    gpu, pinned = cluster.name("gpu"), cluster.name("pinned")
    cluster.create_flavor(gpu, vcpus=1, memoryMiB=256, diskGiB=1,
                          extraSpecs={"resources": {"CUSTOM_GPU": 1}})
    cluster.create_flavor(pinned, vcpus=1, memoryMiB=256, diskGiB=1,
                          extraSpecs={"cpuPolicy": "dedicated"})
    uefi = cluster.name("uefi")
    cluster.create_image(uefi, properties={"architecture": "x86_64", "firmware": "uefi"})
    cluster.create_instance("gpu", flavorRef={"name": gpu})
    cluster.create_instance("pinned", flavorRef={"name": pinned})
    cluster.create_instance("uefi", imageRef={"name": uefi})
    expected = {
        "gpu": f"no host offers resource class CUSTOM_GPU (from Flavor {gpu} "
               "extraSpecs.resources.CUSTOM_GPU)",
        "pinned": f"no host has 1 PCPU free (from Flavor {pinned} vcpus with "
                  "extraSpecs.cpuPolicy: dedicated)",
        "uefi": f"no host has trait COMPUTE_FIRMWARE_UEFI (from Image {uefi} "
                "properties.firmware: uefi)",
    }
    for name, text in expected.items():
        inst = cluster.wait_reason(name, contract.REASON_NO_VALID_HOST, timeout=15)
        assert inst["status"]["phase"] == "Pending"
        msg = condition(inst, contract.COND_SCHEDULED)["message"]
        assert text in msg, msg
