"""Fixtures of the subresource API tests: the agent test harness (an
in-process agent on libvirt's test driver, a real API server) and a VM on
it whose agent serves the stream endpoint the session's API component
reaches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agents.conftest import Harness, harness, small_image  # noqa: F401
from tests.helpers import wait_for

PLUGIN = str(Path(sys.executable).parent / "kubectl-kova")


def plugin(user_or_kubeconfig, *args: str, timeout: float = 120,
           input: str | None = None) -> subprocess.CompletedProcess:
    """``kubectl-kova`` as the user of ``user_or_kubeconfig`` would run it."""
    kc = getattr(user_or_kubeconfig, "kubeconfig", user_or_kubeconfig)
    env = {**os.environ, "KUBECONFIG": str(kc)}
    env.pop("KOVA_DEBUG", None)
    return subprocess.run([PLUGIN, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, input=input)


class VM:
    """An Instance Running on the harness's agent (libvirt's test driver)."""

    def __init__(self, h: Harness, name: str, agent) -> None:
        self.h, self.name, self.agent = h, name, agent

    def obj(self) -> dict:
        return self.h.get(self.name) or {}

    def status(self) -> dict:
        return self.obj().get("status") or {}

    def wait_power(self, state: str, timeout: float = 20) -> dict:
        return wait_for(lambda: self.status().get("powerState") == state and self.status(),
                        timeout, 0.1, f"{self.name} powerState {state}")


@pytest.fixture
def vm(harness, small_image, kova_api, namespace) -> VM:  # noqa: F811
    pki = kova_api.pki
    agent = harness.agent(stream_cert_file=str(pki.agent_crt), stream_key_file=str(pki.agent_key),
                          stream_client_ca_file=str(pki.ca_crt), stream_port=0,
                          stream_bind="127.0.0.1")
    image = f"img-{namespace[-6:]}"
    harness.image(image, small_image)
    harness.instance("vm", image)
    harness.wait_phase("vm", "Running")
    wait_for(lambda: ((harness.host_obj() or {}).get("status") or {}).get("streamEndpoint"),
             30, 0.2, "the Host's streamEndpoint")
    return VM(harness, "vm", agent)
