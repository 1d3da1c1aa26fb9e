"""Packaging: kova.<part> import names, wheel contents, no stdlib shadowing."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_component_import_names() -> None:
    import kova.agents
    import kova.crds
    import kova.operator.about
    import kova.placement

    assert Path(kova.operator.about.__file__).resolve().parent == ROOT / "operator"
    assert Path(kova.agents.__file__).resolve().parent == ROOT / "agents"
    assert Path(kova.crds.__file__).resolve().parent == ROOT / "crds"
    assert Path(kova.placement.__file__).resolve().parent == ROOT / "placement"


@pytest.mark.parametrize("flags", [[], ["-S"], ["-I"]])
def test_stdlib_operator_not_shadowed_from_repo_root(flags: list[str]) -> None:
    """Even with the project root as cwd (first on sys.path), ``import operator``
    is the standard library module, and ``kova.operator`` is ours."""
    code = (
        "import operator, sys, sysconfig, os\n"
        "assert operator.add(2, 3) == 5\n"
        "stdlib = os.path.realpath(sysconfig.get_paths()['stdlib'])\n"
        "assert os.path.realpath(operator.__file__).startswith(stdlib), operator.__file__\n"
        "print(operator.__file__)\n"
    )
    out = subprocess.run(
        [sys.executable, *flags, "-c", code], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_stdlib_operator_with_kova_operator_imported() -> None:
    code = (
        "import kova.operator.about, operator, os, sysconfig\n"
        "assert operator.add is not None and operator.itemgetter(0)([7]) == 7\n"
        "assert 'site-packages' not in operator.__file__ or False\n"
        "assert os.path.realpath(operator.__file__).startswith("
        "os.path.realpath(sysconfig.get_paths()['stdlib']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_wheel_build_maps_folders(tmp_path: Path) -> None:
    """A normal wheel build puts operator/ under kova/operator/ and has no
    top-level ``operator`` package; installed from it, everything imports."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(dist), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = dist.glob("kova-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "kova/operator/about.py" in names
    assert "kova/cli.py" in names
    assert "kova/placement/__init__.py" in names
    assert not any(n.startswith("operator/") for n in names), names

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, text=True,
    )
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import operator, os, sysconfig\n"
        "import kova.operator.about as a, kova.placement, kova.agents, kova.crds\n"
        "assert a.__file__.startswith(sys.argv[1]), a.__file__\n"
        "assert os.path.realpath(operator.__file__).startswith("
        "os.path.realpath(sysconfig.get_paths()['stdlib'])), operator.__file__\n"
        "assert operator.add(1, 1) == 2\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code, str(target)], cwd=tmp_path, capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr


COMPONENT_COMMANDS = [
    ["placement", "serve"], ["placement", "db", "upgrade"],
    ["operator", "run"], ["operator", "audit"],
    ["agent", "run"], ["crds", "generate"],
    ["dev", "up"], ["dev", "down"], ["dev", "status"],
]


@pytest.mark.parametrize("argv", COMPONENT_COMMANDS, ids=" ".join)
def test_cli_has_every_component_command(argv: list[str]) -> None:
    """Every component has its subcommand, with help text (none is a placeholder)."""
    from click.testing import CliRunner

    from kova.cli import main

    result = CliRunner().invoke(main, [*argv, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
