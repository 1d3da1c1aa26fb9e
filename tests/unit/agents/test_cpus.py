"""Dedicated and shared host CPUs (pure): the Host's cpuDedicatedSet, the
split of the host's CPUs, the pinning of a dedicated guest."""

from __future__ import annotations

import pytest

from kova.agents.virt import cpus
from kova.agents.virt.domain import DomainSpecError, build_domain_xml


@pytest.mark.parametrize("text, expected", [
    ("0", {0}), ("2-4", {2, 3, 4}), ("0,2-3,7", {0, 2, 3, 7}), ("5-5", {5})])
def test_parse_and_format_round_trip(text, expected):
    assert cpus.parse_cpuset(text) == expected
    assert cpus.parse_cpuset(cpus.format_cpuset(expected)) == expected


def test_format_joins_runs():
    assert cpus.format_cpuset({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert cpus.format_cpuset(set()) == ""


@pytest.mark.parametrize("text", ["", "a", "1-", "-1", "1,,2", "3-1", "1 2"])
def test_parse_rejects(text):
    with pytest.raises(ValueError):
        cpus.parse_cpuset(text)


def test_layout_splits_the_host_cpus():
    lay = cpus.layout(8, "2-3,9")
    assert lay.dedicated == {2, 3} and lay.shared == {0, 1, 4, 5, 6, 7}
    assert lay.missing == {9}
    assert lay.shared_cpuset == "0-1,4-7"
    plain = cpus.layout(4, None)
    assert plain.dedicated == frozenset() and plain.shared == {0, 1, 2, 3}
    assert plain.shared_cpuset is None  # nothing dedicated: float anywhere
    assert cpus.layout(2, "0-1").shared_cpuset is None  # no shared CPU left


def test_choose_takes_free_dedicated_cpus_only():
    dedicated = frozenset({2, 3, 4})
    assert cpus.choose_pcpus(dedicated, set(), 2) == (2, 3)
    assert cpus.choose_pcpus(dedicated, {2, 0}, 2) == (3, 4)
    with pytest.raises(ValueError, match="2 dedicated CPU.s. needed, 1 free"):
        cpus.choose_pcpus(dedicated, {2, 3}, 2)


def test_pinned_domain_xml_and_reading_pins_back(make_spec):
    xml = build_domain_xml(make_spec(vcpus=2, pinned_cpus=(5, 3), shared_cpuset="0-1"))
    assert "<vcpupin vcpu=\"0\" cpuset=\"5\" />" in xml
    assert "<vcpupin vcpu=\"1\" cpuset=\"3\" />" in xml
    assert "<emulatorpin cpuset=\"0-1\" />" in xml
    assert "<vcpu placement=\"static\">2</vcpu>" in xml  # no cpuset: pinned instead
    assert cpus.pinned_cpus(xml) == {3, 5}


def test_shared_guest_floats_over_shared_cpus(make_spec):
    xml = build_domain_xml(make_spec(vcpus=2, shared_cpuset="0-1,4-7"))
    assert "<vcpu placement=\"static\" cpuset=\"0-1,4-7\">2</vcpu>" in xml
    assert "cputune" not in xml
    assert cpus.pinned_cpus(xml) == set()


@pytest.mark.parametrize("kw, match", [
    ({"vcpus": 2, "pinned_cpus": (1,)}, "1 pinned CPUs for 2 vCPUs"),
    ({"vcpus": 2, "pinned_cpus": (1, 1)}, "two vCPUs pinned to one host CPU"),
])
def test_bad_pinning_is_refused(make_spec, kw, match):
    with pytest.raises(DomainSpecError, match=match):
        build_domain_xml(make_spec(**kw))
