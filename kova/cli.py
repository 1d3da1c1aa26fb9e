"""The ``kova`` command line: one subcommand group per component."""

from __future__ import annotations

import sys

import click

from kova import __version__


def _not_yet(what: str, issue: int) -> None:
    """Placeholder for a subcommand a later issue fills: say so and fail."""
    click.echo(
        f"kova {what}: not implemented yet (tracked in issue #{issue}); "
        "nothing was done.",
        err=True,
    )
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kova")
def main() -> None:
    """Kova: virtual machines on bare-metal Kubernetes."""


# --------------------------------------------------------------------------
# placement
@main.group()
def placement() -> None:
    """The Placement service (OpenStack Placement compatible)."""


def _load_placement_cli() -> None:
    """kova.placement may contribute its own commands (serve, db ...)."""
    try:
        from kova.placement import cli as placement_cli  # type: ignore[attr-defined]
    except ImportError:
        return
    placement_cli.register(placement)


_load_placement_cli()


# --------------------------------------------------------------------------
# operator
@main.group(name="operator")
def operator_() -> None:
    """The scheduler, conductor and host monitor (kopf)."""


def _load_operator_cli() -> None:
    try:
        from kova.operator import cli as operator_cli  # type: ignore[attr-defined]
    except ImportError:
        @operator_.command(name="run")
        def operator_run() -> None:
            """Run the operator (not implemented yet)."""
            _not_yet("operator run", 6)

        @operator_.command(name="audit")
        def operator_audit() -> None:
            """Audit allocations against Instances (not implemented yet)."""
            _not_yet("operator audit", 6)
        return
    operator_cli.register(operator_)


_load_operator_cli()


# --------------------------------------------------------------------------
# agent
@main.group()
def agent() -> None:
    """The compute agent that drives libvirt/QEMU on a host."""


def _load_agent_cli() -> None:
    try:
        from kova.agents import cli as agent_cli  # type: ignore[attr-defined]
    except ImportError:
        @agent.command(name="run")
        def agent_run() -> None:
            """Run the compute agent (not implemented yet)."""
            _not_yet("agent run", 7)
        return
    agent_cli.register(agent)


_load_agent_cli()


# --------------------------------------------------------------------------
# crds
@main.group()
def crds() -> None:
    """The CustomResourceDefinitions generated from the pydantic models."""


def _load_crds_cli() -> None:
    try:
        from kova.crds import cli as crds_cli  # type: ignore[attr-defined]
    except ImportError:
        @crds.command(name="generate")
        def crds_generate() -> None:
            """Write the CRD YAML (not implemented yet)."""
            _not_yet("crds generate", 5)
        return
    crds_cli.register(crds)


_load_crds_cli()


# --------------------------------------------------------------------------
# dev
@main.group()
def dev() -> None:
    """The local development stack (control plane, Postgres, libvirt)."""


from kova.dev import cli as _dev_cli  # noqa: E402

_dev_cli.register(dev)


if __name__ == "__main__":  # pragma: no cover
    main()
