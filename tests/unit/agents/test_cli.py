"""`kova agent run`: options and environment fallbacks; JSON logs."""

from __future__ import annotations

import json
import logging

from click.testing import CliRunner

from kova.cli import main
from kova.log import JSONFormatter


def test_agent_run_is_registered():
    res = CliRunner().invoke(main, ["agent", "run", "--help"])
    assert res.exit_code == 0, res.output
    for opt in ("--host", "--libvirt-uri", "--instance-dir", "--placement-url",
                "--placement-token", "--kubeconfig", "--domain-type", "--metrics-port",
                "--guest-vcpu-scheduler"):
        assert opt in res.output


def test_host_from_downward_api(monkeypatch):
    from kova.agents import cli

    monkeypatch.delenv("KOVA_HOST", raising=False)
    monkeypatch.setenv("NODE_NAME", "node-7")
    assert cli._default_host() == "node-7"
    monkeypatch.setenv("KOVA_HOST", "kova-3")
    assert cli._default_host() == "kova-3"


def test_network_and_bridge_exclusive(tmp_path):
    res = CliRunner().invoke(main, ["agent", "run", "--host", "h", "--network", "n",
                                    "--bridge", "b", "--instance-dir", str(tmp_path)])
    assert res.exit_code != 0 and "exclusive" in res.output


def test_guest_vcpu_scheduler_rejects_unknown_class(tmp_path):
    res = CliRunner().invoke(main, ["agent", "run", "--host", "h", "--instance-dir", str(tmp_path),
                                    "--guest-vcpu-scheduler", "fifo"])
    assert res.exit_code == 2 and "--guest-vcpu-scheduler" in res.output
    assert "'fifo' is not one of 'default', 'batch', 'idle'" in res.output


def test_json_log_lines():
    rec = logging.LogRecord("kova.agents.agent", logging.INFO, __file__, 1, "built %s", ("vm",),
                            None)
    out = json.loads(JSONFormatter().format(rec))
    assert out["message"] == "built vm" and out["level"] == "info"
    assert out["logger"] == "kova.agents.agent"


def test_image_ca_file_is_checked_at_start(tmp_path):
    args = ["agent", "run", "--host", "h", "--instance-dir", str(tmp_path)]
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    res = CliRunner().invoke(main, [*args, "--image-ca-file", str(bad)])
    assert res.exit_code == 2, res.output
    assert "--image-ca-file" in res.output and "cannot load it" in res.output
    # The same option from the environment (as the Helm chart sets it).
    res = CliRunner().invoke(main, args,
                             env={"KOVA_AGENT_IMAGE_CA_FILE": str(tmp_path / "missing.pem")})
    assert res.exit_code == 2, res.output
    assert "--image-ca-file" in res.output and "does not exist" in res.output


def test_stream_endpoint_needs_mutual_tls(tmp_path):
    cert = tmp_path / "agent.crt"
    cert.write_text("unused\n")
    res = CliRunner().invoke(main, ["agent", "run", "--host", "h", "--instance-dir",
                                    str(tmp_path), "--stream-cert-file", str(cert)])
    assert res.exit_code == 2, res.output
    assert "--stream-cert-file needs --stream-key-file and --stream-client-ca-file" in \
        res.output
    for opt in ("--vnc / --no-vnc", "--stream-port", "--stream-allowed-client",
                "KOVA_AGENT_STREAM_ADVERTISE_ADDRESS"):
        assert opt in CliRunner().invoke(main, ["agent", "run", "--help"]).output, opt


def test_image_source_settings_from_flags_and_environment(tmp_path):
    """--image-host-dir and the network lists repeat, or come from one
    variable holding several (as the chart and the tests set them); a value
    that is no CIDR is a usage error naming the flag."""
    import click

    from kova import settings as kova_settings
    from kova.agents.settings import PREFIX, AgentSettings

    seen = []

    @click.command()
    @kova_settings.options(AgentSettings, PREFIX)
    def probe(settings):
        seen.append(settings)

    res = CliRunner().invoke(probe, ["--host", "h", "--image-host-dir", "/a",
                                     "--image-host-dir", "/b",
                                     "--image-url-blocked-network", "10.96.0.0/12"])
    assert res.exit_code == 0, res.output
    assert seen[-1].image_host_dirs == ("/a", "/b")
    assert seen[-1].image_url_blocked_networks == ("10.96.0.0/12",)
    res = CliRunner().invoke(probe, ["--host", "h"], env={
        "KOVA_AGENT_IMAGE_HOST_DIRS": "/x /y",
        "KOVA_AGENT_IMAGE_URL_ALLOWED_NETWORKS": "127.0.0.0/8"})
    assert res.exit_code == 0, res.output
    assert seen[-1].image_host_dirs == ("/x", "/y")
    assert seen[-1].image_url_allowed_networks == ("127.0.0.0/8",)
    assert CliRunner().invoke(probe, ["--host", "h"]).exit_code == 0
    assert seen[-1].image_host_dirs == ("/var/lib/kova/images",)
    bad = CliRunner().invoke(probe, ["--host", "h", "--image-url-blocked-network", "10.0.0/x"])
    assert bad.exit_code == 2 and "--image-url-blocked-network" in bad.output, bad.output
