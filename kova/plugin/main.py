"""``kubectl kova``: reach Kova's virtual machines through the Kubernetes API.

Installed with Kova as the ``kubectl-kova`` command, which kubectl runs for
``kubectl kova ...`` (krew's plugin conventions: one executable on PATH,
``kubectl kova --help``).  Every command goes through the API server with
the current kubeconfig, so RBAC decides who may do what: ``instances/console``,
``instances/vnc``, ``instances/log`` and ``instances/<action>`` in the group
``subresources.kova.dev``.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import sys

import click

from kova.crds import names
from kova.crds.names import GROUP, VERSION
from kova.plugin.client import Cluster, PluginError
from kova.plugin.drain import drain as drain_command
from kova.plugin.drain import uncordon as uncordon_command
from kova.plugin.images import image as image_group

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100,
           "terminal_width": 100}


class Group(click.Group):
    """Errors as one ``error: ...`` line and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except PluginError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(exc.code)
        except KeyboardInterrupt:
            sys.exit(130)
        except click.exceptions.Exit:
            raise
        except (click.ClickException, click.Abort):
            raise
        except Exception as exc:  # a bug: one line for the user, details on demand
            if os.environ.get("KOVA_DEBUG"):
                raise
            click.echo(f"error: {type(exc).__name__}: {exc} (KOVA_DEBUG=1 shows where)",
                       err=True)
            sys.exit(1)


@click.group(cls=Group, context_settings=CONTEXT)
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None,
              help="Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config).")
@click.option("--context", default=None, help="The kubeconfig context to use.")
@click.option("-n", "--namespace", default=None,
              help="Namespace of the Instance (default: the context's namespace).")
@click.pass_context
def main(ctx: click.Context, kubeconfig: str | None, context: str | None,
         namespace: str | None) -> None:
    """Use Kova's virtual machines: serial console, VNC display, power
    actions, console log and action history of an Instance.

    \b
    Examples:
      kubectl kova console web-1          # serial console (Ctrl+] detaches)
      kubectl kova vnc web-1              # a local port for a VNC viewer
      kubectl kova stop web-1             # and start, restart, reboot, pause, unpause
      kubectl kova eject web-1            # an installer is done: empty its CD-ROM
      kubectl kova logs -f web-1          # the serial console log, followed
      kubectl kova actions web-1          # who did what, when
      kubectl kova resize web-1 --flavor m1.large   # then --confirm or --revert
      kubectl kova migrate web-1 --host node-2      # cold migration
    """
    ctx.obj = {"kubeconfig": kubeconfig, "context": context, "namespace": namespace}


def _cluster(ctx: click.Context) -> Cluster:
    o = dict(ctx.obj or {})
    for key in ("kubeconfig", "context", "namespace"):  # the command's own flags win
        if ctx.params.get(key):
            o[key] = ctx.params[key]
    cluster = Cluster(o.get("kubeconfig"), o.get("context"), o.get("namespace"))
    ctx.call_on_close(cluster.close)
    return cluster


def cluster_options(f):
    """-n/--namespace, --context, --kubeconfig after the command too, as
    kubectl takes them (``kubectl kova console -n prod web-1``)."""
    f = click.option("-n", "--namespace", default=None, help="Namespace of the Instance.")(f)
    f = click.option("--context", default=None, help="The kubeconfig context to use.")(f)
    return click.option("--kubeconfig", default=None, help="Path to the kubeconfig file.")(f)


@main.command()
@click.argument("name")
@click.option("--read-only", is_flag=True,
              help="Watch without typing (any number of readers; one writer at a time).")
@cluster_options
@click.pass_context
def console(ctx: click.Context, name: str, read_only: bool, **_: str) -> None:
    """Attach to the serial console of instance NAME.

    The session is shared: everyone attached sees what the guest prints; one
    of them at a time may type. Ctrl+] detaches; the VM keeps running."""
    from kova.plugin.terminal import console as run

    cluster = _cluster(ctx)
    sys.exit(run(cluster, cluster.namespace, name, read_only))


@main.command()
@click.argument("name")
@click.option("--proxy-only", is_flag=True,
              help="Only open the local port; start no viewer.")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="Local port (0: any free one).")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Local address to listen on.")
