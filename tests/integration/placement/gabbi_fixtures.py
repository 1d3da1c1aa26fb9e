"""The fixtures named in OpenStack Placement's gabbi files, built through
Kova Placement's REST API (the upstream ones write database rows directly).

Each fixture empties the database (``Harness.reset``), writes the policy
file the server re-reads (empty, or OpenStack's "open policy" overrides),
sets the environment variables the YAML refers to (``$ENVIRON['RP_UUID']``
...) and creates its providers one request at a time, the way a client
would: create, aggregates (at microversion 1.1, which does not change the
generation, as the upstream fixtures do not), one ``POST .../inventories``
per class (``max_unit`` defaults to the total, custom classes created
first), traits (custom ones created first), allocations with
``PUT /allocations``.  The trees are described as data below.
"""

from __future__ import annotations

import os
import uuid

import httpx
from gabbi import fixture

#: Set by the test before it runs a file: the server, the database reset
#: and the policy file of the server that runs the file.
HARNESS = None

ADMIN = {"x-auth-token": "admin", "openstack-api-version": "placement latest",
         "accept": "application/json"}
POLICY_RULES = [
    "service_api", "admin_or_service_api", "project_reader_api",
    "admin_or_project_reader_or_service_api"]


def _new() -> str:
    return str(uuid.uuid4())


class Api:
    """Admin requests to the server under test; every answer must succeed."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, headers=ADMIN, timeout=30)
        self.classes: set[str] = set()
        self.known_traits: set[str] = set()

    def _ok(self, resp: httpx.Response) -> httpx.Response:
        if resp.status_code >= 300:
            raise AssertionError(f"{resp.request.method} {resp.request.url}: "
                                 f"{resp.status_code} {resp.text}")
        return resp

    def provider(self, name: str, *aggs: str, parent: str | None = None,
                 uuid_: str | None = None) -> str:
        body = {"name": name, "uuid": uuid_ or _new()}
        if parent:
            body["parent_provider_uuid"] = parent
        rp = self._ok(self.http.post("/resource_providers", json=body)).json()["uuid"]
        if aggs:
            self.aggregates(rp, *aggs)
        return rp

    def aggregates(self, rp: str, *aggs: str) -> None:
        self._ok(self.http.put(f"/resource_providers/{rp}/aggregates", json=list(aggs),
                               headers={"openstack-api-version": "placement 1.1"}))

    def inventory(self, rp: str, rc: str, total: int, **fields) -> None:
        if rc.startswith("CUSTOM_") and rc not in self.classes:
            self._ok(self.http.put(f"/resource_classes/{rc}"))
            self.classes.add(rc)
        gen = self._ok(self.http.get(f"/resource_providers/{rp}")).json()["generation"]
        body = {"resource_class": rc, "total": total, "resource_provider_generation": gen,
                "max_unit": total, **fields}
        self._ok(self.http.post(f"/resource_providers/{rp}/inventories", json=body))

    def traits(self, rp: str, *names: str) -> None:
        for name in names:
            if name.startswith("CUSTOM_") and name not in self.known_traits:
                self._ok(self.http.put(f"/traits/{name}"))
                self.known_traits.add(name)
        gen = self._ok(self.http.get(f"/resource_providers/{rp}")).json()["generation"]
        self._ok(self.http.put(f"/resource_providers/{rp}/traits",
                               json={"traits": list(names),
                                     "resource_provider_generation": gen}))

    def allocate(self, rp: str, resources: dict, project: str, user: str,
                 consumer: str | None = None) -> str:
        consumer = consumer or _new()
        # at 1.28: the consumer has no type ("unknown"), as upstream's fixtures
        self._ok(self.http.put(f"/allocations/{consumer}", json={
            "allocations": {rp: {"resources": resources}}, "project_id": project,
            "user_id": user, "consumer_generation": None},
            headers={"openstack-api-version": "placement 1.28"}))
        return consumer

    def close(self) -> None:
        self.http.close()


_ENV_UUIDS = ["RP_UUID", "RP_NAME", "RP_UUID1", "RP_NAME1", "RP_UUID2", "RP_NAME2",
              "PROJECT_ID", "ADMIN_PROJECT_ID", "SERVICE_PROJECT_ID", "USER_ID",
              "PROJECT_ID_ALT", "USER_ID_ALT", "INSTANCE_UUID", "MIGRATION_UUID",
              "CONSUMER_UUID", "PARENT_PROVIDER_UUID", "ALT_PARENT_PROVIDER_UUID"]


class APIFixture(fixture.GabbiFixture):
    """An empty Placement with the legacy (deprecated) default rules."""

    secure_rbac = False
    policy: dict[str, str] = {}

    def start_fixture(self):
        HARNESS.reset(secure_rbac=self.secure_rbac, policy=self.policy)
        for name in _ENV_UUIDS:
            os.environ[name] = _new()
        os.environ["CUSTOM_RES_CLASS"] = "CUSTOM_IRON_NFV"
        os.environ["CUSTOM_RES_CLASS1"] = "CUSTOM_IRON_NFV1"
        os.environ["CUSTOM_RES_CLASS2"] = "CUSTOM_IRON_NFV2"
        self.api = Api(HARNESS.url(self.secure_rbac))
        try:
            self.build(self.api)
        finally:
            self.api.close()

    def build(self, api: Api) -> None:
        """Create the fixture's data (nothing for the plain fixture)."""

    def stop_fixture(self):
        pass


