"""The agent's own conditions on its Host: ``HypervisorReachable`` (it
reaches its libvirtd) and ``PlacementRegistered`` (its resource provider is
registered and Placement answers it).  A cause that keeps the host from
taking or running Instances shows on the Host -- a False condition with a
reason and the error as message, and one Warning Event when it appears --
and the condition turns True again once the cause is fixed.

:class:`HostHealth` only remembers and decides; the registration
(:mod:`kova.agents.registration`) probes, writes the Host status and posts
the Events.
"""

from __future__ import annotations

from dataclasses import dataclass

from kova.conditions import Condition, condition_for
from kova.crds import names
from kova.placement_client import placement_trouble


@dataclass(frozen=True)
class State:
    status: str
    reason: str
    message: str


def placement_state(exc: BaseException, url: str) -> State:
    """The PlacementRegistered=False state for a failed Placement call."""
    trouble = placement_trouble(exc, url, "agent", "check the agent's --placement-token")
    if trouble is None:
        return State("False", names.HOST_REASON_REGISTRATION_FAILED, str(exc))
    return State("False", *trouble)


class HostHealth:
    """The agent's Host conditions as last observed, and which of them still
    have to be written (``dirty``) or announced with an Event."""

    def __init__(self, libvirt_uri: str, placement_url: str | None) -> None:
        self.libvirt_uri = libvirt_uri
        self.placement_url = placement_url
        self.states: dict[str, State] = {}
        self.dirty = False
        #: Per condition type, the False state last announced with an Event.
        self._announced: dict[str, State] = {}

    def _set(self, type_: str, state: State) -> None:
        if self.states.get(type_) != state:
            self.states[type_] = state
            self.dirty = True

    # ---- observations
    def libvirt_ok(self) -> None:
        self._set(names.HOST_COND_HYPERVISOR, State(
            "True", names.HOST_REASON_CONNECTED, f"connected to {self.libvirt_uri}"))

    def libvirt_failed(self, exc: BaseException) -> None:
        self._set(names.HOST_COND_HYPERVISOR, State(
            "False", names.HOST_REASON_LIBVIRT_UNREACHABLE,
            f"libvirt at {self.libvirt_uri} is unreachable: {exc}"))

    def placement_ok(self, rp_uuid: str) -> None:
        self._set(names.HOST_COND_PLACEMENT, State(
            "True", names.HOST_REASON_REGISTERED,
            f"resource provider {rp_uuid} registered with Placement at {self.placement_url}"))

    def placement_failed(self, exc: BaseException) -> None:
        self._set(names.HOST_COND_PLACEMENT, placement_state(exc, self.placement_url or ""))

    # ---- reading
    def failing(self, type_: str) -> bool:
        state = self.states.get(type_)
        return state is not None and state.status == "False"

    def conditions(self, host: dict) -> list[Condition]:
        """The agent's conditions for the Host status (``host`` as read: a
        condition's lastTransitionTime is kept while its status holds)."""
        return [condition_for(host, t, s.status, s.reason, s.message)
                for t, s in sorted(self.states.items())]

    def new_warnings(self) -> list[tuple[str, str]]:
        """(reason, message) of each failure not announced yet (an Event
        each); a condition back to True may announce its next failure."""
        out = []
        for type_, state in sorted(self.states.items()):
            if state.status == "True":
                self._announced.pop(type_, None)
                continue
            last = self._announced.get(type_)
            if last is None or last.reason != state.reason:
                self._announced[type_] = state
                out.append((state.reason, state.message))
        return out
