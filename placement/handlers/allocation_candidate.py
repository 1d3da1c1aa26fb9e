"""GET /allocation_candidates (from 1.10)."""

from __future__ import annotations

import functools
import json
import re

from kova.placement import candidates, errors, limits, metrics, qparse
from kova.placement.handlers.common import since
from kova.placement.request import Response, cache_headers, check_accept
from kova.placement.validation import validate

_SUFFIX_1_25 = "[1-9][0-9]*"
_SUFFIX_1_33 = "[a-zA-Z0-9_-]{1,64}"
_GROUP_KEYS = ("resources", "required", "member_of", "in_tree")


def _schema(req) -> dict:
    return _schema_for(req.version)


def list_query(version) -> dict:
    """The query-string schema of GET /allocation_candidates at ``version``."""
    return _schema_for(version)


class _V:
    """Just enough of a request for the schema builder."""

    def __init__(self, version):
        self.version = version

    def want(self, minor: int) -> bool:
        return self.version >= (1, minor)


@functools.lru_cache(maxsize=None)
def _schema_for(version) -> dict:
    req = _V(version)
    props: dict = {}
    pattern_props: dict = {}
    required: list[str] = []
    if not req.want(25):
        props["resources"] = {"type": "string"}
        required = ["resources"]
        if req.want(17):
            props["required"] = {"type": "string"}
        if req.want(21):
            props["member_of"] = {"type": "string"}
    else:
        suffix = _SUFFIX_1_33 if req.want(33) else _SUFFIX_1_25
        keys = _GROUP_KEYS if req.want(31) else _GROUP_KEYS[:3]
        for key in keys:
            pattern_props[f"^{key}({suffix})?$"] = {"type": "string"}
        props["group_policy"] = {"type": "string", "enum": ["none", "isolate"]}
    if req.want(16):
        props["limit"] = {"type": "string", "pattern": "^[1-9][0-9]*$", "minLength": 1}
    if req.want(35):
        props["root_required"] = {"type": "string"}
    if req.want(36):
        props["same_subtree"] = {"type": "string"}
    schema = {"type": "object", "properties": props, "additionalProperties": False}
    if pattern_props:
        schema["patternProperties"] = pattern_props
    if required:
        schema["required"] = required
    return schema


def _request_wide(req) -> candidates.RequestWide:
    rw = candidates.RequestWide()
    limit = req.getall("limit")
    if limit:
        rw.limit = limits.bounded_int(limit[0])
        if rw.limit is None:
            raise errors.BadRequest(
                f"Invalid query string parameters: 'limit' has more than "
                f"{limits.MAX_INT_DIGITS} digits.", code=errors.QUERYPARAM_BAD_VALUE)
    policy = req.getall("group_policy")
    if policy:
        rw.group_policy = policy[0]
    root_required = req.getall("root_required")
    if root_required:
        if len(root_required) > 1:
            raise errors.BadRequest(
                "Query parameter 'root_required' may be specified only once.",
                code=errors.ILLEGAL_DUPLICATE_QUERYPARAM)
        required, forbidden = qparse.traits_value(root_required[0], True, False)
        required_names = {next(iter(s)) for s in required}
        conflicts = required_names & forbidden
        if conflicts:
            raise errors.BadRequest(
                "Conflicting required and forbidden traits found in root_required: %s"
                % ", ".join(sorted(conflicts)), code=errors.QUERYPARAM_BAD_VALUE)
        rw.root_required, rw.root_forbidden = required_names, forbidden
    for value in req.getall("same_subtree"):
        suffixes = {s.strip() for s in value.split(",")}
        if "" in suffixes:
            raise errors.BadRequest(
                "Empty string (unsuffixed group) can not be specified in `same_subtree` ",
                code=errors.QUERYPARAM_BAD_VALUE)
        rw.same_subtrees.append(suffixes)
    return rw


