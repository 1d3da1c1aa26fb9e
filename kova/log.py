"""One log format for every Kova process (operator, agent, Placement, the
development stack).

``json`` (the default when stderr is not a terminal, as in a pod): one JSON
object per line, formatted by python-json-logger, with the fixed keys

    time (RFC 3339, UTC, milliseconds), level, component, logger, message

plus, when a log call knows them (``extra=kova.log.about(obj)`` or
``extra={"host": ..., "request_id": ...}``), ``kind``, ``namespace``,
``name``, ``uid``, ``host``, ``request_id``, and ``exception`` with a
traceback -- and no other key: what libraries attach to their records is
left out, except kopf's ``k8s_ref`` (the object a line of kopf is about),
which gives ``kind``, ``namespace``, ``name`` and ``uid``.  ``text`` (the
default on a terminal): one human line per record.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from typing import IO, Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("auto", "json", "text")
#: The keys every JSON line starts with, in this order.
ORDER = ("time", "level", "component", "logger", "message")
#: The only other keys a JSON line may have (when a log call knows them);
#: anything else a library attaches to its records is left out.
CONTEXT = ("kind", "namespace", "name", "uid", "host", "request_id", "exception")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"

#: Loggers of libraries that are too chatty at Kova's info level.
QUIET = {"kubernetes": logging.WARNING, "urllib3": logging.WARNING,
         "httpx": logging.WARNING, "httpcore": logging.WARNING,
         "aiohttp.access": logging.WARNING}


#: Fields every record logged in this context gets (see :func:`bound`).
_BOUND: ContextVar[dict[str, Any] | None] = ContextVar("kova_log_bound", default=None)


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Within the block (this thread or task), every record gets ``fields``
    (e.g. ``bound(**about(obj))``: the object a piece of work is about)
    unless its log call gives them itself."""
    token = _BOUND.set({**(_BOUND.get() or {}), **fields})
    try:
        yield
    finally:
        _BOUND.reset(token)


class JSONFormatter(JsonFormatter):
    """Kova's JSON lines (see the module docstring)."""

    def __init__(self, component: str | None = None, **static: str) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger",
                           "exc_info": "exception", "object_name": "name"},
            static_fields={**({"component": component} if component else {}), **static},
            reserved_attrs=[*RESERVED_ATTRS, "color_message", "taskName"],
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        t = dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        for key, value in (_BOUND.get() or {}).items():
            key = "name" if key == "object_name" else key
            log_data.setdefault(key, value)
        # kopf's loggers about an object attach it as ``k8s_ref``
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict):
            for key in ("kind", "namespace", "name", "uid"):
                if ref.get(key) and key not in log_data:
                    log_data[key] = ref[key]

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        level = log_data.get("level")
        if isinstance(level, str):
            log_data["level"] = level.lower()
        first = {k: log_data[k] for k in ORDER if k in log_data}
        return {**first, **{k: log_data[k] for k in CONTEXT if k in log_data}}


def about(obj: dict) -> dict[str, Any]:
    """``extra`` for a log call about an API object (kind, namespace, name, uid)."""
    meta = obj.get("metadata") or {}
    out = {"kind": obj.get("kind"), "namespace": meta.get("namespace"),
           "object_name": meta.get("name"), "uid": meta.get("uid")}
    return {k: v for k, v in out.items() if v}


def object_ref(kind: str, namespace: str | None, name: str) -> dict[str, Any]:
    """``extra`` for a log call about an object known by its name only."""
    return {k: v for k, v in (("kind", kind), ("namespace", namespace),
                              ("object_name", name)) if v}


def formatter(component: str | None, fmt: str = "auto", stream: IO[str] | None = None,
              **static: str) -> logging.Formatter:
    """The formatter for ``fmt`` (``auto``: text on a terminal, else JSON);
    ``static`` fields (e.g. the agent's ``host``) go into every JSON line."""
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "text" if getattr(stream, "isatty", lambda: False)() else "json"
    if fmt == "json":
        return JSONFormatter(component, **static)
    return logging.Formatter(TEXT_FORMAT)


def setup(component: str, level: str = "info", fmt: str = "auto",
          stream: IO[str] | None = None, **static: str) -> None:
    """Send every log record of this process to ``stream`` (stderr) in the
    chosen format, at ``level`` (one of :data:`LEVELS`)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(component, fmt, handler.stream, **static))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(max(quiet, root.level))
