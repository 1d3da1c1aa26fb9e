"""kube-score over every values combination of the chart: no warning or
critical finding that .kube-score.yaml does not explain."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.support.chart import COMBINATIONS, REPO, dump, render, tool

CONFIG = yaml.safe_load((REPO / ".kube-score.yaml").read_text())


def test_every_exclusion_is_explained() -> None:
    for entry in CONFIG["ignore"]:
        assert entry["check"] and len(entry["reason"].split()) >= 15, entry
    for entry in CONFIG["annotations"]:
        assert entry["object"] and entry["checks"] and len(entry["reason"].split()) >= 15, entry
    for combo, entry in CONFIG["combinations"].items():
        assert combo in COMBINATIONS and len(entry["reason"].split()) >= 15, combo


def _annotated(objs) -> dict[str, set[str]]:
    out = {}
    for obj in objs:
        ann = (obj["metadata"].get("annotations") or {}).get("kube-score/ignore")
        if ann:
            out[f"{obj['kind']} {obj['metadata']['name']}"] = set(ann.split(","))
    return out


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_kube_score_finds_nothing_unexplained(combo: str, tmp_path) -> None:
    objs = render(COMBINATIONS[combo])
    # per-object exclusions must be the documented ones
    documented = {e["object"].split(" (")[0].replace("<release>", "kova"): set(e["checks"])
                  for e in CONFIG["annotations"]}
    for obj, checks in _annotated(objs).items():
        assert obj in documented and checks == documented[obj], (obj, checks)

    manifest = tmp_path / "chart.yaml"
    manifest.write_text(dump(objs))
    args = [tool("kube-score"), "score", str(manifest), "--output-format", "ci",
            "--exit-one-on-warning"]
    for entry in CONFIG["ignore"]:
        args += ["--ignore-test", entry["check"]]
    for check in CONFIG["combinations"].get(combo, {}).get("checks", []):
        args += ["--ignore-test", check]
    for check in CONFIG["enable"]:
        args += ["--enable-optional-test", check]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    findings = [line for line in proc.stdout.splitlines()
                if re.match(r"\[(WARNING|CRITICAL)\]", line)]
    assert not findings and proc.returncode == 0, "\n".join(findings) or proc.stderr
    assert "[OK]" in proc.stdout


def test_kube_score_has_teeth(tmp_path) -> None:
    """A container without limits, running as root, is reported."""
    objs = render()
    (dep,) = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "kova-operator"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    del c["resources"]["limits"]
    c["securityContext"]["runAsUser"] = 0
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(dump([dep]))
    proc = subprocess.run([tool("kube-score"), "score", str(manifest), "--output-format", "ci"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "CPU limit is not set" in proc.stdout and "low user ID" in proc.stdout
