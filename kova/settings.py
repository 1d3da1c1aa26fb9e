"""Settings of Kova's components, each default written once.

A component's settings are a dataclass whose fields are declared with
:func:`setting`: the default, the help text and, derived from the field's
name and the component's prefix, the command-line flag and the environment
variable -- field ``placement_url`` of the operator (prefix
``KOVA_OPERATOR_``) is ``--placement-url`` and ``KOVA_OPERATOR_PLACEMENT_URL``.
A flag given on the command line wins over the environment, which wins over
the default.  A few settings keep an older or a shared variable name (the
kubeconfig is ``KUBECONFIG``; the heartbeat Lease namespace is
``KOVA_LEASE_NAMESPACE`` for the operator and the agent alike); they say so
with ``env=`` and still read the derived name (``env_aliases``).

:func:`options` turns such a dataclass into click options and hands the
command one settings object; :func:`reference` renders the table in
docs/operator.md, docs/agent.md and docs/placement.md.

Convention for "off": a port, an interval or a limit of **0** turns its
feature off (``--metrics-port 0``: no metrics server; ``--audit-interval 0``:
no periodic audit; ``--event-qps 0``: no limit).  A negative port is accepted
as 0.  Invalid values are click usage errors (exit status 2, the flag named),
never tracebacks.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from kova.log import FORMATS, LEVELS

PREFIX = "KOVA_"


@dataclass(frozen=True)
class Spec:
    """How one settings field appears on the command line and in the
    environment (kept in the field's metadata)."""

    help: str
    #: The flag (default ``--field-name``); a boolean's may be ``--on/--off``.
    flag: str | None = None
    #: More flag names accepted for the same setting.
    aliases: tuple[str, ...] = ()
    #: The environment variable, instead of ``<prefix><FIELD_NAME>``.
    env: str | None = None
    #: More environment variables read when the first is unset (older names).
    env_aliases: tuple[str, ...] = ()
    #: A click type instead of the one derived from the annotation.
    type: Any = None
    #: What ``--help`` shows as the default (True: the default itself).
    show_default: bool | str = True
    metavar: str | None = None
    #: Turns the value into the setting's (e.g. a list from a comma-separated
    #: string) or raises ValueError, which becomes a usage error naming the flag.
    convert: Callable[[Any], Any] | None = None
    #: Not a command-line option (set only by the code that builds the settings).
    cli: bool = True
    #: The command refuses to run without it (click's missing-option error).
    required: bool = False


def setting(default: Any = dataclasses.MISSING, help: str = "", *,  # noqa: A002
            factory: Callable[[], Any] | None = None, **spec: Any) -> Any:
    """A settings dataclass field: its default (or default ``factory``), its
    help text and :class:`Spec` options."""
    meta = {"kova": Spec(help=help, **spec)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def level_setting() -> Any:
    return setting("info", "Log level.", type=click.Choice(LEVELS, case_sensitive=False),
                   convert=str.lower)


def format_setting(default: str = "auto") -> Any:
    return setting(default, "Log format: json (one object per line), text, or auto (text "
                   "when stderr is a terminal, else json).",
                   type=click.Choice(FORMATS, case_sensitive=False), convert=str.lower)


def off_if_negative(value: int | None) -> int:
    """A port of 0 or less (or None) is off (0)."""
    return value if value is not None and value > 0 else 0


# ---------------------------------------------------------------------------
# Fields -> click options


@dataclass(frozen=True)
class Option:
    """One settings field as the command line and environment see it."""

    field: str
    spec: Spec
    flags: tuple[str, ...]
    env: str
    env_aliases: tuple[str, ...]
    default: Any
    type: Any
    is_flag: bool
    multiple: bool

    def click_option(self) -> Callable[[Any], Any]:
        text = self.spec.help
        if self.env_aliases:
            text += f" (Also read from {', '.join(self.env_aliases)}.)"
        kwargs: dict[str, Any] = dict(
            envvar=self.env, show_envvar=True, help=text,
            show_default=(self.spec.show_default if isinstance(self.spec.show_default, str)
                          or (self.default not in (None, ()) and not callable(self.default))
                          else False))
        if self.spec.metavar:
            kwargs["metavar"] = self.spec.metavar
        if self.spec.required:  # no default to fall back on (nor to show)
            kwargs.update(required=True, show_default=False)
        if self.is_flag:
            kwargs.update(default=bool(self.default))
            if "/" not in self.flags[0]:
                kwargs["is_flag"] = True
        else:
            kwargs.update(type=self.type, multiple=self.multiple)
            if not self.spec.required:  # (a default of None would count as given)
                kwargs["default"] = self.default
        return click.option(*self.flags, self.field, **kwargs)


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(type, multiple) of an annotation such as ``int | None`` or
    ``tuple[str, ...]``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        return (args[0] if args else str), True
    if args and origin is not None:  # X | None
        return _base_type(args[0])
    return annotation, False


def _click_type(base: Any) -> Any:
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return click.Choice([str(m.value) for m in base])
    if base is Path:
        return click.Path(path_type=Path)
    return {int: click.INT, float: click.FLOAT, bool: click.BOOL}.get(base, click.STRING)


def describe(cls: type, prefix: str) -> list[Option]:
    """The command-line view of settings dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("kova")
        if spec is None or not spec.cli:
            continue
        base, multiple = _base_type(hints[f.name])
        # A default factory is called when the command runs (e.g. the host name).
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory if f.default_factory is not dataclasses.MISSING else None)
        is_flag = base is bool
        flag = spec.flag or "--" + f.name.replace("_", "-")
        if is_flag and "/" not in flag and not flag.startswith("--no-") and spec.flag is None:
            flag = f"{flag}/--no-{flag[2:]}"
        derived = prefix + f.name.upper()
        env = spec.env or derived
        aliases = tuple(dict.fromkeys(a for a in (*spec.env_aliases,
                                                  *([derived] if spec.env else []))
                                      if a != env))
        out.append(Option(field=f.name, spec=spec, flags=(flag, *spec.aliases), env=env,
                          env_aliases=aliases, default=default,
                          type=spec.type or _click_type(base), is_flag=is_flag,
                          multiple=multiple))
    return out


def _value(ctx: click.Context, opt: Option, value: Any) -> Any:
    """The option's final value: an alias variable when the flag and the
    main variable were not given; then ``convert``."""
    source = ctx.get_parameter_source(opt.field)
    if source == click.core.ParameterSource.DEFAULT:
        for alias in opt.env_aliases:
            raw = os.environ.get(alias)
            if raw is not None:
                param = next(p for p in ctx.command.params if p.name == opt.field)
                value = param.type_cast_value(ctx, raw.split() if opt.multiple else raw)
                break
    if opt.multiple:
        value = tuple(value or ())
    if opt.spec.convert is not None and value is not None:
        try:
            value = opt.spec.convert(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param_hint=f"'{opt.flags[0]}'") \
                from None
    return value


def options(cls: type, prefix: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a click command with one option per field of ``cls``; the
    command gets ``settings=cls(...)`` instead of the separate values."""
    opts = describe(cls, prefix)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            ctx = click.get_current_context()
            values = {o.field: _value(ctx, o, kwargs.pop(o.field)) for o in opts}
            return fn(settings=cls(**values), **kwargs)

        for opt in reversed(opts):
            command = opt.click_option()(command)
        return command

    return decorate


# ---------------------------------------------------------------------------
# Documentation


def _shown_default(opt: Option) -> str:
    if opt.spec.required:
        return "required"
    if isinstance(opt.spec.show_default, str):
        return opt.spec.show_default
    if callable(opt.default):
        return "--"
    if opt.default in (None, (), ""):
        return "--"
    if isinstance(opt.default, bool):
        return "on" if opt.default else "off"
    return str(opt.default.value if isinstance(opt.default, enum.Enum) else opt.default)


def reference(cls: type, prefix: str) -> str:
    """A Markdown table of every setting of ``cls``: flag, environment
    variable(s), default, help."""
    rows = ["| flag | environment | default | what |", "|---|---|---|---|"]
    for opt in describe(cls, prefix):
        flags = ", ".join(f"`{f}`" for f in opt.flags)
        env = ", ".join(f"`{e}`" for e in (opt.env, *opt.env_aliases))
        text = opt.spec.help.replace("|", "\\|")
        rows.append(f"| {flags} | {env} | {_shown_default(opt)} | {text} |")
    return "\n".join(rows) + "\n"