@cluster_options
@click.pass_context
def vnc(ctx: click.Context, name: str, proxy_only: bool, port: int, address: str,
        **_: str) -> None:
    """Open the VNC display of instance NAME on a local port.

    Prints the address for any VNC viewer and starts one found on PATH
    (remote-viewer, vncviewer, ...) unless --proxy-only."""
    from kova.plugin.terminal import vnc as run

    cluster = _cluster(ctx)
    sys.exit(run(cluster, cluster.namespace, name, address, port, proxy_only))


ACTION_HELP = {
    "start": "Start instance NAME (runStrategy Halted becomes Always; Manual: power on).",
    "stop": "Stop instance NAME: ACPI shutdown, powered off after a grace period "
            "(runStrategy Always/RerunOnFailure becomes Halted; Manual: power off).",
    "restart": "Restart instance NAME hard: power off and start (applies spec changes "
               "waiting for a restart).",
    "reboot": "Reboot instance NAME softly: ACPI shutdown, powered off after a grace "
              "period, then started.",
    "pause": "Pause instance NAME (its vCPUs stop; memory stays).",
    "unpause": "Let paused instance NAME run again.",
}
PROGRESS = {"start": "starting", "stop": "stopping", "restart": "restarting",
            "reboot": "rebooting", "pause": "pausing", "unpause": "unpausing"}


def _power_command(action: str) -> click.Command:
    @click.argument("name")
    @cluster_options
    @click.pass_context
    def command(ctx: click.Context, name: str, **_: str) -> None:
        cluster = _cluster(ctx)
        ns = cluster.namespace
        click.echo(f"{PROGRESS[action]} instance {ns}/{name} ...", err=True)
        out = cluster.request("PUT", cluster.subresource_path(ns, name, action),
                              f"{action} instance {ns}/{name}")
        click.echo(f"instance.{GROUP}/{name} {action}: {out.get('message')} (powerState "
                   f"{out.get('powerState') or '-'}, request {out.get('requestId')})")

    command.__doc__ = ACTION_HELP[action]
    return click.command(name=action)(command)


for _action in ACTION_HELP:
    main.add_command(_power_command(_action))


@main.command()
@click.argument("name")
@cluster_options
@click.pass_context
def eject(ctx: click.Context, name: str, **_: str) -> None:
    """Eject the CD-ROM of instance NAME, booted from an iso Image (an
    installer that is done): the drive stays, empty, and the guest boots
    from its root disk from then on, across restarts and moves."""
    cluster = _cluster(ctx)
    ns = cluster.namespace
    click.echo(f"ejecting the CD-ROM of instance {ns}/{name} ...", err=True)
    out = cluster.request("PUT", cluster.subresource_path(ns, name, "eject"),
                          f"eject the CD-ROM of instance {ns}/{name}")
    click.echo(f"instance.{GROUP}/{name} eject: {out.get('message')} (powerState "
               f"{out.get('powerState') or '-'}, request {out.get('requestId')})")


@main.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the guest prints.")
@click.option("--tail-bytes", type=click.IntRange(min=0), default=None,
              help="Only the last N bytes of the log.")
@cluster_options
@click.pass_context
def logs(ctx: click.Context, name: str, follow: bool, tail_bytes: int | None,
         **_: str) -> None:
    """Print the serial console log of instance NAME (everything the guest
    printed since it was built)."""
    cluster = _cluster(ctx)
    ns = cluster.namespace
    query = {"follow": "true" if follow else "false"}
    if tail_bytes is not None:
        query["tailBytes"] = str(tail_bytes)
    out = sys.stdout.buffer
    for chunk in cluster.stream(cluster.subresource_path(ns, name, "log"),
                                f"log of instance {ns}/{name}", query):
        out.write(chunk)
        out.flush()


