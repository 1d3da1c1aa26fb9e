"""Parsing what Kova's test image prints on its serial console."""

from __future__ import annotations

from kova.dev.image import userdata_from_console


def test_userdata_between_markers() -> None:
    text = (
        "noise\r\nKOVA-TEST-IMAGE-BOOTED\r\nKOVA-USERDATA-BEGIN\r\n#cloud-config\r\n"
        "a: 1\r\nKOVA-USERDATA-END\r\nKOVA-READY\r\n"
    )
    assert userdata_from_console(text) == "#cloud-config\na: 1"


def test_userdata_incomplete() -> None:
    assert userdata_from_console("KOVA-TEST-IMAGE-BOOTED\n") is None
    assert userdata_from_console("KOVA-USERDATA-BEGIN\n#cloud-config\n") is None


def test_empty_userdata() -> None:
    assert userdata_from_console("KOVA-USERDATA-BEGIN\nKOVA-USERDATA-END\n") == ""
