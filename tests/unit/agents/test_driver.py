"""The libvirt driver on libvirt's fake hypervisor (test:///default)."""

from __future__ import annotations

import queue
import time

import libvirt
import pytest

from kova.agents.virt import traits
from kova.agents.virt.domain import DomainMetadata, build_domain_xml
from kova.agents.virt.driver import DomainState, DriverError, LibvirtDriver, start_event_loop

URI = "test:///default"


@pytest.fixture
def events():
    return queue.Queue()


@pytest.fixture
def driver(events):
    start_event_loop()
    drv = LibvirtDriver(URI, on_event=lambda uid, ev, detail: events.put((uid, ev, detail)))
    yield drv
    for info in drv.list_domains():
        drv.undefine(info.uuid)
    drv.close()


def _wait_event(events, uid, name, timeout=5.0):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            item = events.get(timeout=0.1)
        except queue.Empty:
            continue
        seen.append(item)
        if item[0] == uid and item[1] == name:
            return item
    raise AssertionError(f"no {name} event for {uid}; saw {seen}")


def test_define_and_list_only_kova_domains(driver, make_spec):
    spec = make_spec()
    info = driver.define(build_domain_xml(spec))
    assert info.uuid == spec.meta.uid and info.meta == spec.meta
    listed = driver.list_domains()
    assert [d.uuid for d in listed] == [spec.meta.uid]
    # test:///default ships a domain called "test" that is not ours.
    assert driver.lookup_name("test") is not None


def test_start_stop_power_states(driver, make_spec):
    uid = make_spec().meta.uid
    spec = make_spec(uid=uid)
    driver.define(build_domain_xml(spec))
    assert driver.state(uid).power_state == "Shutdown"
    assert driver.start(uid) is True
    st = driver.state(uid)
    assert st.running and st.power_state == "Running"
    assert driver.start(uid) is False  # already running
    assert driver.stop(uid, timeout=5) is True
    st = driver.state(uid)
    assert st.shutoff and not st.failed
    assert driver.stop(uid) is False


def test_destroy_counts_as_failure(driver, make_spec):
    uid = make_spec().meta.uid
    driver.define(build_domain_xml(make_spec(uid=uid)))
    driver.start(uid)
    assert driver.destroy(uid)
    st = driver.state(uid)
    assert st.shutoff and st.failed and st.reason == libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED
    assert driver.destroy(uid) is False  # not running: no-op


def test_pause_resume_via_start(driver, make_spec):
    uid = make_spec().meta.uid
    driver.define(build_domain_xml(make_spec(uid=uid)))
    driver.start(uid)
    driver.lookup(uid).suspend()
    assert driver.state(uid).power_state == "Paused"
    assert driver.start(uid) is True
    assert driver.state(uid).power_state == "Running"


def test_undefine(driver, make_spec):
    uid = make_spec().meta.uid
    driver.define(build_domain_xml(make_spec(uid=uid)))
    driver.start(uid)
    assert driver.undefine(uid) is True
    assert driver.lookup(uid) is None and driver.state(uid) is None and driver.get(uid) is None
    assert driver.undefine(uid) is False


def test_missing_domain(driver):
    uid = "00000000-0000-4000-8000-000000000001"
    assert driver.lookup(uid) is None
    assert driver.shutdown(uid) is False
    assert driver.addresses(uid) == []
    with pytest.raises(DriverError):
        driver.start(uid)


def test_redefine_updates_definition(driver, make_spec):
    spec = make_spec()
    driver.define(build_domain_xml(spec))
    bigger = make_spec(uid=spec.meta.uid, name=spec.meta.name, memory_mib=256)
    info = driver.define(build_domain_xml(bigger))
    assert "<memory unit='KiB'>262144</memory>" in info.xml
    assert len(driver.list_domains()) == 1


def test_set_metadata(driver, make_spec):
    spec = make_spec()
    driver.define(build_domain_xml(spec))
    driver.start(spec.meta.uid)
    new = DomainMetadata(**{**spec.meta.__dict__, "restart_token": "r-1", "generation": 5})
    assert driver.set_metadata(spec.meta.uid, new)
    assert driver.get(spec.meta.uid).meta == new


def test_lifecycle_events(driver, events, make_spec):
    uid = make_spec().meta.uid
    driver.define(build_domain_xml(make_spec(uid=uid)))
    _wait_event(events, uid, "Defined")
    driver.start(uid)
    _wait_event(events, uid, "Started")
    driver.destroy(uid)
    _wait_event(events, uid, "Stopped")
    driver.undefine(uid)
    _wait_event(events, uid, "Undefined")


def test_reconnects_after_connection_loss(driver, make_spec):
    spec = make_spec()
    driver.define(build_domain_xml(spec))
    driver.conn.close()  # behind the driver's back
    assert driver.lookup(spec.meta.uid) is not None
    assert driver.reconnects == 1


def test_bad_uri():
    with pytest.raises(DriverError):
        _ = LibvirtDriver("test:///nonexistent/file.xml").conn


def test_host_info_and_traits(driver):
    info = driver.host_info()
    assert info.cpus > 0 and info.memory_mib > 0
    assert info.hypervisor_type == "TEST"
    assert info.libvirt_version.count(".") == 2
    t = traits.host_traits(info)
    assert "COMPUTE_NODE" in t and "COMPUTE_IMAGE_TYPE_QCOW2" in t


def test_domain_state_mapping():
    assert DomainState(libvirt.VIR_DOMAIN_RUNNING, 0).power_state == "Running"
    assert DomainState(libvirt.VIR_DOMAIN_PAUSED, 0).power_state == "Paused"
    assert DomainState(libvirt.VIR_DOMAIN_PMSUSPENDED, 0).power_state == "Suspended"
    assert DomainState(libvirt.VIR_DOMAIN_CRASHED, 0).power_state == "Crashed"
    assert DomainState(libvirt.VIR_DOMAIN_CRASHED, 0).failed
    clean = DomainState(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN)
    assert clean.shutoff and not clean.failed and clean.power_state == "Shutdown"
    assert DomainState(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED).failed
    assert DomainState(99, 0).power_state == "NoState"


def test_undefine_transient_domain(driver, make_spec):
    spec = make_spec()
    driver.conn.createXML(build_domain_xml(spec), 0)  # transient: no definition
    assert driver.state(spec.meta.uid).running
    driver.undefine(spec.meta.uid)
    assert driver.lookup(spec.meta.uid) is None