def _parse_groups(req) -> dict[str, candidates.RequestGroup]:
    suffix_re = _SUFFIX_1_33 if req.want(33) else _SUFFIX_1_25
    key_re = re.compile(r"^(resources|required|member_of|in_tree)(%s)?$" % suffix_re)
    groups: dict[str, candidates.RequestGroup] = {}
    for key, value in req.query:
        m = key_re.match(key)
        if not m:
            continue
        prefix, suffix = m.group(1), m.group(2) or ""
        group = groups.get(suffix)
        if group is None:
            group = groups[suffix] = candidates.RequestGroup(
                suffix=suffix, use_same_provider=bool(suffix))
        if prefix == "resources":
            group.resources = qparse.resources(value)
        elif prefix == "required":
            group.required, group.forbidden = qparse.required_params(req, suffix)
        elif prefix == "member_of":
            group.member_of, group.forbidden_aggs = qparse.member_of_params(req, suffix)
        else:
            group.in_tree = qparse.in_tree(value)
    return groups


def _check_resourceless(groups, rw) -> None:
    """From 1.36: groups without resources only inside ``same_subtree``."""
    resourceless = [s for s, g in groups.items() if not g.resources]
    subtree = set().union(*rw.same_subtrees) if rw.same_subtrees else set()
    if len(resourceless) == len(groups):
        raise errors.BadRequest(
            "There must be at least one resources or resources[$S] parameter.",
            code=errors.QUERYPARAM_MISSING_VALUE)
    bad = [s for s in resourceless if s not in subtree]
    if bad:
        raise errors.BadRequest(
            "Resourceless suffixed group request should be specified in "
            f"`same_subtree` query param: bad group(s) - {bad}.",
            code=errors.QUERYPARAM_BAD_VALUE)
    unknown = [s for s in sorted(subtree) if s not in groups]
    if unknown:
        raise errors.BadRequest(
            f"Real suffixes should be specified in `same_subtree`: {unknown} not "
            f"found in {list(groups)}.", code=errors.QUERYPARAM_BAD_VALUE)


def _check_orphans(groups) -> None:
    """Before 1.36: every group has resources."""
    orphans = [f"required{s}" for s, g in groups.items() if g.required and not g.resources]
    if orphans:
        raise errors.BadRequest(
            "All traits parameters must be associated with resources.  Found the "
            "following orphaned traits keys: %s" % ", ".join(orphans))
    orphans = [f"member_of{s}" for s, g in groups.items()
               if not g.resources and (g.member_of or g.forbidden_aggs)]
    if orphans:
        raise errors.BadRequest(
            "All member_of parameters must be associated with resources. Found the "
            "following orphaned member_of keys: %s" % ", ".join(orphans))
    if not all(g.resources for g in groups.values()):
        raise errors.BadRequest("All request groups must specify resources.")
    if not groups:
        raise errors.BadRequest(
            "At least one request group (`resources` or `resources{$S}`) is required.")


def _check_conflicts(groups) -> None:
    """From 1.22: a trait both required and forbidden in one group."""
    conflicts = []
    for s, g in groups.items():
        for any_of in g.required:
            if any_of <= g.forbidden:
                conflicts.append("required%s: (%s)" % (s, ", ".join(sorted(any_of))))
    if conflicts:
        raise errors.BadRequest(
            "Conflicting required and forbidden traits found in the following traits "
            "keys: %s" % ", ".join(sorted(conflicts)))


def _groups(req, rw) -> dict[str, candidates.RequestGroup]:
    groups = _parse_groups(req)
    if req.want(36):
        _check_resourceless(groups, rw)
    else:
        _check_orphans(groups)
    if req.want(22):
        _check_conflicts(groups)
    return groups


def _check_names(snap, groups, rw) -> None:
    for g in groups.values():
        for rc in g.resources:
            if rc not in snap.rc_names:
                raise errors.BadRequest(
                    "Invalid resource class in resources parameter: No such resource "
                    f"class {rc}.")
    names: set[str] = set(rw.root_required) | set(rw.root_forbidden)
    for g in groups.values():
        for any_of in g.required:
            names |= any_of
        names |= g.forbidden
    missing = sorted(n for n in names if n not in snap.trait_names)
    if missing:
        raise errors.BadRequest("No such trait(s): %s." % ", ".join(missing))


