"""``kova crds ...``: commands contributed to the ``crds`` group of ``kova``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import generate as gen


def register(group: click.Group) -> None:
    """Add the crds commands to ``group`` (called by ``kova.cli``)."""

    @group.command(name="generate")
    @click.option(
        "--output-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=gen.GENERATED_DIR,
        show_default=True,
        help="Directory the CRD YAML files are written to (one file per kind).",
    )
    @click.option(
        "--check",
        is_flag=True,
        help="Write nothing; exit 1 if any file is missing or out of date.",
    )
    def generate(output_dir: Path, check: bool) -> None:
        """Write the CustomResourceDefinitions generated from kova.crds.models."""
        if check:
            problems = gen.check(output_dir)
            for problem in problems:
                click.echo(problem, err=True)
            if problems:
                click.echo("run `kova crds generate` to update them", err=True)
                sys.exit(1)
            click.echo(f"{len(gen.render_all())} CRDs in {output_dir} are up to date")
            return
        changed = gen.write(output_dir)
        for path in changed:
            click.echo(f"wrote {path}")
        if not changed:
            click.echo(f"{len(gen.render_all())} CRDs in {output_dir} already up to date")
