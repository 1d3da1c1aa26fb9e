"""`kubectl kova image upload`: formats from file names, the progress line,
and clear errors before anything is sent."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from kova.plugin.client import PluginError
from kova.plugin.images import Progress, guess_format
from kova.plugin.main import main


@pytest.mark.parametrize(("name", "fmt"), [("a.qcow2", "qcow2"), ("b.IMG", "raw"),
                                           ("c.vmdk", "vmdk"), ("d.vhd", "vpc"),
                                           ("e.vhdx", "vhdx"), ("f.vdi", "vdi")])
def test_format_from_the_file_name(name, fmt):
    assert guess_format(Path(name)) == fmt


def test_unknown_suffix_asks_for_format():
    with pytest.raises(PluginError, match="give --format"):
        guess_format(Path("disk.bin"))


def test_progress_lines():
    out = io.StringIO()
    p = Progress("img", 4 << 20, out)
    for _ in range(4):
        p.add(1 << 20)
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith("uploading img: 100.0% 4.0 of 4.0 MiB, ") and "MiB/s" in last


def test_missing_file_and_missing_store_are_usage_errors(tmp_path):
    res = CliRunner().invoke(main, ["image", "upload", str(tmp_path / "nope.qcow2"),
                                    "--name", "x"], env={"KOVA_IMAGE_STORE": ""})
    assert res.exit_code == 2 and "--store" in res.output