class LegacyRBACPolicyFixture(APIFixture):
    pass


class SecureRBACPolicyFixture(APIFixture):
    secure_rbac = True


class OpenPolicyFixture(APIFixture):
    """Every rule but ``admin_api`` is ``@`` (anyone), as a policy file."""

    @property
    def policy(self):
        from kova.placement.policy import DEFAULT_RULES

        return {r.name: "@" for r in DEFAULT_RULES if r.name != "admin_api"}


class CORSFixture(APIFixture):
    """CORS for http://valid.example.com (the server runs with it)."""


class AllocationFixture(APIFixture):
    """One provider (VCPU 10, DISK_GB 2048) and three consumers of two users."""

    def build(self, api):
        os.environ["ALT_USER_ID"] = _new()
        project, user, alt_user = (os.environ["PROJECT_ID"], os.environ["USER_ID"],
                                   os.environ["ALT_USER_ID"])
        rp = api.provider(os.environ["RP_NAME"], uuid_=os.environ["RP_UUID"])
        api.inventory(rp, "DISK_GB", 2048, step_size=10, min_unit=10, max_unit=1000)
        api.inventory(rp, "VCPU", 10, max_unit=10)
        os.environ["CONSUMER_0"] = api.allocate(rp, {"DISK_GB": 1000}, project, user)
        os.environ["CONSUMER_ID"] = api.allocate(rp, {"VCPU": 6}, project, user)
        os.environ["ALT_CONSUMER_ID"] = api.allocate(rp, {"DISK_GB": 20, "VCPU": 1},
                                                     project, alt_user)
        os.environ["ALT_RP_UUID"] = _new()
        os.environ["ALT_RP_NAME"] = _new()


def _set(**values: str) -> None:
    os.environ.update(values)


class SharedStorageFixture(APIFixture):
    """cn1, cn2 (with NUMA children and PF grandchildren) and two sharing
    storage providers in one aggregate."""

    def build(self, api):
        agg = _new()
        p = {name: api.provider(name, agg) for name in ("cn1", "cn2", "ss", "ss2")}
        for cn in ("1", "2"):
            for numa in ("1", "2"):
                numa_uuid = api.provider(f"numa{cn}_{numa}", parent=p[f"cn{cn}"])
                p[f"numa{cn}_{numa}"] = numa_uuid
                p[f"pf{cn}_{numa}"] = api.provider(f"pf{cn}_{numa}", parent=numa_uuid)
        _set(AGG_UUID=agg, **{f"{k.upper()}_UUID": v for k, v in p.items()})
        for cn in ("cn1", "cn2"):
            api.inventory(p[cn], "VCPU", 24, allocation_ratio=16.0)
            api.inventory(p[cn], "MEMORY_MB", 128 * 1024, allocation_ratio=1.5)
        api.traits(p["cn1"], "HW_CPU_X86_SSE", "HW_CPU_X86_SSE2")
        api.inventory(p["cn2"], "DISK_GB", 2000, reserved=100, allocation_ratio=1.0)
        for ss in ("ss", "ss2"):
            api.inventory(p[ss], "DISK_GB", 2000, reserved=100, allocation_ratio=1.0)
            api.traits(p[ss], "MISC_SHARES_VIA_AGGREGATE")
        for pf in ("pf1_1", "pf1_2", "pf2_1", "pf2_2"):
            api.inventory(p[pf], "SRIOV_NET_VF", 8, allocation_ratio=1.0)


