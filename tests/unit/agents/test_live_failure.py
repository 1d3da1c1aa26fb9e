"""The message of a live migration that failed because the connection to
the destination's libvirtd was lost names that libvirtd."""

from __future__ import annotations

from kova.agents.instance.live import lost_destination

MIG = {"destHost": "b", "destUri": "qemu+tcp://10.0.0.2/system"}


def test_a_lost_connection_names_the_destination_libvirtd() -> None:
    for libvirt_said in ("internal error: client socket is closed",
                         "End of file while reading data: Input/output error",
                         "Cannot recv data: Connection reset by peer"):
        said = lost_destination(f"live migration of ns.vm: {libvirt_said}", MIG)
        assert said == ("; the connection to the destination's libvirtd (b, "
                        "qemu+tcp://10.0.0.2/system) was lost: it stopped or became "
                        "unreachable"), libvirt_said


def test_other_failures_are_left_as_libvirt_said() -> None:
    assert lost_destination("live migration of ns.vm: unsupported configuration: CPU", MIG) == ""
    assert lost_destination("live migration of ns.vm: aborted on request", MIG) == ""