@main.command()
@click.argument("name")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@cluster_options
@click.pass_context
def actions(ctx: click.Context, name: str, output: str, **_: str) -> None:
    """Show the action history of instance NAME (its status.actions: the last
    20 power actions and scheduling decisions, oldest first)."""
    cluster = _cluster(ctx)
    inst = cluster.get_instance(cluster.namespace, name)
    history = (inst.get("status") or {}).get("actions") or []
    if output == "json":
        click.echo(json.dumps(history, indent=2))
        return
    if not history:
        click.echo(f"no actions recorded for instance {cluster.namespace}/{name}")
        return
    rows = [("ACTION", "USER", "START", "DURATION", "RESULT", "MESSAGE")]
    for a in history:
        rows.append((a.get("action", ""), a.get("user", ""), a.get("startTime", ""),
                     _duration(a.get("startTime"), a.get("finishTime")), a.get("result", ""),
                     a.get("message", "")))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        click.echo("  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + r[5])


def _follow_move(cluster: Cluster, ns: str, name: str, timeout: float,
                 generation: int = 0) -> dict:
    """Print each step of the Instance's move until it waits for a confirm
    or revert (or ends: no move recorded, and the Resized condition speaks of
    spec ``generation`` or later); the Instance as it is then."""
    import time

    deadline = time.monotonic() + timeout
    seen = None
    while True:
        inst = cluster.get_instance(ns, name)
        status = inst.get("status") or {}
        mig = status.get("migration") or {}
        cond: dict = next((c for c in status.get("conditions") or []
                           if c.get("type") == "Resized"), {})
        started = mig or int(cond.get("observedGeneration") or 0) >= generation
        now = (status.get("phase"), mig.get("step"), mig.get("destHost"),
               _live_progress(mig.get("progress")))
        if now != seen:
            click.echo(f"  phase {now[0] or '-'}, step {now[1] or '-'}"
                       + (f", destination {now[2]}" if now[2] else "") + now[3], err=True)
            seen = now
        if started and (not mig or mig.get("step") == "Verify"):
            return inst
        if time.monotonic() > deadline:
            raise PluginError(f"instance {ns}/{name}: the move is still at step "
                              f"{mig.get('step')} after {timeout:.0f}s")
        time.sleep(1.0)


def _live_progress(progress: dict | None) -> str:
    """A live migration's progress as kubectl kova migrate --live prints it."""
    if not progress:
        return ""
    mem, disk = (int(progress.get(k) or 0) // (1024 * 1024)
                 for k in ("memoryRemainingBytes", "diskRemainingBytes"))
    out = (f", {progress.get('phase')}: memory {mem} MiB left, disk {disk} MiB left, "
           f"iteration {progress.get('iteration') or 0}")
    if progress.get("downtimeMs") is not None:
        out += f", downtime {progress['downtimeMs']} ms"
    return out


def _move_result(inst: dict, ns: str, name: str, aborted: bool = False) -> None:
    status = inst.get("status") or {}
    res = status.get("resources") or {}
    cond: dict = next((c for c in status.get("conditions") or []
                       if c.get("type") == "Resized"), {})
    click.echo(f"instance.{GROUP}/{name}: phase {status.get('phase')} on "
               f"{status.get('host')} ({res.get('vcpus')} vCPU, {res.get('memoryMiB')} MiB, "
               f"{res.get('diskGiB')} GiB): {cond.get('message', '')}")
    if (status.get("migration") or {}).get("step") == "Verify":
        click.echo(f"confirm with: kubectl kova resize -n {ns} {name} --confirm "
                   "(or --revert)")
    if cond.get("reason") == names.REASON_LIVE_MIGRATION_FAILED and not aborted:
        raise PluginError(f"instance {ns}/{name}: {cond.get('message')}")


@main.command()
@click.argument("name")
@click.option("--flavor", default=None, help="Resize to this Flavor (sets spec.flavorRef).")
@click.option("--confirm", "decision", flag_value="resize-confirm",
              help="Keep the new size (or host): the old allocation is freed.")
@click.option("--revert", "decision", flag_value="resize-revert",
              help="Go back to the old size, host and disk.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="After --flavor: follow the resize until it waits for a confirm.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to follow it.")
@cluster_options
@click.pass_context
def resize(ctx: click.Context, name: str, flavor: str | None, decision: str | None,
           wait: bool, timeout: float, **_: str) -> None:
    """Resize instance NAME (--flavor), or answer a resize or cold migration
    waiting in ResizeVerify (--confirm, --revert).

    A resize stops the guest, grows its disk, and starts it at the new size;
    it then waits for --confirm or --revert (or is confirmed on its own after
    the operator's --resize-confirm-window)."""
    cluster = _cluster(ctx)
    ns = cluster.namespace
    if bool(flavor) == bool(decision):
        raise PluginError("give either --flavor F, or --confirm or --revert")
    if decision:
        word = "confirming" if decision == "resize-confirm" else "reverting"
        click.echo(f"{word} the move of instance {ns}/{name} ...", err=True)
        cluster.request("PUT", cluster.subresource_path(ns, name, decision),
                        f"{decision} instance {ns}/{name}")
        _move_result(cluster.get_instance(ns, name), ns, name)
        return
    patched = cluster.request("PATCH", cluster.instance_path(ns, name),
                              f"resize instance {ns}/{name}",
                              json_body={"spec": {"flavorRef": {"name": flavor}}})
    click.echo(f"resizing instance {ns}/{name} to Flavor {flavor} ...", err=True)
    if wait:
        generation = int((patched or {}).get("metadata", {}).get("generation") or 0)
        _move_result(_follow_move(cluster, ns, name, timeout, generation), ns, name)


@main.command()
@click.argument("name")
@click.option("--host", default=None, help="The destination Host (default: the scheduler's "
              "choice).")
@click.option("--live", is_flag=True, help="Live-migrate: the guest keeps running while "
              "its memory and disk are copied (no confirm).")
@click.option("--abort", is_flag=True, help="Abort the live migration under way (the guest "
              "stays on its source).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Follow the migration until it waits for a confirm (or, live, ends).")
@click.option("--timeout", default=900.0, show_default=True, help="Seconds to follow it.")
@cluster_options
@click.pass_context
def migrate(ctx: click.Context, name: str, host: str | None, live: bool, abort: bool,
            wait: bool, timeout: float, **_: str) -> None:
    """Cold-migrate instance NAME to another host: stop it, copy its disk
    agent to agent, start it there; then confirm or revert with kubectl kova
    resize --confirm/--revert (docs/moving.md).  With --live it keeps
    running while it moves, and the move needs no confirm; --abort stops a
    live migration under way.  --host is for administrators (RBAC verb
    schedule on instances)."""
    cluster = _cluster(ctx)
    ns = cluster.namespace
    if abort:
        click.echo(f"aborting the live migration of instance {ns}/{name} ...", err=True)
        cluster.request("PUT", cluster.subresource_path(ns, name, "migrate"),
                        f"abort the live migration of {ns}/{name}", query={"abort": "true"})
        _move_result(cluster.get_instance(ns, name), ns, name, aborted=True)
        return
    click.echo(f"{'live-' if live else ''}migrating instance {ns}/{name}"
               + (f" to {host}" if host else "") + " ...", err=True)
    query = {**({"host": host} if host else {}), **({"live": "true"} if live else {})}
    cluster.request("PUT", cluster.subresource_path(ns, name, "migrate"),
                    f"migrate instance {ns}/{name}", query=query or None)
    if wait:
        inst = _follow_move(cluster, ns, name, timeout)
        _move_result(inst, ns, name)
        cond: dict = next((c for c in (inst.get("status") or {}).get("conditions") or []
                     if c.get("type") == "Resized"), {})
        if live and cond.get("status") == "False":
            raise PluginError(f"instance {ns}/{name}: {cond.get('reason')}: "
                              f"{cond.get('message')}")


def _duration(start: str | None, finish: str | None) -> str:
    if not start or not finish:
        return "-"
    parse = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return f"{(parse(finish) - parse(start)).total_seconds():.0f}s"


@main.command()
@click.argument("name")
@click.option("--image", "image", required=True,
              help="Name of the TenantImage to create in the Instance's namespace.")
@click.option("--quiesce", type=click.Choice([m.value for m in names.SnapshotQuiesce]),
              default=None,
              help="Freeze the guest's filesystems through its QEMU guest agent while "
              "the copy starts: required (refused without an agent), auto (when an "
              "agent answers; crash-consistent otherwise) or off.  Not given: as the "
              "instance's Image or TenantImage says -- required when its "
              "properties.requireQuiesce is true (Glance's os_require_quiesce; auto and "
              "off are then refused), auto otherwise.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Follow the snapshot until it is stored (or failed).")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to follow it.")
@cluster_options
@click.pass_context
def snapshot(ctx: click.Context, name: str, image: str, quiesce: str | None, wait: bool,
             timeout: float, **_: str) -> None:
    """Save the root disk of instance NAME as TenantImage IMAGE of its
    namespace: the disk is copied, as it is when the copy starts, into one
    standalone qcow2 while the guest runs (a stopped instance stays
    stopped), which goes to Kova's image store; new Instances then boot from
    it with imageRef {name: IMAGE, kind: TenantImage}.  A guest running the
    QEMU guest agent has its filesystems frozen while the copy starts
    (--quiesce).  The request is accepted at once; the snapshot is followed
    in the Instance's action history (kubectl kova actions).

    \b
    Example:
      kubectl kova snapshot web-1 --image web-golden --quiesce required
    """
    cluster = _cluster(ctx)
    ns = cluster.namespace
    click.echo(f"snapshotting instance {ns}/{name} into TenantImage {image} ...", err=True)
    out = cluster.request("PUT", cluster.subresource_path(ns, name, "snapshot"),
                          f"snapshot instance {ns}/{name}",
                          query=snapshot_query(image, quiesce))
    req = out.get("requestId")
    if not wait:
        click.echo(f"snapshot of instance {ns}/{name} into TenantImage {image} accepted "
                   f"(request {req}); follow it with: kubectl kova actions -n {ns} {name}")
        return
    entry = _follow_action(cluster, ns, name, req, timeout)
    if entry.get("result") != "Success":
        raise PluginError(f"snapshot of instance {ns}/{name} into TenantImage {image} "
                          f"failed: {entry.get('message')} (request {req})")
    sha = None
    try:
        img = cluster.request("GET", f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/"
                              f"{names.TENANT_IMAGES}/{image}", f"tenantimage {ns}/{image}")
        sha = (img.get("spec") or {}).get("sha256")
    except PluginError:
        pass  # the result is known; the checksum is a detail
    click.echo(f"tenantimage.{GROUP}/{image} created from instance {ns}/{name}: "
               f"{entry.get('message')} (sha256 {sha}, request {req})")


def snapshot_query(image: str, quiesce: str | None) -> dict[str, str]:
    """The query of ``instances/snapshot``: ``quiesce`` only when given (the
    API component otherwise takes it from the instance's image)."""
    return {"image": image, **({"quiesce": quiesce} if quiesce else {})}


def snapshot_progress(snap: dict) -> str:
    """``status.snapshot`` in words: ``uploading 45% (12.0 of 26.5 MiB)``."""
    phase = str(snap.get("phase") or "").lower()
    done, total = int(snap.get("bytesDone") or 0), int(snap.get("bytesTotal") or 0)
    if not total:
        return phase
    mib = 1 << 20
    return f"{phase} {done * 100 // total}% ({done / mib:.1f} of {total / mib:.1f} MiB)"


def _follow_action(cluster: Cluster, ns: str, name: str, req: str | None,
                   timeout: float) -> dict:
    """Instance ``ns/name``'s action ``req`` once it has ended, with a
    progress line on stderr meanwhile: the Instance is watched, so its end
    is seen as soon as the API component records it."""
    import time

    t0 = time.monotonic()
    shown, phase = -5.0, None
    for inst in cluster.instances(ns, name, wake=0.5):
        status = inst.get("status") or {}
        entry = next((a for a in status.get("actions") or [] if a.get("requestId") == req),
                     None)
        snap = status.get("snapshot") or {}
        progress = snapshot_progress(snap) if snap.get("requestId") == req else ""
        if progress and snap.get("phase") != phase:
            shown, phase = -5.0, snap.get("phase")  # a new phase: shown at once
        if entry is None:
            raise PluginError(f"instance {ns}/{name}: action {req} is no longer in its "
                              "history")
        if entry.get("result") != "InProgress":
            return entry
        elapsed = time.monotonic() - t0
        if elapsed > timeout:
            raise PluginError(f"instance {ns}/{name}: {entry.get('action')} still in "
                              f"progress after {timeout:.0f}s (request {req}); follow it "
                              f"with: kubectl kova actions -n {ns} {name}")
        if elapsed - shown >= 5:
            click.echo(f"  {entry.get('action')} in progress, {elapsed:.0f}s"
                       + (f", {progress}" if progress else "")
                       + f" ({entry.get('message')})", err=True)
            shown = elapsed
    raise AssertionError("Cluster.instances ends only by raising")


main.add_command(image_group)
main.add_command(drain_command)
main.add_command(uncordon_command)


def run() -> None:
    """The ``kubectl-kova`` entry point (kubectl shows it as ``kubectl kova``).

    Once the command is done the process ends at once: the ``atexit``
    handlers run (the kubeconfig loader's temporary files go) and stdout
    and stderr are flushed, but the interpreter does not tear down every
    module it imported one by one, which took 0.1-0.3 s of each command."""
    try:
        main(prog_name="kubectl kova")
        code: int = 0
    except SystemExit as exc:
        code = _exit_status(exc.code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1  # stdout closed early (| head): as Python itself says
    os._exit(code)


def _exit_status(code: object) -> int:
    """The exit status ``sys.exit(code)`` gives: a message is printed."""
    if code is None or isinstance(code, int):
        return int(code or 0)
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    run()