class NUMAAggregateFixture(APIFixture):
    """Two resourceless compute nodes whose NUMA children have VCPU, storage
    shared through aggregates (one NUMA node in its own aggregate)."""

    def build(self, api):
        agg_a, agg_b, agg_c = _new(), _new(), _new()
        p = {"cn1": api.provider("cn1", agg_a), "cn2": api.provider("cn2", agg_a, agg_b),
             "ss1": api.provider("ss1", agg_a), "ss2": api.provider("ss2", agg_c)}
        p["numa1_1"] = api.provider("numa1_1", agg_c, parent=p["cn1"])
        p["numa1_2"] = api.provider("numa1_2", parent=p["cn1"])
        p["numa2_1"] = api.provider("numa2_1", parent=p["cn2"])
        p["numa2_2"] = api.provider("numa2_2", parent=p["cn2"])
        _set(AGGA_UUID=agg_a, AGGB_UUID=agg_b, AGGC_UUID=agg_c,
             **{f"{k.upper()}_UUID": v for k, v in p.items()})
        for numa in ("numa1_1", "numa1_2", "numa2_1", "numa2_2"):
            api.inventory(p[numa], "VCPU", 24, allocation_ratio=16.0)
        for ss in ("ss1", "ss2"):
            api.inventory(p[ss], "DISK_GB", 2000, reserved=100, allocation_ratio=1.0)
            api.traits(p[ss], "MISC_SHARES_VIA_AGGREGATE")


class NUMANetworkFixture(APIFixture):
    """cn1 (no inventory; NUMA nodes with devices; SR-IOV and OVS agents),
    cn2 (VCPU, MEMORY_MB, DISK_GB; three NICs with PFs), sharing storage."""

    def precreate(self, api) -> tuple[str | None, str | None]:
        """cn1 and cn2 made before anything else (None: made in order)."""
        return None, None

    def build(self, api):
        cn1, cn2 = self.precreate(api)
        agg_a = _new()
        _set(AGGA_UUID=agg_a)
        ss1 = api.provider("ss1", agg_a)
        api.traits(ss1, "MISC_SHARES_VIA_AGGREGATE")
        api.inventory(ss1, "DISK_GB", 2000)
        _set(SS1_UUID=ss1)
        cn1 = cn1 or api.provider("cn1", agg_a)
        api.aggregates(cn1, agg_a)
        api.traits(cn1, "COMPUTE_VOLUME_MULTI_ATTACH")
        _set(CN1_UUID=cn1)
        self.build_cn1(api, cn1, cn2, agg_a)

    def build_cn1(self, api, cn1, cn2, agg_a):
        numas = []
        for i in (0, 1):
            numa = api.provider(f"numa{i}", parent=cn1)
            api.traits(numa, "HW_NUMA_ROOT", *(["CUSTOM_FOO"] if i == 1 else []))
            api.inventory(numa, "VCPU", 4)
            numas.append(numa)
            os.environ[f"NUMA{i}_UUID"] = numa
        api.inventory(numas[0], "MEMORY_MB", 2048, min_unit=512, step_size=256)
        api.inventory(numas[1], "MEMORY_MB", 2048, min_unit=256, max_unit=1024)
        project, user = "numafx-project", "numafx-user"
        api.allocate(numas[0], {"VCPU": 2}, project, user)
        fpga = api.provider("fpga0", parent=numas[0])
        api.inventory(fpga, "FPGA", 1)
        pgpu = api.provider("pgpu0", parent=numas[0])
        api.inventory(pgpu, "VGPU", 8)
        _set(FPGA0_UUID=fpga, PGPU0_UUID=pgpu)
        for i in (0, 1):
            fpga = api.provider(f"fpga1_{i}", parent=numas[1])
            api.inventory(fpga, "FPGA", 1)
            os.environ[f"FPGA1_{i}_UUID"] = fpga
        agent = api.provider("sriov_agent", parent=cn1)
        api.traits(agent, "CUSTOM_VNIC_TYPE_DIRECT")
        _set(SRIOV_AGENT_UUID=agent)
        for i in (1, 2):
            dev = api.provider(f"esn{i}", parent=agent)
            api.traits(dev, f"CUSTOM_PHYSNET{i}")
            api.inventory(dev, "NET_BW_EGR_KILOBIT_PER_SEC", 10000 * i)
            os.environ[f"ESN{i}_UUID"] = dev
        agent = api.provider("ovs_agent", parent=cn1)
        api.traits(agent, "CUSTOM_VNIC_TYPE_NORMAL")
        _set(OVS_AGENT_UUID=agent)
        dev = api.provider("br_int", parent=agent)
        api.traits(dev, "CUSTOM_PHYSNET0")
        api.inventory(dev, "NET_BW_EGR_KILOBIT_PER_SEC", 1000)
        _set(BR_INT_UUID=dev)
        self.build_cn2(api, cn2, agg_a, project, user)

    def build_cn2(self, api, cn2, agg_a, project, user):
        cn2 = cn2 or api.provider("cn2")
        api.aggregates(cn2, agg_a)
        api.inventory(cn2, "VCPU", 8)
        api.allocate(cn2, {"VCPU": 3}, project, user)
        api.inventory(cn2, "MEMORY_MB", 2048, min_unit=1024, step_size=128)
        api.inventory(cn2, "DISK_GB", 1000)
        api.traits(cn2, "CUSTOM_FOO")
        _set(CN2_UUID=cn2)
        nics = []
        for i in (1, 2, 3):
            nic = api.provider(f"nic{i}", parent=cn2)
            api.traits(nic, "CUSTOM_HW_NIC_ROOT")
            nics.append(nic)
            os.environ[f"NIC{i}_UUID"] = nic
        pfs = [(0, "1_1", 1, 4), (0, "1_2", 2, 4)]
        pfs += [(1, f"2_{i + 1}", (i % 2) + 1, 2) for i in range(4)]
        pfs += [(2, "3_1", 1, 8)]
        for nic, suffix, physnet, vfs in pfs:
            pf = api.provider(f"pf{suffix}", parent=nics[nic])
            api.traits(pf, f"CUSTOM_PHYSNET{physnet}")
            api.inventory(pf, "CUSTOM_VF", vfs)
            os.environ[f"PF{suffix}_UUID"] = pf


