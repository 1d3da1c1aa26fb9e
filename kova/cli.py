"""The ``kova`` command line: one subcommand group per component.

Each component contributes its own commands through ``register(group)``:
``kova.placement.cli``, ``kova.operator.cli``, ``kova.agents.cli``, ``kova.api.cli``,
``kova.images.cli``, ``kova.crds.cli`` and ``kova.dev.cli``.  They are imported when the group is
built, so ``kova --help`` lists everything.
"""

from __future__ import annotations

import click

from kova import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kova")
def main() -> None:
    """Kova: virtual machines on bare-metal Kubernetes."""


@main.group()
def placement() -> None:
    """The Placement service (OpenStack Placement compatible)."""


@main.group(name="operator")
def operator_() -> None:
    """The scheduler, conductor and host monitor (kopf)."""


@main.group()
def agent() -> None:
    """The compute agent that drives libvirt/QEMU on a host."""


@main.group()
def api() -> None:
    """The subresource API (console, VNC, power actions) behind an APIService."""


@main.group()
def images() -> None:
    """The image store (image files for the agents; uploads)."""


@main.group()
def crds() -> None:
    """The CustomResourceDefinitions generated from the pydantic models."""


@main.group()
def dev() -> None:
    """The local development stack (control plane, Placement, operator, agents)."""


def _register_all() -> None:
    from kova.agents import cli as agent_cli
    from kova.api import cli as api_cli
    from kova.crds import cli as crds_cli
    from kova.dev import cli as dev_cli
    from kova.images import cli as images_cli
    from kova.operator import cli as operator_cli
    from kova.placement import cli as placement_cli

    placement_cli.register(placement)
    operator_cli.register(operator_)
    agent_cli.register(agent)
    api_cli.register(api)
    images_cli.register(images)
    crds_cli.register(crds)
    dev_cli.register(dev)


_register_all()


if __name__ == "__main__":  # pragma: no cover
    main()
