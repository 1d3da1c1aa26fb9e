"""Quiescing a guest for a snapshot (kova.agents.virt.quiesce) on libvirt's
test driver, whose domains have no guest agent channel state: the channel's
state read from the live XML, what the snapshot then says, the refusal when
quiescing is required, and the thaw of a guest left frozen by an agent that
ended between a freeze and its thaw (the test driver's fsThaw)."""

from __future__ import annotations

import libvirt
import pytest

from kova.agents.virt.domain import build_domain_xml
from kova.agents.virt.quiesce import (
    MARKER,
    Freeze,
    Quiesced,
    QuiesceRefused,
    agent_state,
    thaw_left_frozen,
)


def _with_state(xml: str, state: str) -> str:
    return xml.replace("name=\"org.qemu.guest_agent.0\"",
                       f"name=\"org.qemu.guest_agent.0\" state=\"{state}\"")


def test_the_agent_channel_state_is_read_from_the_live_xml(make_spec):
    xml = build_domain_xml(make_spec())
    assert agent_state(xml) == "unknown"
    assert agent_state(_with_state(xml, "connected")) == "connected"
    assert agent_state(_with_state(xml, "disconnected")) == "disconnected"
    assert agent_state("<domain><devices/></domain>") == "none"


def test_what_a_snapshot_says_about_quiescing():
    frozen = Quiesced(mode="auto", filesystems=2, frozen_seconds=0.0123)
    assert frozen.text() == "2 filesystems frozen for 12 ms by the guest agent"
    assert Quiesced(mode="auto", filesystems=1).text().startswith("1 filesystem frozen")
    assert (Quiesced(mode="auto", reason="no guest agent is connected on its channel").text()
            == "not quiesced (no guest agent is connected on its channel): crash-consistent")
    assert Quiesced(mode="required", stopped=True).text() == "guest stopped: nothing to quiesce"
    failed = Quiesced(mode="auto", filesystems=1, thaw_error="agent gone")
    assert "THAW FAILED (agent gone)" in failed.text()
    assert frozen.to_json()["frozen"] and not Quiesced(mode="off").to_json()["frozen"]


@pytest.fixture
def dom():
    conn = libvirt.open("test:///default")
    yield conn.lookupByName("test")
    conn.close()


def test_no_agent_on_the_channel_auto_is_crash_consistent(dom, tmp_path):
    with Freeze(dom, "auto", tmp_path / MARKER) as f:
        pass
    assert f.result.filesystems is None
    assert f.result.reason == "the domain has no guest agent channel"
    assert not (tmp_path / MARKER).exists()


def test_no_agent_on_the_channel_required_is_refused(dom, tmp_path):
    with pytest.raises(QuiesceRefused, match="requires quiescing and the domain has no "
                       "guest agent channel"):
        with Freeze(dom, "required", tmp_path / MARKER):
            raise AssertionError("the block must not run")
    assert not (tmp_path / MARKER).exists()


def test_quiescing_off_asks_nothing(dom, tmp_path):
    with Freeze(dom, "off", tmp_path / MARKER) as f:
        pass
    assert f.result.reason == "quiescing off for this snapshot"


def test_a_guest_left_frozen_is_thawed_when_the_agent_starts(dom, tmp_path):
    """The marker of a freeze whose thaw never came: the domain is thawed
    and the marker removed; a marker of a domain that is gone goes too."""
    uid = dom.UUIDString()
    assert dom.fsFreeze(None, 0) > 0
    (tmp_path / uid).mkdir()
    (tmp_path / uid / MARKER).write_text("1\n")
    gone = tmp_path / "00000000-0000-0000-0000-00000000beef"
    gone.mkdir()
    (gone / MARKER).write_text("1\n")
    assert thaw_left_frozen(dom.connect(), tmp_path) == [uid]
    assert not (tmp_path / uid / MARKER).exists() and not (gone / MARKER).exists()
