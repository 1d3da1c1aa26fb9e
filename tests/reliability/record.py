"""Figures of one fault-injection run, written for ``docs/reliability.md``.

Every fault test calls :func:`record` once, after its own assertions passed
(a failed test records nothing, so the table only shows runs that held).
Records go to ``$KOVA_RELIABILITY_DIR`` (one JSON file per test id), or, when
that is unset, to ``<state dir>/reliability`` so that a normal test run still
leaves them for inspection.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

from kova.dev.paths import state_dir


def records_dir() -> Path:
    env = os.environ.get("KOVA_RELIABILITY_DIR")
    path = Path(env) if env else state_dir() / "reliability"
    path.mkdir(parents=True, exist_ok=True)
    return path


def long_run() -> bool:
    """True when the long variants were asked for (``KOVA_RELIABILITY_LONG=1``)."""
    return os.environ.get("KOVA_RELIABILITY_LONG", "") not in ("", "0", "false")


def record(fault: str, injected: str, times: int, *, lost: int, duplicated: int,
           overcommitted: int | None, result: str, figures: dict[str, Any] | None = None,
           test_id: str | None = None) -> Path:
    """Write one row of the reliability table.

    ``fault``: short name ("Racing schedulers"); ``injected``: what was done,
    with sizes ("2 operators, leader election off, 500 Instances on 50 hosts
    that fit them exactly"); ``times``: how many times the fault was injected;
    ``lost``/``duplicated``/``overcommitted``: counted by the test, not
    assumed (``None`` where the fault cannot overcommit, shown as "n/a");
    ``result``: one sentence with the measured outcome; ``figures``: any
    further numbers (durations, counts) shown in the details column.
    """
    test_id = test_id or os.environ.get("PYTEST_CURRENT_TEST", fault).split(" ")[0]
    data = {
        "fault": fault, "injected": injected, "times": times, "lost": lost,
        "duplicated": duplicated, "overcommitted": overcommitted, "result": result,
        "figures": figures or {}, "test": test_id, "long": long_run(),
        "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "load": os.getloadavg()[0],
    }
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_id)[-120:] + ".json"
    path = records_dir() / name
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
