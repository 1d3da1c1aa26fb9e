"""``kubectl kova drain HOST`` and ``kubectl kova uncordon HOST``: empty a
host for maintenance, as ``kubectl drain`` empties a Node.  The drain is
the operator's (``Host.spec.drain``, see docs/moving.md): the command sets
``spec.drain: true`` with the policy its flags ask for (``--live`` with or
without ``--cold-fallback``, ``--cold``) and the parallelism
(``--parallel``), then follows ``Host.status.drain``, printing each change,
until the host is Drained (exit 0) or Stuck (exit 1, the Instances left
named with the reason).  The drain goes on in the operator if the command
is interrupted.  ``uncordon`` sets ``spec.drain: false`` (and
``spec.enabled: true``).
"""

from __future__ import annotations

import os
import time

import click

from kova.crds.names import GROUP, VERSION, DrainPhase, DrainPolicy
from kova.plugin.client import Cluster, PluginError

#: Seconds a Stuck phase must hold before the command gives up on it (the
#: operator may still be taking in a changed spec).
STUCK_FOR = 6.0


def host_path(host: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/hosts/{host}"


def policy(live: bool, cold_fallback: bool) -> str:
    """The drainPolicy the command's flags ask for."""
    if not live:
        return DrainPolicy.COLD
    return DrainPolicy.LIVE_THEN_COLD if cold_fallback else DrainPolicy.LIVE


def progress_line(host: str, drain: dict) -> str:
    return (f"host {host}: {drain.get('phase')}: {drain.get('instances', 0)} left "
            f"({drain.get('moving', 0)} moving), {drain.get('moved', 0)} moved, "
            f"{len(drain.get('left') or [])} cannot be moved")


def left_lines(drain: dict) -> list[str]:
    return [f"  {e['namespace']}/{e['name']}: {e['reason']}: {e.get('message', '')}"
            for e in drain.get("left") or []]


def follow(cluster: Cluster, host: str, timeout: float) -> dict:
    """Print Host.status.drain as it changes until Drained or Stuck (held
    STUCK_FOR seconds); the last status.drain."""
    deadline = time.monotonic() + timeout
    last, stuck_since = "", None
    while True:
        got = cluster.request("GET", host_path(host), f"host {host}")
        spec, drain = got.get("spec") or {}, (got.get("status") or {}).get("drain") or {}
        if not spec.get("drain"):
            raise PluginError(f"host {host}: spec.drain was set back to false (uncordoned)")
        if drain:
            line = "\n".join([progress_line(host, drain), *left_lines(drain)])
            if line != last:
                last = line
                click.echo(line, err=True)
            if drain.get("phase") == DrainPhase.DRAINED:
                return drain
            if drain.get("phase") == DrainPhase.STUCK:
                stuck_since = stuck_since or time.monotonic()
                if time.monotonic() - stuck_since >= STUCK_FOR:
                    return drain
            else:
                stuck_since = None
        if time.monotonic() > deadline:
            raise PluginError(f"host {host}: not drained after {timeout:.0f}s "
                              f"({progress_line(host, drain) if drain else 'no progress yet'}); "
                              "the operator goes on draining it")
        time.sleep(1.0)


def drain_host(cluster: Cluster, host: str, parallel: int | None, timeout: float,
               live: bool = True, cold_fallback: bool = False) -> dict:
    spec: dict = {"drain": True, "drainPolicy": policy(live, cold_fallback),
                  "drainParallel": parallel}
    cluster.request("PATCH", host_path(host), f"drain host {host}", json_body={"spec": spec})
    click.echo(f"host {host}: spec.drain set (drainPolicy {spec['drainPolicy']}"
               + (f", {parallel} at a time" if parallel else "") + ")", err=True)
    return follow(cluster, host, timeout)


def _cluster(ctx: click.Context, kubeconfig: str | None, context: str | None) -> Cluster:
    o = dict(ctx.obj or {})
    cluster = Cluster(kubeconfig or o.get("kubeconfig") or os.environ.get("KUBECONFIG"),
                      context or o.get("context"))
    ctx.call_on_close(cluster.close)
    return cluster


@click.command()
@click.argument("host")
@click.option("--parallel", default=None, type=click.IntRange(1, 64),
              help="Instances moved at the same time (spec.drainParallel; default: the "
              "operator's --drain-parallel).")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait in all.")
@click.option("--live/--cold", default=True, show_default=True,
              help="Live-migrate the running Instances (--cold: stop and copy every one).")
@click.option("--cold-fallback/--no-cold-fallback", default=False, show_default=True,
              help="Migrate an Instance cold (its guest stopped and started again) when its "
              "live migration fails (drainPolicy LiveThenCold).")
@click.option("--kubeconfig", default=None, help="Path to the kubeconfig file.")
@click.option("--context", default=None, help="The kubeconfig context to use.")
@click.pass_context
def drain(ctx: click.Context, host: str, parallel: int | None, timeout: float, live: bool,
          cold_fallback: bool, kubeconfig: str | None, context: str | None) -> None:
    """Empty HOST for maintenance: set its spec.drain (nothing new is
    scheduled there; the operator moves each of its Instances to a host the
    scheduler picks, server groups respected: live-migrates the running
    ones, cold if that fails with --cold-fallback, cold-migrates the
    others) and follow its status.drain until it is Drained or Stuck.
    Ends it with kubectl kova uncordon HOST."""
    cluster = _cluster(ctx, kubeconfig, context)
    d = drain_host(cluster, host, parallel, timeout, live, cold_fallback)
    if d.get("phase") != DrainPhase.DRAINED:
        names = ", ".join(f"{e['namespace']}/{e['name']} ({e['reason']})"
                          for e in d.get("left") or [])
        raise PluginError(f"host {host} is draining but not empty: {names} cannot be moved "
                          "(see above); the operator tries them again now and then")
    click.echo(f"host {host} drained: {d.get('moved', 0)} instance(s) moved")


@click.command()
@click.argument("host")
@click.option("--kubeconfig", default=None, help="Path to the kubeconfig file.")
@click.option("--context", default=None, help="The kubeconfig context to use.")
@click.pass_context
def uncordon(ctx: click.Context, host: str, kubeconfig: str | None,
             context: str | None) -> None:
    """End HOST's drain (spec.drain: false) and let the scheduler place
    Instances there again (spec.enabled: true)."""
    cluster = _cluster(ctx, kubeconfig, context)
    cluster.request("PATCH", host_path(host), f"enable host {host}",
                    json_body={"spec": {"drain": False, "enabled": True,
                                        "disabledReason": None}})
    click.echo(f"host {host} enabled")
