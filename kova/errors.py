"""One error shape for what Kova refuses to a client of its stream path:
an HTTP status, a machine-readable reason (CamelCase) and a sentence."""

from __future__ import annotations


class Refusal(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
