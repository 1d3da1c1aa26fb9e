"""Per-route policy, with OpenStack Placement's default rules.

Rules are written in oslo.policy's check language (``role:admin or
rule:service_api``, ``project_id:%(project_id)s``, ``@``, ``!``, ``not``,
parentheses) and evaluated against the caller's credentials (user, project,
roles, system scope) and the request's target.  The defaults are OpenStack
Placement's: every action ``admin or service``; ``POST /reshaper`` the
``service`` role; ``GET /usages`` also a ``reader`` of the project asked
about.  Like oslo.policy:

* ``enforce_new_defaults=False`` (the legacy defaults) also accepts the
  deprecated rule of a rule that has one (``role:admin``), unless a policy
  file overrides the rule;
* ``enforce_scope=True`` refuses a system-scoped token on rules whose scope
  is ``project`` (every Placement rule);
* a policy file (YAML or JSON, ``{rule name: check string}``) overrides
  rules; it is re-read when it changes.

A refusal is a 403 with OpenStack's text: "Policy does not allow <action>
to be performed."
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Callable

from kova.placement import errors

LOG = logging.getLogger("kova.placement.policy")

ADMIN_OR_SERVICE = "rule:admin_or_service_api"
SERVICE = "rule:service_api"
ADMIN_OR_PROJECT_READER_OR_SERVICE = "rule:admin_or_project_reader_or_service_api"
_LEGACY_ADMIN = "role:admin"


@dataclass(frozen=True)
class Rule:
    name: str
    check_str: str
    scope_types: tuple[str, ...] = ("project",)
    deprecated: str | None = None  # the legacy check string, if any


_BASE = [
    Rule("admin_api", "role:admin"),
    Rule("service_api", "role:service", deprecated=_LEGACY_ADMIN),
    Rule("admin_or_service_api", "role:admin or role:service", deprecated=_LEGACY_ADMIN),
    Rule("project_reader_api", "role:reader and project_id:%(project_id)s", (),
         deprecated=_LEGACY_ADMIN),
    Rule("admin_or_project_reader_or_service_api",
         "role:admin or rule:project_reader_api or role:service", deprecated=_LEGACY_ADMIN),
]

#: (action, check string) of every Placement API action.
_ACTIONS = [
    *((f"placement:resource_providers:{a}", ADMIN_OR_SERVICE)
      for a in ("list", "create", "show", "update", "delete")),
    *((f"placement:resource_providers:inventories:{a}", ADMIN_OR_SERVICE)
      for a in ("list", "create", "show", "update", "delete")),
    *((f"placement:resource_providers:aggregates:{a}", ADMIN_OR_SERVICE)
      for a in ("list", "update")),
    *((f"placement:resource_providers:traits:{a}", ADMIN_OR_SERVICE)
      for a in ("list", "update", "delete")),
    ("placement:resource_providers:allocations:list", ADMIN_OR_SERVICE),
    ("placement:resource_providers:usages", ADMIN_OR_SERVICE),
    *((f"placement:resource_classes:{a}", ADMIN_OR_SERVICE)
      for a in ("list", "create", "show", "update", "delete")),
    *((f"placement:traits:{a}", ADMIN_OR_SERVICE)
      for a in ("list", "show", "update", "delete")),
    *((f"placement:allocations:{a}", ADMIN_OR_SERVICE)
      for a in ("manage", "list", "update", "delete")),
    ("placement:allocation_candidates:list", ADMIN_OR_SERVICE),
    ("placement:usages", ADMIN_OR_PROJECT_READER_OR_SERVICE),
    ("placement:reshaper:reshape", SERVICE),
]

DEFAULT_RULES: list[Rule] = _BASE + [Rule(name, check) for name, check in _ACTIONS]

#: The action each (route name, method) is checked against.
ACTIONS = {
    ("resource_providers", "GET"): "placement:resource_providers:list",
    ("resource_providers", "POST"): "placement:resource_providers:create",
    ("resource_provider", "GET"): "placement:resource_providers:show",
    ("resource_provider", "PUT"): "placement:resource_providers:update",
    ("resource_provider", "DELETE"): "placement:resource_providers:delete",
    ("inventories", "GET"): "placement:resource_providers:inventories:list",
    ("inventories", "POST"): "placement:resource_providers:inventories:create",
    ("inventories", "PUT"): "placement:resource_providers:inventories:update",
    ("inventories", "DELETE"): "placement:resource_providers:inventories:delete",
    ("inventory", "GET"): "placement:resource_providers:inventories:show",
    ("inventory", "PUT"): "placement:resource_providers:inventories:update",
    ("inventory", "DELETE"): "placement:resource_providers:inventories:delete",
    ("provider_usages", "GET"): "placement:resource_providers:usages",
    ("provider_aggregates", "GET"): "placement:resource_providers:aggregates:list",
    ("provider_aggregates", "PUT"): "placement:resource_providers:aggregates:update",
    ("provider_allocations", "GET"): "placement:resource_providers:allocations:list",
    ("provider_traits", "GET"): "placement:resource_providers:traits:list",
    ("provider_traits", "PUT"): "placement:resource_providers:traits:update",
    ("provider_traits", "DELETE"): "placement:resource_providers:traits:delete",
    ("resource_classes", "GET"): "placement:resource_classes:list",
    ("resource_classes", "POST"): "placement:resource_classes:create",
    ("resource_class", "GET"): "placement:resource_classes:show",
    ("resource_class", "PUT"): "placement:resource_classes:update",
    ("resource_class", "DELETE"): "placement:resource_classes:delete",
    ("allocations", "POST"): "placement:allocations:manage",
    ("allocation", "GET"): "placement:allocations:list",
    ("allocation", "PUT"): "placement:allocations:update",
    ("allocation", "DELETE"): "placement:allocations:delete",
    ("allocation_candidates", "GET"): "placement:allocation_candidates:list",
    ("traits", "GET"): "placement:traits:list",
    ("trait", "GET"): "placement:traits:show",
    ("trait", "PUT"): "placement:traits:update",
    ("trait", "DELETE"): "placement:traits:delete",
    ("usages", "GET"): "placement:usages",
    ("reshaper", "POST"): "placement:reshaper:reshape",
}


@dataclass
class Credentials:
    """Who is asking: what keystonemiddleware (or noauth2) tells."""

    user_id: str | None = None
    project_id: str | None = None
    roles: list[str] = field(default_factory=list)
    system_scope: str | None = None

    def values(self) -> dict:
        return {"user_id": self.user_id, "project_id": self.project_id,
                "roles": [r.lower() for r in self.roles], "system_scope": self.system_scope}


# ------------------------------------------------------------ check language
Check = Callable[[dict, dict, "Enforcer"], bool]
def _tokens(text: str) -> list[str]:
    """Whitespace-separated, with leading ``(`` and trailing ``)`` split off
    (as oslo.policy does: ``%(project_id)s`` keeps its parentheses)."""
    out: list[str] = []
    for word in text.split():
        stripped = word.lstrip("(")
        out.extend("(" * (len(word) - len(stripped)))
        core = stripped.rstrip(")")
        if core:
            out.append(core)
        out.extend(")" * (len(stripped) - len(core)))
    return out


def _leaf(token: str) -> Check:
    if token in ("@", "True"):
        return lambda creds, target, enf: True
    if token in ("!", "False"):
        return lambda creds, target, enf: False
    kind, sep, match = token.partition(":")
    if not sep:
        raise ValueError(f"bad check {token!r}")
    if kind == "rule":
        return lambda creds, target, enf: enf.check_rule(match, creds, target)
    if kind == "role":
        return lambda creds, target, enf: _format(match, target, lower=True) in creds["roles"]
    return lambda creds, target, enf: _generic(kind, match, creds, target)


def _format(match: str, target: dict, lower: bool = False) -> str | None:
    try:
        value = match % target
    except (KeyError, TypeError, ValueError):
        return None
    return value.lower() if lower else value


def _generic(kind: str, match: str, creds: dict, target: dict) -> bool:
    """``field:%(target_key)s`` or ``field:literal`` against the credentials."""
    value = _format(match, target)
    if value is None:
        return False
    if value.startswith(("'", '"')) and value.endswith(value[0]) and len(value) > 1:
        value = value[1:-1]
    left = creds.get(kind)
    return left is not None and value == str(left)


class _Parser:
    """Recursive descent: ``or`` binds loosest, then ``and``, then ``not``."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def parse(self) -> Check:
        if not self.tokens:
            return _leaf("@")
        check = self._or()
        if self.pos != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.pos]!r}")
        return check

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _or(self) -> Check:
        parts = [self._and()]
        while self._peek() == "or":
            self.pos += 1
            parts.append(self._and())
        if len(parts) == 1:
            return parts[0]
        return lambda creds, target, enf: any(p(creds, target, enf) for p in parts)

    def _and(self) -> Check:
        parts = [self._not()]
        while self._peek() == "and":
            self.pos += 1
            parts.append(self._not())
        if len(parts) == 1:
            return parts[0]
        return lambda creds, target, enf: all(p(creds, target, enf) for p in parts)

    def _not(self) -> Check:
        token = self._peek()
        if token == "not":
            self.pos += 1
            inner = self._not()
            return lambda creds, target, enf: not inner(creds, target, enf)
        if token == "(":
            self.pos += 1
            inner = self._or()
            if self._peek() != ")":
                raise ValueError("missing ')'")
            self.pos += 1
            return inner
        if token is None:
            raise ValueError("unexpected end of rule")
        self.pos += 1
        return _leaf(token)


