"""ServerGroup status: its members, their hosts, and whether the members'
placement keeps the group's policy (``PolicySatisfied``).  The policy itself
is enforced when a member is placed (the scheduler's server-group filters and
weighers, under the group's lock: :mod:`kova.operator.instance.placing`)."""

from __future__ import annotations

from collections import Counter

from kova.conditions import get_condition, set_condition
from kova.crds import names
from kova.crds import objects as ob
from kova.crds.names import ServerGroupPolicy
from kova.operator.context import Context


def policy_satisfied(policy: str | None, max_per_host: int | None, hosts: Counter) -> bool:
    """The members' hosts (host -> members) keep ``policy``."""
    if policy == ServerGroupPolicy.AFFINITY:
        return len(hosts) <= 1
    if policy == ServerGroupPolicy.ANTI_AFFINITY:
        return all(n <= int(max_per_host or 1) for n in hosts.values())
    return True


def group_status(current: dict, members: list[str], hosts: Counter, policy: str | None,
                 ok: bool) -> dict | None:
    """The status to write, or None when ``current`` already says it."""
    status = ob.status(current)
    want_members, want_hosts = sorted(members), sorted(hosts)
    cond = get_condition(current, names.SG_COND_POLICY_SATISFIED)
    want_cond = "True" if ok else "False"
    if (sorted(status.get("members") or []) == want_members
            and sorted(status.get("hosts") or []) == want_hosts
            and cond and cond.get("status") == want_cond):
        return None
    message = (f"{len(members)} member(s) on {len(hosts)} host(s)" if ok else
               f"the members' hosts break policy {policy}: {dict(hosts)}")
    return {"members": want_members or None, "hosts": want_hosts or None,
            "observedGeneration": ob.meta(current).get("generation"),
            "conditions": set_condition(
                status.get("conditions"), names.SG_COND_POLICY_SATISFIED, want_cond,
                names.SG_REASON_SATISFIED if ok else names.SG_REASON_VIOLATED, message)}


class ServerGroupController:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def members(self, ns: str, name: str) -> tuple[list[str], Counter]:
        """The names of the group's (not deleted) members and host -> members."""
        members: list[str] = []
        hosts: Counter = Counter()
        for (_, inst), body in self.ctx.informer.instances(ns):
            if ob.deleting(body) or ob.ref_name(body, "serverGroupRef") != name:
                continue
            members.append(inst)
            host = ob.placed_host(body)
            if host:
                hosts[host] += 1
        return members, hosts

    async def reconcile(self, ns: str, name: str) -> None:
        sg = self.ctx.informer.server_group(ns, name)
        if sg is None:
            return
        members, hosts = self.members(ns, name)
        policy = sg.get("policy")
        ok = policy_satisfied(policy, sg.get("maxServerPerHost"), hosts)
        path = f"/apis/{names.API_VERSION}/namespaces/{ns}/servergroups/{name}"
        current = await self.ctx.kube.get_or_none(path)
        if current is None:
            return

        def change(cur: dict) -> dict | None:
            status = group_status(cur, members, hosts, policy, ok)
            return None if status is None else {"status": status}

        # a PUT of the status as the merge patch would leave it, guarded by the
        # resourceVersion just read; a conflict reads the group again
        try:
            await self.ctx.kube.update_status(path, current, change)
        except RuntimeError:  # still conflicting: again shortly
            self.ctx.queue.add_after(("sg", ns, name), 0.5)
