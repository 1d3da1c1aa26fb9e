"""``kubectl kova drain HOST`` and ``kubectl kova uncordon HOST``: empty a
host for maintenance, as ``kubectl drain`` empties a Node -- from the
client: the host is disabled (``spec.enabled: false``: the scheduler sends
it nothing new), then each Instance placed there is moved away through
``instances/migrate`` (the scheduler picks each destination, so
server-group policies hold), a few at a time (``--parallel``): a running
one live-migrated (no confirm needed), falling back to a cold migration
when the live one fails (unless ``--no-cold-fallback``); a stopped one, or
every one with ``--cold``, cold-migrated and confirmed once it runs on its
new host.  Progress is printed as it goes; the
Instances left are named at the end.  ``uncordon`` enables the host again.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import click

from kova.crds.names import (
    GROUP,
    LABEL_HOST,
    REASON_LIVE_MIGRATION_FAILED,
    VERSION,
    MigrationStep,
)
from kova.plugin.client import Cluster, PluginError


def host_path(host: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/hosts/{host}"


@dataclass
class Drain:
    host: str
    waiting: list[tuple[str, str]]
    moving: dict[tuple[str, str], str] = field(default_factory=dict)  # -> migration uuid
    done: list[tuple[str, str]] = field(default_factory=list)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)
    #: live-migrate running Instances; a failed live migration is tried cold
    #: again when ``cold_fallback``
    live: bool = True
    cold_fallback: bool = True
    cold: set[tuple[str, str]] = field(default_factory=set)

    def line(self) -> str:
        return (f"host {self.host}: {len(self.waiting) + len(self.moving)} left "
                f"({len(self.moving)} moving), {len(self.done)} moved, "
                f"{len(self.failed)} failed")


def start_move(cluster: Cluster, ns: str, name: str, live: bool = False) -> str:
    """Start moving Instance ``ns/name`` off its host (live or cold); the
    migration's UUID."""
    got = cluster.request("PUT", cluster.subresource_path(ns, name, "migrate"),
                          f"migrate instance {ns}/{name}",
                          query={"live": "true"} if live else None)
    mig = (got or {}).get("migration") or {}
    return str(mig.get("uuid") or "")


def live_first(cluster: Cluster, d: Drain, key: tuple[str, str]) -> bool:
    """Whether to move ``key`` live: live drains, a running Instance, not
    already tried live."""
    if not d.live or key in d.cold:
        return False
    status = cluster.get_instance(*key).get("status") or {}
    return status.get("powerState") == "Running"


def step(cluster: Cluster, d: Drain, key: tuple[str, str]) -> None:
    """Look at one Instance being moved: confirm it once it runs on its new
    host; note the end (moved, or the reason it could not be)."""
    ns, name = key
    inst = cluster.get_instance(ns, name)
    status = inst.get("status") or {}
    mig = status.get("migration") or {}
    if mig.get("uuid") == d.moving[key]:
        if mig.get("step") == MigrationStep.VERIFY:
            cluster.request("PUT", cluster.subresource_path(ns, name, "resize-confirm"),
                            f"confirm the migration of {ns}/{name}")
            click.echo(f"  {ns}/{name}: running on {mig.get('destHost')}, confirmed", err=True)
        return
    del d.moving[key]
    if status.get("host") != d.host:
        d.done.append(key)
        return
    cond: dict = next((c for c in status.get("conditions") or [] if c.get("type") == "Resized"),
                      {})
    if (cond.get("reason") == REASON_LIVE_MIGRATION_FAILED and d.cold_fallback
            and key not in d.cold):
        d.cold.add(key)
        d.waiting.append(key)
        click.echo(f"  {ns}/{name}: live migration failed ({cond.get('message', '')}); "
                   "migrating it cold", err=True)
        return
    d.failed[key] = f"{cond.get('reason', 'not moved')}: {cond.get('message', '')}"
    click.echo(f"  {ns}/{name}: not moved: {d.failed[key]}", err=True)


