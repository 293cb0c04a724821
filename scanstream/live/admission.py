"""Caps on what one API process holds open for its users: SSE streams, waiting long-polls.

Each is cheap (no Redis connection of its own), but not free (a socket, a buffer, a task),
so one user cannot take a process's whole budget: past a cap the request is refused with
`429 rate_limited` and `Retry-After` before any Redis work.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from scanstream.errors import ScanstreamError


class Full(ScanstreamError):
    """A cap is reached: for this user, or on this process."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Member(Protocol):
    @property
    def user(self) -> str: ...


M = TypeVar("M", bound=Member)


class Admission(Generic[M]):
    """The admitted members of one kind, counted in total and per user."""

    def __init__(self, noun: str, max_total: int, max_per_user: int) -> None:
        self.noun = noun  # "event streams", as the refusal's detail says it
        self.max_total = max_total
        self.max_per_user = max_per_user
        self.rejected = 0
        self._members: set[M] = set()
        self._per_user: Counter[str] = Counter()

    def admit(self, member: M) -> None:
        """Count `member` in, or raise `Full` (counted in `rejected`)."""
        if len(self._members) >= self.max_total:
            self.rejected += 1
            raise Full(f"This server holds {self.max_total} {self.noun} already; retry shortly.")
        if self._per_user[member.user] >= self.max_per_user:
            self.rejected += 1
            raise Full(
                f"You have {self.max_per_user} {self.noun} open already; "
                "close one or retry shortly."
            )
        self._members.add(member)
        self._per_user[member.user] += 1

    def release(self, member: M) -> None:
        """Count `member` out (idempotent)."""
        if member not in self._members:
            return
        self._members.discard(member)
        self._per_user[member.user] -= 1
        if self._per_user[member.user] <= 0:
            del self._per_user[member.user]

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[M]:
        return iter(list(self._members))  # a copy: callers close members while iterating