def _summary_json(p, requested, include_all, include_traits, nested, rank) -> str:
    """'"<uuid>": {...}' for one provider summary (cached per snapshot)."""
    key = (include_traits, nested)
    if include_all:
        cached = p.frags.get(key)
        if cached is not None:
            return cached
    resources = {rc: {"capacity": inv.capacity, "used": p.used.get(rc, 0)}
                 for rc, inv in p.inv.items() if include_all or rc in requested}
    data: dict = {"resources": resources}
    if include_traits:
        # in the order the traits were created, as OpenStack lists them
        data["traits"] = sorted(p.traits, key=rank)
    if nested:
        data["parent_provider_uuid"] = p.parent_uuid
        data["root_provider_uuid"] = p.root_uuid
    text = '"%s": %s' % (p.uuid, json.dumps(data))
    if include_all:
        p.frags[key] = text
    return text


def _render_simple(req, simple) -> list[str]:
    rj = json.dumps(simple.resources)
    if req.want(12):
        if req.want(34):
            head = '{"allocations": {"'
            mid = ('": {"resources": ' + rj + '}}, "mappings": {'
                   + json.dumps(simple.suffix) + ': ["')
            return [head + p.uuid + mid + p.uuid + '"]}}' for p in simple.providers]
        mid = '": {"resources": ' + rj + "}}}"
        return ['{"allocations": {"' + p.uuid + mid for p in simple.providers]
    mid = '"}, "resources": ' + rj + "}]}"
    return ['{"allocations": [{"resource_provider": {"uuid": "' + p.uuid + mid
            for p in simple.providers]


def _render(req, snap, areqs, summaries, groups) -> bytes:
    want_dict = req.want(12)
    want_mappings = req.want(34)
    by_id = snap.by_id
    res_cache: dict = {}
    parts = _render_simple(req, areqs) if isinstance(areqs, candidates.Simple) else []
    for areq in ([] if isinstance(areqs, candidates.Simple) else areqs):
        by_p: dict[int, list] = {}
        for (pid, rc), amount in areq.amounts.items():
            by_p.setdefault(pid, []).append((rc, amount))
        allocs = []
        for pid, items in by_p.items():
            key = tuple(items)
            rj = res_cache.get(key)
            if rj is None:
                rj = res_cache[key] = json.dumps(dict(items))
            if want_dict:
                allocs.append('"%s": {"resources": %s}' % (by_id[pid].uuid, rj))
            else:
                allocs.append('{"resource_provider": {"uuid": "%s"}, "resources": %s}'
                              % (by_id[pid].uuid, rj))
        if want_dict:
            text = '{"allocations": {' + ", ".join(allocs) + "}"
            if want_mappings:
                text += ', "mappings": {' + ", ".join(
                    '%s: [%s]' % (json.dumps(suffix),
                                  ", ".join('"%s"' % by_id[i].uuid for i in ids))
                    for suffix, ids in areq.mappings.items()) + "}"
            parts.append(text + "}")
        else:
            parts.append('{"allocations": [' + ", ".join(allocs) + "]}")
    requested = set()
    for g in groups.values():
        requested |= set(g.resources)
    include_all, include_traits, nested = req.want(27), req.want(17), req.want(29)
    rank = snap.trait_rank()
    sums = ", ".join([_summary_json(p, requested, include_all, include_traits, nested, rank)
                      for p in summaries])
    return ('{"allocation_requests": [' + ", ".join(parts) + '], "provider_summaries": {'
            + sums + "}}").encode()


@since(10)
def list_(req):
    check_accept(req)
    validate(req.query_dict(), _schema(req), "Invalid query string parameters")
    rw = _request_wide(req)
    rw.randomize = req.app.randomize_allocation_candidates
    groups = _groups(req, rw)
    if not rw.group_policy and len([g for g in groups.values() if g.use_same_provider]) > 1:
        raise errors.BadRequest(
            'The "group_policy" parameter is required when specifying more than one '
            '"resources{N}" parameter.')
    snap = req.app.cache.get()
    _check_names(snap, groups, rw)
    areqs, summaries = candidates.find(snap, groups, rw, nested_aware=req.want(29))
    metrics.CANDIDATES.observe(len(areqs))
    return Response(200, _render(req, snap, areqs, summaries, groups), cache_headers(req))
