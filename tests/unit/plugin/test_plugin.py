"""``kubectl kova`` without a cluster: its help (what docs/using-your-vm.md
shows), and errors as one line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PLUGIN = str(Path(sys.executable).parent / "kubectl-kova")
COMMANDS = ("actions", "console", "eject", "logs", "migrate", "pause", "reboot", "resize", "restart",
            "snapshot", "start", "stop",
            "unpause", "vnc")
#: Commands about other things than one Instance (no -n/--namespace).
OTHER_COMMANDS = ("drain", "image", "uncordon")


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([PLUGIN, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_help_lists_every_command_as_kubectl_kova() -> None:
    out = run("--help")
    assert out.returncode == 0
    assert out.stdout.startswith("Usage: kubectl kova [OPTIONS] COMMAND")
    listed = {line.split()[0] for line in out.stdout.split("Commands:")[1].splitlines()
              if line.strip()}
    assert listed == set(COMMANDS) | set(OTHER_COMMANDS)
    for cmd in COMMANDS:
        sub = run(cmd, "--help")
        assert sub.returncode == 0 and sub.stdout.startswith(f"Usage: kubectl kova {cmd} ")
        assert "-n, --namespace" in sub.stdout


def test_errors_are_one_line(tmp_path: Path) -> None:
    missing = run("stop", "vm", "--kubeconfig", str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: cannot load the kubeconfig")
    assert "Traceback" not in missing.stderr
    # an API server that is not there
    kc = tmp_path / "kubeconfig"
    kc.write_text("""apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
""")
    for args in (("stop", "vm"), ("console", "vm"), ("actions", "vm")):
        out = run(*args, KUBECONFIG=str(kc))
        assert out.returncode == 1, out
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "127.0.0.1:9" in last and "Traceback" not in \
            out.stderr, out.stderr
    assert run("stop").returncode == 2  # click: missing NAME


def test_the_guide_shows_the_current_help() -> None:
    """docs/using-your-vm.md quotes every command's help as it is now."""
    doc = (Path(__file__).resolve().parents[3] / "docs" / "using-your-vm.md").read_text()
    for cmd in ("", *COMMANDS):
        out = run(*([cmd] if cmd else []), "--help").stdout.rstrip()
        assert f"$ kubectl kova{' ' + cmd if cmd else ''} --help\n{out}" in doc or (
            not cmd and out in doc), f"docs/using-your-vm.md: help of {cmd or 'kubectl kova'}"


def test_snapshot_sends_quiesce_only_when_given() -> None:
    """Without --quiesce the API component takes the mode from the
    instance's image (properties.requireQuiesce), so none is sent."""
    from kova.plugin.main import snapshot_query

    assert snapshot_query("golden", None) == {"image": "golden"}
    assert snapshot_query("golden", "off") == {"image": "golden", "quiesce": "off"}
    out = run("snapshot", "--help").stdout
    assert "[default: auto]" not in out
    assert "Not given: as" in out and "properties.requireQuiesce" in out
