"""The chart as released: `helm package` versioned with Kova and its image."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from kova.dev.cluster import kova_version
from tests.support.chart import CHART, render

REPO = Path(__file__).resolve().parents[3]


def test_package_is_versioned_with_the_image(tmp_path):
    out = subprocess.run(["bash", str(REPO / "hack" / "package-chart.sh"), str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    archive = Path(out.stdout.strip().splitlines()[-1])
    version = kova_version()
    assert archive == tmp_path / f"kova-{version}.tgz" and archive.exists()
    with tarfile.open(archive) as tar:
        chart = yaml.safe_load(tar.extractfile("kova/Chart.yaml"))
        names = tar.getnames()
    assert chart["version"] == version and chart["appVersion"] == version
    # what a user installs: the CRDs, the templates, the values and their schema
    for name in ("kova/crds/kova.dev_instances.yaml", "kova/templates/agent.yaml",
                 "kova/values.yaml", "kova/values.schema.json"):
        assert name in names
    # the source chart says the same, and the version is the package's
    source = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert source["version"] == source["appVersion"] == version
    cli = subprocess.run([sys.executable, "-m", "kova.cli", "--version"],
                         capture_output=True, text=True)
    assert version in cli.stdout


def test_default_image_tag_is_the_app_version():
    images = {c["image"] for o in render() if o["kind"] in ("Deployment", "DaemonSet")
              for c in o["spec"]["template"]["spec"]["containers"]}
    assert images == {f"kova:{kova_version()}"}