def parse_check(text: str) -> Check:
    return _Parser(text).parse()


def load_policy_file(path: str) -> dict[str, str]:
    """{rule: check string} from an oslo.policy file (YAML or JSON)."""
    with open(path) as fh:
        text = fh.read()
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path}: expected a mapping of rule names to check strings")
    return {str(k): v for k, v in data.items()}


class Enforcer:
    """The compiled rules of one service process."""

    def __init__(self, enforce_new_defaults: bool = True, enforce_scope: bool = True,
                 policy_file: str | None = None) -> None:
        self.enforce_new_defaults = enforce_new_defaults
        self.enforce_scope = enforce_scope
        self.policy_file = policy_file
        self.defaults = {r.name: r for r in DEFAULT_RULES}
        self._mtime: float | None = None
        self._lock = threading.Lock()
        self.rules: dict[str, Check] = {}
        self._compile({})
        self.reload()

    def _compile(self, overrides: dict[str, str]) -> None:
        rules: dict[str, Check] = {}
        for name, rule in self.defaults.items():
            text = overrides.get(name, rule.check_str)
            if (name not in overrides and not self.enforce_new_defaults
                    and rule.deprecated and rule.deprecated != rule.check_str):
                text = f"({rule.check_str}) or ({rule.deprecated})"
            rules[name] = parse_check(text)
        for name, text in overrides.items():
            if name not in rules:
                rules[name] = parse_check(text)
        self.rules = rules

    def reload(self) -> None:
        """Re-read the policy file if it changed (a broken file keeps the
        rules in force and is logged)."""
        if not self.policy_file:
            return
        try:
            mtime = os.stat(self.policy_file).st_mtime_ns
        except OSError:
            mtime = None
        if mtime == self._mtime:
            return
        with self._lock:
            try:
                overrides = load_policy_file(self.policy_file) if mtime is not None else {}
                self._compile(overrides)
            except (OSError, ValueError) as exc:
                LOG.error("policy file %s not loaded: %s", self.policy_file, exc)
            self._mtime = mtime

    def check_rule(self, name: str, creds: dict, target: dict) -> bool:
        check = self.rules.get(name)
        return check is not None and check(creds, target, self)

    def authorize(self, action: str, credentials: Credentials,
                  target: dict | None = None) -> None:
        """Raise a 403 unless ``credentials`` may do ``action`` on ``target``."""
        self.reload()
        creds = credentials.values()
        if target is None:
            target = {"project_id": credentials.project_id, "user_id": credentials.user_id}
        rule = self.defaults.get(action)
        if self.enforce_scope and rule is not None and rule.scope_types:
            scope = "system" if credentials.system_scope else "project"
            if scope not in rule.scope_types:
                # OpenStack's text for a scope refusal is the action alone
                raise errors.Forbidden(action)
        if not self.check_rule(action, creds, target):
            raise _forbidden(action)


def _forbidden(action: str) -> errors.Forbidden:
    return errors.Forbidden(f"Policy does not allow {action} to be performed.")
