#!/usr/bin/env python3
"""Error parity: Kova Placement vs OpenStack Placement 16.0.0, side by side.

Starts Kova Placement (SQLite, ``--auth-strategy noauth2``) and OpenStack Placement 16.0.0
(its cached virtualenv, gunicorn, its own Postgres database, ``noauth2`` with
the ``admin`` token -- the same code path as ``bench/placement_perfload.py``),
creates the same fixtures on both (fixed UUIDs), sends the same list of bad
or edge requests to both and prints a Markdown table: request, OpenStack
status/code, Kova status/code, whether they match, and a note where the
``detail`` texts differ.  Exit code 1 if any status or ``code`` differs,
except the few differences Kova keeps on purpose (each ``Case`` with a
``kept`` reason, also in docs/placement.md); ``--strict`` fails on those too.

Usage::

    .venv/bin/python bench/placement_parity.py [--logdir /tmp/placement-parity]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import placement_perfload as perf  # noqa: E402  (shared start-up code)


def U(n: int) -> str:
    return str(uuid.UUID(int=n))


RP1, RP2, RP3, RP4 = U(0x101), U(0x102), U(0x103), U(0x104)
AGG = U(0xA)
C1, C2 = U(0xC1), U(0xC2)
C_LEFT = U(0xC0FF)  # the consumer of the "failed create leaves it behind" pair
_NEW = iter(range(0xC100, 0xC1FF))


def new_consumer() -> str:
    """A consumer UUID of its own for each case (fixed: the n-th call)."""
    return U(next(_NEW))

PROJECT, USER = U(0xE1), U(0xE2)
MISSING = U(0xDEAD)


class Client:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)

    def call(self, method: str, path: str, version: str | None = "latest", body=None,
             headers: dict | None = None, raw: bytes | None = None) -> httpx.Response:
        # noauth2: the token "admin" is the user; X-Roles adds the "service"
        # role that OpenStack's policy wants for POST /reshaper (Kova's
        # Kova's noauth2 reads them the same way).
        hdrs = {"x-auth-token": "admin", "x-roles": "admin,service",
                "accept": "application/json"}
        if version is not None:
            hdrs["openstack-api-version"] = f"placement {version}"
        content = raw
        if body is not None:
            content = json.dumps(body).encode()
            hdrs["content-type"] = "application/json"
        elif raw is not None:
            hdrs["content-type"] = "application/json"
        hdrs.update(headers or {})
        hdrs = {k: v for k, v in hdrs.items() if v is not None}
        return self.http.request(method, path, content=content, headers=hdrs)

    def ok(self, method, path, body=None, version="latest") -> dict:
        r = self.call(method, path, version, body)
        if r.status_code >= 300:
            raise RuntimeError(f"fixture {method} {path} -> {r.status_code}: {r.text[:400]}")
        return r.json() if r.content else {}

    def gen(self, rp: str) -> int:
        return self.ok("GET", f"/resource_providers/{rp}")["generation"]

    def cgen(self, consumer: str) -> int | None:
        return self.ok("GET", f"/allocations/{consumer}")["consumer_generation"]


def fixtures(c: Client) -> None:
    """The same state on both services, built the same way."""
    c.ok("POST", "/resource_classes", {"name": "CUSTOM_BAR"})
    c.ok("PUT", "/traits/CUSTOM_FOO")
    c.ok("POST", "/resource_providers", {"name": "rp1", "uuid": RP1})
    c.ok("POST", "/resource_providers", {"name": "rp2", "uuid": RP2, "parent_provider_uuid": RP1})
    c.ok("POST", "/resource_providers", {"name": "rp3", "uuid": RP3})
    c.ok("POST", "/resource_providers", {"name": "rp4", "uuid": RP4})
    c.ok("PUT", f"/resource_providers/{RP1}/inventories", {
        "resource_provider_generation": c.gen(RP1),
        "inventories": {"VCPU": {"total": 8, "max_unit": 4},
                        "MEMORY_MB": {"total": 4096, "min_unit": 128, "step_size": 128},
                        "DISK_GB": {"total": 100},
                        "CUSTOM_BAR": {"total": 2}}})
    c.ok("PUT", f"/resource_providers/{RP2}/inventories", {
        "resource_provider_generation": c.gen(RP2), "inventories": {"VCPU": {"total": 4}}})
    c.ok("PUT", f"/resource_providers/{RP4}/inventories", {
        "resource_provider_generation": c.gen(RP4), "inventories": {"VCPU": {"total": 4}}})
    c.ok("PUT", f"/resource_providers/{RP1}/traits", {
        "resource_provider_generation": c.gen(RP1), "traits": ["HW_CPU_X86_AVX2", "CUSTOM_FOO"]})
    c.ok("PUT", f"/resource_providers/{RP1}/aggregates", {
        "resource_provider_generation": c.gen(RP1), "aggregates": [AGG]})
    c.ok("PUT", f"/allocations/{C1}", {
        "allocations": {RP1: {"resources": {"VCPU": 2, "MEMORY_MB": 512}}},
        "project_id": PROJECT, "user_id": USER, "consumer_generation": None}, version="1.28")
    c.ok("PUT", f"/allocations/{C2}", {
        "allocations": {RP4: {"resources": {"VCPU": 1}}},
        "project_id": PROJECT, "user_id": USER, "consumer_generation": None}, version="1.28")


Body = Callable[[Client], object]


@dataclass
class Case:
    label: str
    method: str
    path: str
    body: object = None           # a value, or a function of the client
    version: str | None = "latest"
    headers: dict | None = None
    raw: bytes | None = None
    #: why Kova keeps a different answer (also in docs/placement.md); such a
    #: difference is reported but fails the run only with --strict
    kept: str | None = None

    def send(self, c: Client) -> httpx.Response:
        body = self.body(c) if callable(self.body) else self.body
        return c.call(self.method, self.path, self.version, body, self.headers, self.raw)


def inv(total=8, **kw):
    return dict({"total": total}, **kw)


def alloc_body(rp: str, resources: dict, gen=None, **extra) -> dict:
    return dict({"allocations": {rp: {"resources": resources}}, "project_id": PROJECT,
                 "user_id": USER, "consumer_generation": gen, "consumer_type": "INSTANCE"},
                **extra)


AC = "/allocation_candidates?"
CASES: list[Case] = [
    # ---- microversions, routing, media types
    Case("version too high", "GET", "/resource_providers", version="1.99"),
    Case("major version 2", "GET", "/resource_providers", version="2.0"),
    Case("malformed version", "GET", "/resource_providers", version="one.two"),
    Case("route newer than version (candidates @1.9)", "GET",
         AC + "resources=VCPU:1", version="1.9"),
    Case("unknown route", "GET", "/nothing_here"),
    Case("wrong method", "PATCH", "/resource_providers"),
    Case("unacceptable Accept", "GET", "/resource_providers", headers={"accept": "text/plain"}),
    Case("HTML Accept, unknown route", "GET", "/nothing_here", headers={"accept": "text/html"}),
    Case("reader role writes", "POST", "/resource_providers", {"name": "x"},
         headers={"x-auth-token": "user:p1", "x-roles": "reader"}),
    Case("system-scoped admin", "GET", "/resource_providers",
         headers={"x-auth-token": "user", "x-roles": "admin", "openstack-system-scope": "all"}),
    Case("project reader reads own usages", "GET", "/usages?project_id=p1", version="1.37",
         headers={"x-auth-token": "user:p1", "x-roles": "reader"}),
    Case("project reader reads other usages", "GET", "/usages?project_id=p2", version="1.37",
         headers={"x-auth-token": "user:p1", "x-roles": "reader"}),
    Case("no token", "GET", "/resource_providers", headers={"x-auth-token": None}),
    Case("text/plain body", "POST", "/resource_providers", raw=b"name=x",
         headers={"content-type": "text/plain"}),
    Case("malformed JSON", "POST", "/resource_providers", raw=b"{not json"),
    # ---- resource providers
    Case("duplicate provider name", "POST", "/resource_providers", {"name": "rp1"}),
    Case("duplicate provider uuid", "POST", "/resource_providers", {"name": "x", "uuid": RP1}),
    Case("unknown field in provider", "POST", "/resource_providers", {"name": "x", "foo": 1}),
    Case("provider name wrong type", "POST", "/resource_providers", {"name": 5}),
    Case("provider bad uuid", "POST", "/resource_providers", {"name": "x", "uuid": "not-a-uuid"}),
    Case("provider unknown parent", "POST", "/resource_providers",
         {"name": "x", "parent_provider_uuid": MISSING}),
    Case("GET provider not a uuid", "GET", "/resource_providers/not-a-uuid"),
    Case("GET provider missing", "GET", f"/resource_providers/{MISSING}"),
    Case("list ?uuid=bad", "GET", "/resource_providers?uuid=bad"),
    Case("list ?resources=NOPE:1", "GET", "/resource_providers?resources=CUSTOM_NOPE:1"),
    Case("list ?resources=VCPU (no amount)", "GET", "/resource_providers?resources=VCPU"),
    Case("list ?required=UNKNOWN", "GET", "/resource_providers?required=CUSTOM_NOPE"),
    Case("list ?member_of=bad", "GET", "/resource_providers?member_of=bad"),
    Case("list ?in_tree=bad", "GET", "/resource_providers?in_tree=bad"),
    Case("list ?in_tree=missing", "GET", f"/resource_providers?in_tree={MISSING}"),
    Case("list unknown parameter", "GET", "/resource_providers?foo=bar"),
    Case("rename to existing name", "PUT", f"/resource_providers/{RP3}", {"name": "rp1"}),
    Case("re-parent onto own child (1.37)", "PUT", f"/resource_providers/{RP1}",
         {"name": "rp1", "parent_provider_uuid": RP2}),
    Case("un-parent (1.36)", "PUT", f"/resource_providers/{RP2}",
         {"name": "rp2", "parent_provider_uuid": None}, version="1.36"),
    Case("delete provider with children", "DELETE", f"/resource_providers/{RP1}"),
    Case("delete provider with allocations", "DELETE", f"/resource_providers/{RP4}"),
    Case("delete missing provider", "DELETE", f"/resource_providers/{MISSING}"),
    # ---- inventories
    Case("inventories stale generation", "PUT", f"/resource_providers/{RP1}/inventories",
         {"resource_provider_generation": 99, "inventories": {"VCPU": inv()}}),
    Case("inventories drop class in use", "PUT", f"/resource_providers/{RP1}/inventories",
         lambda c: {"resource_provider_generation": c.gen(RP1),
                    "inventories": {"DISK_GB": inv(100)}}),
    Case("delete inventory in use", "DELETE", f"/resource_providers/{RP1}/inventories/VCPU"),
    Case("delete all inventories in use", "DELETE", f"/resource_providers/{RP1}/inventories"),
    Case("inventory unknown class", "PUT", f"/resource_providers/{RP3}/inventories",
         lambda c: {"resource_provider_generation": c.gen(RP3),
                    "inventories": {"CUSTOM_NOPE": inv()}}),
    Case("inventory total 0", "PUT", f"/resource_providers/{RP3}/inventories",
         lambda c: {"resource_provider_generation": c.gen(RP3),
                    "inventories": {"VCPU": inv(0)}}),
    Case("inventory reserved > total", "PUT", f"/resource_providers/{RP3}/inventories",
         lambda c: {"resource_provider_generation": c.gen(RP3),
                    "inventories": {"VCPU": inv(8, reserved=9)}}),
    Case("inventory without generation", "PUT", f"/resource_providers/{RP1}/inventories/VCPU",
         {"total": 8}),
    Case("inventory of missing provider", "PUT", f"/resource_providers/{MISSING}/inventories",
         {"resource_provider_generation": 0, "inventories": {"VCPU": inv()}}),
    Case("POST inventory that exists", "POST", f"/resource_providers/{RP1}/inventories",
         lambda c: {"resource_provider_generation": c.gen(RP1), "resource_class": "VCPU",
                    "total": 8}),
    Case("GET inventory not present", "GET", f"/resource_providers/{RP3}/inventories/VCPU"),
    Case("delete inventory not present", "DELETE",
         f"/resource_providers/{RP3}/inventories/VCPU"),
    # ---- resource classes
    Case("duplicate custom class", "POST", "/resource_classes", {"name": "CUSTOM_BAR"}),
    Case("class without CUSTOM_", "POST", "/resource_classes", {"name": "BAR"}),
    Case("delete standard class", "DELETE", "/resource_classes/VCPU"),
    Case("delete class in use", "DELETE", "/resource_classes/CUSTOM_BAR"),
    Case("PUT standard class (1.7)", "PUT", "/resource_classes/VCPU", version="1.7"),
    Case("GET missing class", "GET", "/resource_classes/CUSTOM_NOPE"),
    # ---- traits
    Case("PUT trait without CUSTOM_", "PUT", "/traits/NOT_CUSTOM"),
    Case("delete standard trait", "DELETE", "/traits/HW_CPU_X86_AVX2"),
    Case("delete trait in use", "DELETE", "/traits/CUSTOM_FOO"),
    Case("provider traits unknown trait", "PUT", f"/resource_providers/{RP3}/traits",
         lambda c: {"resource_provider_generation": c.gen(RP3), "traits": ["CUSTOM_NOPE"]}),
    Case("provider traits stale generation", "PUT", f"/resource_providers/{RP1}/traits",
         {"resource_provider_generation": 99, "traits": []}),
    Case("traits ?name=bad", "GET", "/traits?name=bad"),
    # ---- aggregates
    Case("aggregates stale generation", "PUT", f"/resource_providers/{RP1}/aggregates",
         {"resource_provider_generation": 99, "aggregates": []}),
    Case("aggregates bad uuid", "PUT", f"/resource_providers/{RP1}/aggregates",
         lambda c: {"resource_provider_generation": c.gen(RP1), "aggregates": ["bad"]}),
    Case("aggregates old list format @1.19", "PUT", f"/resource_providers/{RP1}/aggregates",
         [AGG], version="1.19"),
    # ---- allocations
    Case("consumer generation conflict", "PUT", f"/allocations/{C1}",
         alloc_body(RP1, {"VCPU": 1}, gen=99)),
    Case("new consumer with a generation", "PUT", f"/allocations/{new_consumer()}",
         alloc_body(RP1, {"VCPU": 1}, gen=3)),
    Case("existing consumer with null generation", "PUT", f"/allocations/{C1}",
         alloc_body(RP1, {"VCPU": 1}, gen=None)),
    Case("allocation over capacity", "PUT", f"/allocations/{new_consumer()}",
         alloc_body(RP1, {"VCPU": 7})),
    Case("allocation above max_unit", "PUT", f"/allocations/{new_consumer()}",
         alloc_body(RP1, {"VCPU": 5})),
    Case("allocation off step_size", "PUT", f"/allocations/{new_consumer()}",
         alloc_body(RP1, {"MEMORY_MB": 200})),
    Case("allocation unknown provider", "PUT", f"/allocations/{new_consumer()}",
         alloc_body(MISSING, {"VCPU": 1})),
    Case("allocation class not in inventory", "PUT", f"/allocations/{new_consumer()}",
         alloc_body(RP3, {"VCPU": 1})),
    Case("allocation unknown class", "PUT", f"/allocations/{new_consumer()}",
         alloc_body(RP1, {"CUSTOM_NOPE": 1})),
    Case("allocation missing consumer_generation", "PUT", f"/allocations/{new_consumer()}",
         {"allocations": {RP1: {"resources": {"VCPU": 1}}}, "project_id": PROJECT,
          "user_id": USER, "consumer_type": "INSTANCE"}),
    Case("allocation missing project_id", "PUT", f"/allocations/{new_consumer()}",
         {"allocations": {RP1: {"resources": {"VCPU": 1}}}, "user_id": USER,
          "consumer_generation": None, "consumer_type": "INSTANCE"}),
    Case("allocation bad consumer_type (1.38)", "PUT", f"/allocations/{new_consumer()}",
         alloc_body(RP1, {"VCPU": 1}, consumer_type="bad type")),
    Case("allocations for non-uuid consumer", "PUT", "/allocations/not-a-uuid",
         alloc_body(RP1, {"VCPU": 1})),
    Case("delete allocations of unknown consumer", "DELETE", f"/allocations/{MISSING}"),
    Case("POST /allocations generation conflict", "POST", "/allocations",
         {C1: {"allocations": {RP1: {"resources": {"VCPU": 1}}}, "project_id": PROJECT,
               "user_id": USER, "consumer_generation": 99,
               "consumer_type": "INSTANCE"}}),
    Case("POST /allocations over capacity", "POST", "/allocations",
         {new_consumer(): {"allocations": {RP1: {"resources": {"VCPU": 7}}}, "project_id": PROJECT,
                  "user_id": USER, "consumer_generation": None,
                  "consumer_type": "INSTANCE"}}),
    Case("POST /allocations bad consumer key", "POST", "/allocations",
         {"not-a-uuid": {"allocations": {}, "project_id": PROJECT, "user_id": USER,
                         "consumer_generation": None, "consumer_type": "INSTANCE"}}),
    # ---- usages
    Case("usages without project_id", "GET", "/usages"),
    Case("usages bad consumer_type", "GET", f"/usages?project_id={PROJECT}&consumer_type=a b"),
    # ---- allocation candidates
    Case("candidates without resources", "GET", AC.rstrip("?")),
    Case("candidates VCPU:0", "GET", AC + "resources=VCPU:0"),
    Case("candidates unknown class", "GET", AC + "resources=CUSTOM_NOPE:1"),
    Case("candidates duplicate resources", "GET", AC + "resources=VCPU:1&resources=VCPU:1"),
    Case("candidates required and forbidden", "GET",
         AC + "resources=VCPU:1&required=HW_CPU_X86_AVX2,!HW_CPU_X86_AVX2"),
    Case("candidates unknown trait", "GET", AC + "resources=VCPU:1&required=CUSTOM_NOPE"),
    Case("candidates 2 groups, no group_policy", "GET",
         AC + "resources1=VCPU:1&resources2=DISK_GB:1", version="1.25"),
    Case("candidates limit=0", "GET", AC + "resources=VCPU:1&limit=0"),
    Case("candidates limit=x", "GET", AC + "resources=VCPU:1&limit=x"),
    Case("candidates member_of=in:bad", "GET", AC + "resources=VCPU:1&member_of=in:bad"),
    Case("candidates bad group suffix", "GET", AC + "resources_bad!=VCPU:1"),
    Case("candidates suffix before 1.33", "GET", AC + "resources_A=VCPU:1", version="1.32"),
    Case("candidates same_subtree unknown group", "GET",
         AC + "resources_A=VCPU:1&same_subtree=_A,_B"),
    Case("candidates resourceless group alone", "GET",
         AC + "resources=VCPU:1&required_X=HW_CPU_X86_AVX2"),
    Case("candidates root_required unknown trait", "GET",
         AC + "resources=VCPU:1&root_required=CUSTOM_NOPE"),
    Case("candidates unknown parameter", "GET", AC + "resources=VCPU:1&foo=bar"),
    # ---- reshaper
    Case("reshaper stale generation", "POST", "/reshaper", {
        "inventories": {RP3: {"resource_provider_generation": 99,
                              "inventories": {"VCPU": inv()}}},
        "allocations": {}}),
    Case("reshaper missing inventories", "POST", "/reshaper", {"allocations": {}}),
    Case("reshaper before 1.30", "POST", "/reshaper", {"inventories": {}, "allocations": {}},
         version="1.29"),
    Case("reshaper drops inventory in use", "POST", "/reshaper", lambda c: {
        "inventories": {RP4: {"resource_provider_generation": c.gen(RP4), "inventories": {}}},
        "allocations": {}}),
    # ---- older microversions (no "code" member before 1.23) and more rules
    Case("duplicate provider name @1.22", "POST", "/resource_providers", {"name": "rp1"},
         version="1.22"),
    Case("provider name too long", "POST", "/resource_providers", {"name": "x" * 201}),
    Case("provider without name", "POST", "/resource_providers", {}),
    Case("in_tree before 1.14", "GET", f"/resource_providers?in_tree={RP1}", version="1.13"),
    Case("forbidden trait before 1.22", "GET", "/resource_providers?required=!CUSTOM_FOO",
         version="1.21"),
    Case("required=in: before 1.39", "GET",
         "/resource_providers?required=in:CUSTOM_FOO,HW_CPU_X86_AVX2", version="1.38"),
    Case("member_of=!in: (forbidden aggregates, accepted)", "GET",
         f"/resource_providers?member_of=!in:{AGG}"),
    Case("single inventory stale generation", "PUT",
         f"/resource_providers/{RP1}/inventories/DISK_GB",
         {"resource_provider_generation": 99, "total": 100}),
    Case("single inventory unknown field", "PUT",
         f"/resource_providers/{RP1}/inventories/DISK_GB",
         lambda c: {"resource_provider_generation": c.gen(RP1), "total": 100, "foo": 1}),
    Case("allocation_ratio wrong type", "PUT", f"/resource_providers/{RP1}/inventories/DISK_GB",
         lambda c: {"resource_provider_generation": c.gen(RP1), "total": 100,
                    "allocation_ratio": "x"}),
    Case("usages of missing provider", "GET", f"/resource_providers/{MISSING}/usages"),
    Case("allocations of missing provider", "GET", f"/resource_providers/{MISSING}/allocations"),
    Case("aggregates of missing provider", "GET", f"/resource_providers/{MISSING}/aggregates"),
    Case("traits of missing provider", "GET", f"/resource_providers/{MISSING}/traits"),
    Case("delete missing custom class", "DELETE", "/resource_classes/CUSTOM_NOPE"),
    Case("delete missing custom trait", "DELETE", "/traits/CUSTOM_NOPE"),
    Case("GET missing trait", "GET", "/traits/CUSTOM_NOPE"),
    Case("traits ?associated=maybe", "GET", "/traits?associated=maybe"),
    Case("class name too long", "POST", "/resource_classes", {"name": "CUSTOM_" + "X" * 250}),
    Case("rename class (1.1)", "PUT", "/resource_classes/CUSTOM_BAR", {"name": "CUSTOM_BAZ"},
         version="1.1"),
    Case("provider traits wrong type", "PUT", f"/resource_providers/{RP1}/traits",
         lambda c: {"resource_provider_generation": c.gen(RP1), "traits": "CUSTOM_FOO"}),
    Case("provider traits without generation", "PUT", f"/resource_providers/{RP1}/traits",
         {"traits": []}),
    Case("aggregates without generation @1.19", "PUT", f"/resource_providers/{RP1}/aggregates",
         {"aggregates": []}),
    Case("allocation amount 0", "PUT", f"/allocations/{new_consumer()}",
         alloc_body(RP1, {"VCPU": 0})),
    Case("allocation amount string", "PUT", f"/allocations/{new_consumer()}",
         alloc_body(RP1, {"VCPU": "1"})),
    Case("empty allocations for new consumer", "PUT", f"/allocations/{new_consumer()}",
         {"allocations": {}, "project_id": PROJECT, "user_id": USER,
          "consumer_generation": None, "consumer_type": "INSTANCE"}),
    Case("old list format @1.0", "PUT", f"/allocations/{new_consumer()}",
         {"allocations": [{"resource_provider": {"uuid": MISSING}, "resources": {"VCPU": 1}}]},
         version="1.0"),
    Case("POST /allocations empty", "POST", "/allocations", {}),
    Case("POST /allocations unknown provider", "POST", "/allocations",
         {new_consumer(): {"allocations": {MISSING: {"resources": {"VCPU": 1}}},
                           "project_id": PROJECT, "user_id": USER,
                           "consumer_generation": None, "consumer_type": "INSTANCE"}}),
    Case("candidates group_policy=bad", "GET",
         AC + "resources1=VCPU:1&resources2=DISK_GB:1&group_policy=bad"),
    Case("candidates in_tree=missing", "GET", AC + f"resources=VCPU:1&in_tree={MISSING}"),
    Case("candidates in_tree=bad", "GET", AC + "resources=VCPU:1&in_tree=bad"),
    Case("candidates root_required before 1.35", "GET",
         AC + "resources=VCPU:1&root_required=CUSTOM_FOO", version="1.34"),
    Case("candidates root_required conflicting", "GET",
         AC + "resources=VCPU:1&root_required=CUSTOM_FOO,!CUSTOM_FOO"),
    Case("candidates forbidden member_of before 1.32", "GET",
         AC + f"resources=VCPU:1&member_of=!{AGG}", version="1.31"),
    Case("candidates required=in: with forbidden", "GET",
         AC + "resources=VCPU:1&required=in:CUSTOM_FOO,!HW_CPU_X86_AVX2"),
    Case("candidates resources=VCPU:-1", "GET", AC + "resources=VCPU:-1"),
    Case("candidates resources=VCPU:x", "GET", AC + "resources=VCPU:x"),
    Case("candidates duplicate class in a group", "GET", AC + "resources=VCPU:1,VCPU:2"),
    Case("reshaper unknown provider", "POST", "/reshaper", {
        "inventories": {MISSING: {"resource_provider_generation": 0,
                                  "inventories": {"VCPU": inv()}}},
        "allocations": {}}),
    Case("reshaper empty inventories", "POST", "/reshaper",
         {"inventories": {}, "allocations": []}),
    Case("bad body for a missing provider (inventories)", "PUT",
         f"/resource_providers/{MISSING}/inventories", {"foo": 1}),
    Case("bad body for a missing provider (one inventory)", "PUT",
         f"/resource_providers/{MISSING}/inventories/VCPU", {"total": "x"}),
    Case("bad body for a missing provider (POST inventory)", "POST",
         f"/resource_providers/{MISSING}/inventories", {"total": 1}),
    Case("bad body for a missing provider (aggregates)", "PUT",
         f"/resource_providers/{MISSING}/aggregates", {"aggregates": "x"}),
    Case("bad body for a missing provider (update)", "PUT",
         f"/resource_providers/{MISSING}", {"name": 5}),
    Case("bad body for a non-UUID provider path", "PUT",
         "/resource_providers/not-a-uuid/inventories", {"foo": 1}),
    Case("malformed JSON for a missing provider", "PUT",
         f"/resource_providers/{MISSING}/inventories", raw=b"{"),
    Case("bad body for a missing provider (traits)", "PUT",
         f"/resource_providers/{MISSING}/traits", {"traits": 5}),
    Case("usages @1.38 without consumer_type", "GET", f"/usages?project_id={PROJECT}",
         kept="OpenStack Placement 16.0.0 fails here (500); Kova answers the usages"),
    # ---- edge cases both services accept; they change state, so they come last
    Case("inventory below usage (accepted)", "PUT",
         f"/resource_providers/{RP1}/inventories/VCPU",
         lambda c: {"resource_provider_generation": c.gen(RP1), "total": 1}),
    Case("inventory min_unit > max_unit (accepted)", "PUT",
         f"/resource_providers/{RP3}/inventories",
         lambda c: {"resource_provider_generation": c.gen(RP3),
                    "inventories": {"VCPU": inv(8, min_unit=4, max_unit=2)}}),
    # OpenStack creates the consumer before it finds the provider missing and
    # keeps it: the retry of a new consumer (generation null) then conflicts.
    Case("new consumer, unknown provider", "PUT", f"/allocations/{C_LEFT}",
         alloc_body(MISSING, {"VCPU": 1})),
    Case("retry of that new consumer (null generation)", "PUT", f"/allocations/{C_LEFT}",
         alloc_body(RP1, {"DISK_GB": 1}),
         kept="OpenStack leaves an empty consumer behind after a failed create, so the "
              "retry conflicts; Kova's failed create leaves nothing, the retry succeeds"),
]


def describe(r: httpx.Response) -> tuple[int, str | None, str]:
    try:
        if "message" in r.json():  # webob's own body (401 before Placement's formatting)
            return r.status_code, None, r.json()["message"]
        err = r.json()["errors"][0]
        return r.status_code, err.get("code"), str(err.get("detail", ""))
    except (ValueError, KeyError, IndexError, TypeError):
        return r.status_code, None, r.text[:200]


def same_detail(openstack: str, kova: str) -> bool:
    """OpenStack's ``detail`` is webob's generic explanation ("The server
    could not comply with the request ...") followed by the message; the
    message is what is compared (whitespace collapsed)."""
    o, k = " ".join(openstack.split()), " ".join(kova.split())
    return o == k or (bool(k) and k in o)


def compare(os_client: Client, kova_client: Client) -> tuple[list[dict], int]:
    rows = []
    for case in CASES:
        o = describe(case.send(os_client))
        k = describe(case.send(kova_client))
        rows.append({"label": case.label, "request": f"{case.method} {case.path}",
                     "version": case.version, "openstack": o, "kova": k, "kept": case.kept,
                     "match": o[:2] == k[:2], "detail_same": same_detail(o[2], k[2])})
    return rows, sum(1 for r in rows if not r["match"] and not r["kept"])


def md(rows: list[dict]) -> str:
    def sc(t):
        return f"{t[0]} {t[1] or '–'}"

    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    out = ["| # | request | version | OpenStack | Kova | match | note |",
           "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        note = ""
        if not r["match"] and r["kept"]:
            note = f"kept (docs/placement.md): {r['kept']}. "
        if not r["detail_same"] and r["openstack"][0] >= 400:
            note += (f"detail differs: OpenStack “{cell(r['openstack'][2][:110])}” / "
                    f"Kova “{cell(r['kova'][2][:110])}”")
        out.append(f"| {i} | {cell(r['label'])}: `{cell(r['request'])}` | {r['version']} | "
                   f"{sc(r['openstack'])} | {sc(r['kova'])} | "
                   f"{'yes' if r['match'] else '**no**'} | {note} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server-url", default=os.environ.get(
        "KOVA_BENCH_POSTGRES", "postgresql://root@/postgres?host=/var/run/postgresql"),
        help="Postgres server for OpenStack Placement's database")
    ap.add_argument("--logdir", type=Path, default=Path("/tmp/placement-parity"))
    ap.add_argument("--json", type=Path, default=None, help="write the rows here too")
    ap.add_argument("--strict", action="store_true",
                    help="also fail on the differences Kova keeps on purpose")
    args = ap.parse_args()
    args.logdir.mkdir(parents=True, exist_ok=True)
    sqlite = args.logdir / "kova-parity.db"
    sqlite.unlink(missing_ok=True)
    db_name = "placement_parity_openstack"
    servers = []
    try:
        # noauth2 and the default (secure RBAC) rules on both sides
        servers.append(perf.start_kova(f"sqlite:///{sqlite}", 1, args.logdir,
                                       ("--auth-strategy", "noauth2")))
        servers.append(perf.start_openstack(perf.make_db(args.server_url, db_name), 1, 4,
                                            args.logdir))
        kova, osp = Client(servers[0].url), Client(servers[1].url)
        fixtures(osp)
        fixtures(kova)
        rows, mismatches = compare(osp, kova)
    finally:
        for s in servers:
            s.stop()
        perf.drop_db(args.server_url, db_name)
    print(md(rows))
    print()
    kept = sum(1 for r in rows if not r["match"] and r["kept"])
    print(f"{len(rows)} requests compared: {len(rows) - mismatches - kept} match on status and "
          f"code, {kept} differ on purpose (kept), {mismatches} differ otherwise; detail text "
          f"the same for "
          f"{sum(r['detail_same'] for r in rows)}. Load average: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 1 if mismatches or (args.strict and kept) else 0


if __name__ == "__main__":
    sys.exit(main())