def drain_host(cluster: Cluster, host: str, parallel: int, timeout: float,
               live: bool = True, cold_fallback: bool = True) -> Drain:
    cluster.request("PATCH", host_path(host), f"disable host {host}", json_body={
        "spec": {"enabled": False, "disabledReason": "drained (kubectl kova drain)"}})
    listed = cluster.request("GET", f"/apis/{GROUP}/{VERSION}/instances",
                             f"instances on host {host}",
                             query={"labelSelector": f"{LABEL_HOST}={host}"})
    d = Drain(host, sorted((i["metadata"]["namespace"], i["metadata"]["name"])
                           for i in listed.get("items") or []),
              live=live, cold_fallback=cold_fallback)
    click.echo(f"host {host} disabled; {len(d.waiting)} instance(s) to move", err=True)
    deadline = time.monotonic() + timeout
    last = ""
    while d.waiting or d.moving:
        while d.waiting and len(d.moving) < parallel:
            key = d.waiting.pop(0)
            try:
                live = live_first(cluster, d, key)
                d.moving[key] = start_move(cluster, *key, live=live)
                if not live:
                    d.cold.add(key)
                click.echo(f"  {key[0]}/{key[1]}: {'live-' if live else ''}migrating",
                           err=True)
            except PluginError as exc:
                d.failed[key] = exc.message
                click.echo(f"  {key[0]}/{key[1]}: not moved: {exc.message}", err=True)
        for key in list(d.moving):
            step(cluster, d, key)
        if d.line() != last:
            last = d.line()
            click.echo(last, err=True)
        if time.monotonic() > deadline:
            raise PluginError(f"{d.line()} after {timeout:.0f}s")
        if d.moving:
            time.sleep(1.0)
    return d


def _cluster(ctx: click.Context, kubeconfig: str | None, context: str | None) -> Cluster:
    o = dict(ctx.obj or {})
    cluster = Cluster(kubeconfig or o.get("kubeconfig") or os.environ.get("KUBECONFIG"),
                      context or o.get("context"))
    ctx.call_on_close(cluster.close)
    return cluster


@click.command()
@click.argument("host")
@click.option("--parallel", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Instances moved at the same time.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait in all.")
@click.option("--live/--cold", default=True, show_default=True,
              help="Live-migrate the running Instances (--cold: stop and copy every one).")
@click.option("--cold-fallback/--no-cold-fallback", default=True, show_default=True,
              help="Migrate an Instance cold when its live migration fails.")
@click.option("--kubeconfig", default=None, help="Path to the kubeconfig file.")
@click.option("--context", default=None, help="The kubeconfig context to use.")
@click.pass_context
def drain(ctx: click.Context, host: str, parallel: int, timeout: float, live: bool,
          cold_fallback: bool, kubeconfig: str | None, context: str | None) -> None:
    """Empty HOST for maintenance: disable it (nothing new is scheduled
    there), move each of its Instances to a host the scheduler picks
    (server groups respected): live-migrate the running ones (cold if that
    fails, unless --no-cold-fallback), cold-migrate the others and confirm
    each once it runs there.  Ends it with kubectl kova uncordon HOST."""
    cluster = _cluster(ctx, kubeconfig, context)
    d = drain_host(cluster, host, parallel, timeout, live, cold_fallback)
    if d.failed:
        names = ", ".join(f"{ns}/{n}" for ns, n in sorted(d.failed))
        raise PluginError(f"host {host} is disabled but not empty: {names} could not be "
                          "moved (see above)")
    click.echo(f"host {host} drained: {len(d.done)} instance(s) moved")


@click.command()
@click.argument("host")
@click.option("--kubeconfig", default=None, help="Path to the kubeconfig file.")
@click.option("--context", default=None, help="The kubeconfig context to use.")
@click.pass_context
def uncordon(ctx: click.Context, host: str, kubeconfig: str | None,
             context: str | None) -> None:
    """Let the scheduler place Instances on HOST again (after a drain)."""
    cluster = _cluster(ctx, kubeconfig, context)
    cluster.request("PATCH", host_path(host), f"enable host {host}",
                    json_body={"spec": {"enabled": True, "disabledReason": None}})
    click.echo(f"host {host} enabled")