class DeepNUMANetworkFixture(NUMANetworkFixture):
    """NUMANetworkFixture under a grandparent gp1 with parents p1 and p2."""

    def precreate(self, api):
        gp1 = api.provider("gp1")
        p1, p2 = api.provider("p1", parent=gp1), api.provider("p2", parent=gp1)
        return api.provider("cn1", parent=p1), api.provider("cn2", parent=p2)


class NonSharedStorageFixture(APIFixture):
    """Three compute nodes with local storage, no sharing providers."""

    def build(self, api):
        _set(AGGA_UUID=_new(), AGGB_UUID=_new(), AGGC_UUID=_new())
        for i in (1, 2, 3):
            cn = api.provider(f"cn{i}")
            os.environ[f"CN{i}_UUID"] = cn
        for i in (1, 2, 3):
            cn = os.environ[f"CN{i}_UUID"]
            api.inventory(cn, "VCPU", 24)
            api.inventory(cn, "MEMORY_MB", 128 * 1024)
            api.inventory(cn, "DISK_GB", 2000)


class GranularFixture(APIFixture):
    """cn_left, cn_middle, cn_right and sharing disk/network providers in
    aggregates A, B and C."""

    def build(self, api):
        api._ok(api.http.put("/resource_classes/CUSTOM_NET_MBPS"))
        api.classes.add("CUSTOM_NET_MBPS")
        agg = {k: _new() for k in "ABC"}
        _set(AGGA=agg["A"], AGGB=agg["B"], AGGC=agg["C"])
        left = api.provider("cn_left", agg["A"])
        for rc, total in (("VCPU", 8), ("MEMORY_MB", 4096), ("DISK_GB", 500), ("VGPU", 8),
                          ("SRIOV_NET_VF", 8), ("CUSTOM_NET_MBPS", 4000)):
            api.inventory(left, rc, total)
        api.traits(left, "HW_CPU_X86_AVX", "HW_CPU_X86_AVX2", "HW_GPU_API_DXVA",
                   "HW_NIC_DCB_PFC", "CUSTOM_FOO")
        middle = api.provider("cn_middle", agg["A"], agg["B"])
        for rc, total in (("VCPU", 8), ("MEMORY_MB", 4096), ("SRIOV_NET_VF", 8),
                          ("CUSTOM_NET_MBPS", 4000)):
            api.inventory(middle, rc, total)
        api.traits(middle, "HW_CPU_X86_AVX", "HW_CPU_X86_AVX2", "HW_CPU_X86_SSE",
                   "HW_NIC_ACCEL_TLS")
        right = api.provider("cn_right", agg["B"], agg["C"])
        for rc, total in (("VCPU", 8), ("MEMORY_MB", 4096), ("DISK_GB", 500)):
            api.inventory(right, rc, total)
        api.inventory(right, "VGPU", 8, max_unit=2)
        api.traits(right, "HW_CPU_X86_MMX", "HW_GPU_API_DXVA", "CUSTOM_DISK_SSD")
        _set(CN_LEFT=left, CN_MIDDLE=middle, CN_RIGHT=right)
        self.build_shared(api, agg)

    def build_shared(self, api, agg):
        disk1 = api.provider("shr_disk_1", agg["A"])
        api.inventory(disk1, "DISK_GB", 1000)
        api.traits(disk1, "MISC_SHARES_VIA_AGGREGATE", "CUSTOM_DISK_SSD")
        disk2 = api.provider("shr_disk_2", agg["A"], agg["B"])
        api.inventory(disk2, "DISK_GB", 1000)
        api.traits(disk2, "MISC_SHARES_VIA_AGGREGATE")
        net = api.provider("shr_net", agg["C"])
        api.inventory(net, "SRIOV_NET_VF", 16)
        api.inventory(net, "CUSTOM_NET_MBPS", 40000)
        api.traits(net, "MISC_SHARES_VIA_AGGREGATE")
        _set(SHR_DISK_1=disk1, SHR_DISK_2=disk2, SHR_NET=net)


