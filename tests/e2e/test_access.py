"""A user reaches a real VM: ``kubectl kova`` (found by kubectl on PATH, as
krew installs it) through the real API server and the session's API
component to the agent of a one-host stack, whose guest (the test image,
QEMU under software emulation) has a shell on its serial console and on its
VGA console.

Driven as a person would: the console through a pty (pexpect), the screen
with a VNC client (vncdotool), the power actions and the console log with
the plugin. The user is a ServiceAccount bound to kova-edit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pexpect
import pytest

from kova.dev import paths
from tests.helpers import BOOT_TIMEOUT, wait_for
from tests.support.stacks import kova_editor, one_host_stack, temp_namespace

PROMPT = "vm:/# "


@pytest.fixture(scope="module")
def ns(kubectl):
    with temp_namespace(kubectl, "access-e2e") as name:
        yield name


@pytest.fixture(scope="module")
def stack(k8s, kova_crds, kova_api, libvirtd, test_image, ns, tmp_path_factory):
    root = tmp_path_factory.mktemp("access-stack")
    with one_host_stack(k8s, kova_api, ns, root, "access", log_lines=15) as st:
        yield st


class Session:
    """The module's VM and its user."""

    def __init__(self, namespace: str, user, kubectl, image: str) -> None:
        self.ns, self.user, self.kubectl, self.image = namespace, user, kubectl, image
        self.env = {**os.environ, "KUBECONFIG": str(user.kubeconfig),
                    "PATH": f"{Path(sys.executable).parent}:{paths.bin_dir()}:"
                            f"{os.environ.get('PATH', '')}"}

    def kova(self, *args: str, timeout: float = 300) -> tuple[int, str, str]:
        import subprocess

        proc = subprocess.run([paths.kubectl(), "kova", *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout)
        return proc.returncode, proc.stdout, proc.stderr

    def spawn(self, *args: str, timeout: float = 60,
              sigint_ignored: bool = False) -> pexpect.spawn:
        # sigint_ignored: started as a background job of a non-interactive
        # shell is (SIGINT ignored, inherited through kubectl's exec)
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
        child = pexpect.spawn(paths.kubectl(), ["kova", *args], env=self.env, timeout=timeout,
                              preexec_fn=ignore)
        child.logfile_read = sys.stdout.buffer
        return child

    def obj(self) -> dict:
        return json.loads(self.kubectl("-n", self.ns, "get", "instance", "vm", "-o",
                                       "json").stdout)

    def wait_power(self, state: str, timeout: float = 60) -> dict:
        return wait_for(lambda: (o := self.obj()).get("status", {}).get("powerState") == state
                        and o, timeout, 0.5, f"powerState {state}")

    def console_log(self) -> str:
        return self.kova("logs", "vm")[1]

    def wait_log(self, pattern: str, count: int = 1, timeout: float = BOOT_TIMEOUT) -> str:
        return wait_for(lambda: len(re.findall(pattern, log := self.console_log())) >= count
                        and log, timeout, 1.0, f"{count} x {pattern!r} in the console log")


@pytest.fixture(scope="module")
def vm(stack, kova_api, test_image, k8s, kubectl, ns) -> Session:
    user = kova_editor(k8s, ns, "alice", stack.root)

    image = f"access-img-{ns[-5:]}"
    # the hashed image file itself (the shared link may point elsewhere)
    kubectl("apply", "-f", "-", input=f"""
apiVersion: kova.dev/v1alpha1
kind: Image
metadata: {{name: {image}}}
spec: {{source: {{hostPath: {Path(test_image).resolve()}}}, format: qcow2}}
---
apiVersion: kova.dev/v1alpha1
kind: Instance
metadata: {{name: vm, namespace: {ns}}}
spec:
  resources: {{vcpus: 1, memoryMiB: 192, diskGiB: 1}}
  imageRef: {{name: {image}}}
  userData: {{inline: "FIRST-USERDATA"}}
""")
    session = Session(ns, user, kubectl, image)
    try:
        session.wait_power("Running", BOOT_TIMEOUT)
        session.wait_log("KOVA-SHELL: ttyS0")
        yield session
    finally:
        kubectl("-n", ns, "delete", "instance", "vm", "--wait=true", "--timeout=120s",
                check=False)
        kubectl("delete", "image", image, check=False)


def test_console_reaches_the_shell_and_detaching_leaves_the_vm_running(vm) -> None:
    writer = vm.spawn("console", "vm")
    writer.expect("Ctrl\\+\\] detaches")
    writer.send("\r")
    writer.expect(PROMPT)
    writer.send("echo KOVA-$((6*7))\r")
    writer.expect("KOVA-42")

    # a second session reads along; a second writer is refused
    reader = vm.spawn("console", "--read-only", "vm")
    reader.expect(r"\(read-only\)")
    busy = vm.kova("console", "vm", timeout=60)
    assert busy[0] == 1 and "is typing on this console" in busy[2], busy
    assert vm.user.username in busy[2]
    writer.send("echo SHARED-$((2+3))\r")
    writer.expect("SHARED-5")
    reader.expect("SHARED-5")
    reader.sendcontrol("]")
    reader.expect(pexpect.EOF)

    writer.sendcontrol("]")
    writer.expect(r"\[detached\]")
    writer.expect(pexpect.EOF)
    writer.close()
    assert writer.exitstatus == 0
    assert vm.obj()["status"]["powerState"] == "Running"
    # the writer's place is free again
    again = vm.spawn("console", "vm")
    again.expect("Ctrl\\+\\] detaches")
    again.send("\r")
    again.expect(PROMPT)
    again.sendcontrol("]")
    again.expect(pexpect.EOF)


def test_vnc_screenshot_of_the_guest_is_not_blank(vm, tmp_path) -> None:
    from PIL import Image
    from vncdotool import api as vnc_api

    # Ctrl+C stops the proxy even where it inherited SIGINT ignored
    proxy = vm.spawn("vnc", "vm", "--proxy-only", sigint_ignored=True)
    proxy.expect(r"on 127\.0\.0\.1:(\d+)\s")
    port = int(proxy.match.group(1))
    shot = tmp_path / "screen.png"
    client = vnc_api.connect(f"127.0.0.1::{port}", timeout=60)
    try:
        deadline = time.monotonic() + 60
        while True:  # the banner on the VGA console: light text on black
            client.captureScreen(str(shot))
            colours = Image.open(shot).convert("L").getcolors(maxcolors=1 << 16) or []
            if len(colours) > 1 or time.monotonic() > deadline:
                break
            time.sleep(2)
    finally:
        client.disconnect()
        vnc_api.shutdown()
        proxy.sendintr()
        proxy.expect(pexpect.EOF)
    image = Image.open(shot).convert("L")
    assert image.size[0] >= 640 and image.size[1] >= 350, image.size
    lit = sum(n for n, level in image.getcolors(maxcolors=1 << 16) if level > 128)
    assert len(image.getcolors(maxcolors=1 << 16)) > 1 and lit > 200, "a blank screen"


def test_soft_reboot_and_the_followed_console_log(vm) -> None:
    boots = len(re.findall("KOVA-TEST-IMAGE-BOOTED", vm.console_log()))
    follow = vm.spawn("logs", "-f", "--tail-bytes", "4000", "vm", timeout=BOOT_TIMEOUT)
    follow.expect("built-in shell")  # the log's tail: the stream is there
    code, out, err = vm.kova("reboot", "vm")
    assert code == 0, err
    assert "rebooted (shut down and started)" in out  # the guest heard the ACPI button
    follow.expect("KOVA-POWEROFF")
    follow.expect("KOVA-TEST-IMAGE-BOOTED")
    follow.sendintr()
    vm.wait_log("KOVA-TEST-IMAGE-BOOTED", boots + 1)
    assert vm.obj()["status"]["powerState"] == "Running"


def test_stop_start_pause_and_the_history(vm) -> None:
    code, out, _ = vm.kova("stop", "vm")
    assert code == 0 and "powerState Shutdown" in out
    obj = vm.obj()
    assert obj["spec"]["runStrategy"] == "Halted" and obj["status"]["phase"] == "Stopped"
    code, _, err = vm.kova("console", "vm")
    assert code == 1 and "is Stopped" in err
    code, _, err = vm.kova("pause", "vm")
    assert code == 1 and "not Running" in err
    shells = len(re.findall("KOVA-SHELL", vm.console_log()))
    code, out, _ = vm.kova("start", "vm")
    assert code == 0 and "powerState Running" in out
    vm.wait_log("KOVA-SHELL", shells + 1)  # this start booted it to its shell
    assert vm.kova("pause", "vm")[0] == 0
    assert vm.obj()["status"]["phase"] == "Paused"
    assert vm.kova("unpause", "vm")[0] == 0
    history = vm.obj()["status"]["actions"]
    assert [a["action"] for a in history] == [
        "create", "reboot", "stop", "start", "pause", "unpause"]
    assert history[0]["user"] == "kova-operator"  # the scheduler's decision
    assert {a["user"] for a in history[1:]} == {vm.user.username}
    assert {a["result"] for a in history} == {"Success"}


def test_changed_user_data_waits_for_a_restart(vm, kubectl) -> None:
    kubectl("-n", vm.ns, "patch", "instance", "vm", "--type", "merge", "-p",
            json.dumps({"spec": {"userData": {"inline": "SECOND-USERDATA"}}}))

    def restart_required():
        for c in vm.obj()["status"].get("conditions") or []:
            if c["type"] == "RestartRequired":
                return c
        return None

    cond = wait_for(lambda: (c := restart_required()) and c["status"] == "True" and c, 60, 0.5,
                    "RestartRequired=True")
    assert cond["reason"] == "SpecChanged" and cond["message"].startswith("userData changed")
    assert "SECOND-USERDATA" not in vm.console_log()
    code, out, err = vm.kova("restart", "vm")
    assert code == 0, err
    log = vm.wait_log("SECOND-USERDATA")
    ids = re.findall(r"KOVA-INSTANCE-ID: (\S+)", log)
    uid = vm.obj()["metadata"]["uid"]
    assert ids[0] == uid and re.fullmatch(rf"{uid}-[0-9a-f]{{8}}", ids[-1]), ids
    wait_for(lambda: restart_required()["status"] == "False", 60, 0.5, "RestartRequired=False")
