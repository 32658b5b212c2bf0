"""Collect every problem of the input before anything trains; report them in one message.

Checks add what they find under a *kind* (a short plural noun phrase) with the fix
for that kind; :meth:`Problems.raise_if_any` raises one :class:`DataError` that lists
every kind, each capped at ``MAX_LISTED`` items plus a count. Warnings (input that
is used, but maybe not as the user meant) are collected the same way and logged.

Example:
    >>> problems = Problems()
    >>> problems.add("unreadable image(s)", "a.png (empty file, 0 bytes)", fix="fix or remove them")
    >>> problems.add("unreadable image(s)", "b.png (truncated)")
    >>> str(problems).splitlines()[0]
    '2 unreadable image(s):'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("raystudy")

MAX_LISTED = 20


class DataError(ValueError):
    """Input data that cannot be used; the message names the files and the fix."""


def listing(items: list[str], what: str) -> str:
    """``N what:`` then the first ``MAX_LISTED`` items, one a line, and how many more."""
    shown = "\n    ".join(items[:MAX_LISTED])
    more = f"\n    ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"{len(items)} {what}:\n    {shown}{more}"


@dataclass
class _Kind:
    items: list[str] = field(default_factory=list)
    fix: str = ""


@dataclass
class Problems:
    """Problems (errors) and warnings, grouped by kind, in the order first seen."""

    errors: dict[str, _Kind] = field(default_factory=dict)
    warnings: dict[str, _Kind] = field(default_factory=dict)

    def add(self, kind: str, item: str, fix: str = "") -> None:
        """One error; ``fix`` says what to do about every item of this kind."""
        self._put(self.errors, kind, item, fix)

    def warn(self, kind: str, item: str, fix: str = "") -> None:
        """One warning: the input is used, but the user should know."""
        self._put(self.warnings, kind, item, fix)

    @staticmethod
    def _put(where: dict[str, _Kind], kind: str, item: str, fix: str) -> None:
        entry = where.setdefault(kind, _Kind())
        entry.items.append(item)
        if fix and not entry.fix:
            entry.fix = fix

    def __bool__(self) -> bool:
        return bool(self.errors)

    @staticmethod
    def _render(kinds: dict[str, _Kind]) -> list[str]:
        blocks = []
        for kind, entry in kinds.items():
            block = listing(entry.items, kind)
            blocks.append(block + (f"\n  {entry.fix}" if entry.fix else ""))
        return blocks

    def __str__(self) -> str:
        return "\n".join(self._render(self.errors))

    def log_warnings(self) -> None:
        """Log each warning kind once, then forget them (so a second call logs nothing)."""
        for block in self._render(self.warnings):
            log.warning("%s", block)
        self.warnings.clear()

    def raise_if_any(self, header: str | None = None) -> None:
        """Log the warnings; raise one DataError listing every error kind, if any."""
        self.log_warnings()
        if not self.errors:
            return
        n = sum(len(k.items) for k in self.errors.values())
        if header is None:
            raise DataError(str(self))
        raise DataError(f"{header}: {n} problem(s) of {len(self.errors)} kind(s); nothing was written\n{self}")