_VNICS = ("CUSTOM_VNIC_TYPE_DIRECT", "CUSTOM_VNIC_TYPE_DIRECT_PHYSICAL",
          "CUSTOM_VNIC_TYPE_MACVTAP")


class NeutronQoSMultiSegmentFixture(APIFixture):
    """Four compute trees as Neutron builds them for QoS minimum bandwidth
    and packet rate on a multi-segment network (compute3 reaches both
    segments, with little bandwidth)."""

    # (compute, bridges [(name, kbps, physnet)], pfs [(name, kbps, physnet)])
    TREES = [
        ("compute0", [("br-ex", 5000, "OTHER")], [("enp129s0f0", 10000, "OTHER")]),
        ("compute1", [("br-ex", 5000, "MSN_S1")], [("enp129s0f0", 10000, "MSN_S1")]),
        ("compute2", [("br-ex", 5000, "MSN_S2")], [("enp129s0f0", 10000, "MSN_S2")]),
        ("compute3", [("br-ex", 1000, "MSN_S1"), ("br-ex2", 1000, "MSN_S2")],
         [("enp129s0f0", 1000, "MSN_S1"), ("enp129s0f1", 1000, "MSN_S2")]),
    ]

    def build(self, api):
        for name, bridges, pfs in self.TREES:
            cn = api.provider(name)
            os.environ[name] = cn
            for rc, total in (("VCPU", 8), ("MEMORY_MB", 4096), ("DISK_GB", 500)):
                api.inventory(cn, rc, total)
            ovs = api.provider(f"{name}:Open vSwitch agent", parent=cn)
            os.environ[f"{name}:ovs_agent"] = ovs
            api.inventory(ovs, "NET_PACKET_RATE_KILOPACKET_PER_SEC", 1000)
            api.traits(ovs, "CUSTOM_VNIC_TYPE_NORMAL")
            for br, kbps, physnet in bridges:
                dev = api.provider(f"{name}:Open vSwitch agent:{br}", parent=ovs)
                os.environ[f"{name}:{br.replace('-', '_')}"] = dev
                api.inventory(dev, "NET_BW_EGR_KILOBIT_PER_SEC", kbps)
                api.inventory(dev, "NET_BW_IGR_KILOBIT_PER_SEC", kbps)
                api.traits(dev, "CUSTOM_VNIC_TYPE_NORMAL", f"CUSTOM_PHYSNET_{physnet}")
            sriov = api.provider(f"{name}:NIC Switch agent", parent=cn)
            os.environ[f"{name}:sriov_agent"] = sriov
            api.traits(sriov, *_VNICS)
            for i, (pf, kbps, physnet) in enumerate(pfs):
                dev = api.provider(f"{name}:NIC Switch agent:{pf}", parent=sriov)
                os.environ[f"{name}:pf{i}"] = dev
                api.inventory(dev, "NET_BW_EGR_KILOBIT_PER_SEC", kbps)
                api.inventory(dev, "NET_BW_IGR_KILOBIT_PER_SEC", kbps)
                api.traits(dev, *_VNICS, f"CUSTOM_PHYSNET_{physnet}")
