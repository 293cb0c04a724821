"""Field-by-field differences between two JSON-shaped values (status, results, params).

Used by `--step` (what one event changed), `--verify` (refold against the API) and
`diff` (two scans). Lists whose items all carry a unique `name` (strategies) or `id`
(opportunities) are compared by that key, so a reordering is not a change of every item;
a key present on one side only is one change holding the whole item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec


class _Missing:
    def __repr__(self) -> str:
        return "absent"


MISSING: Any = _Missing()


@dataclass(frozen=True, slots=True)
class Change:
    path: str  # e.g. "strategies[momentum].state" or "opportunities[opp_1f2e].score"
    before: Any  # MISSING when the field is absent on the first side
    after: Any

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.path}
        if self.before is not MISSING:
            out["before"] = self.before
        if self.after is not MISSING:
            out["after"] = self.after
        return out


def plain(value: Any) -> Any:
    """A Struct, dataclass-free JSON-shaped value: what the API would serve, decoded."""
    return msgspec.json.decode(msgspec.json.encode(value))


def _key_of(items: Sequence[Any]) -> str | None:
    for key in ("name", "id"):
        if items and all(isinstance(i, Mapping) and isinstance(i.get(key), str) for i in items):
            values = [i[key] for i in items]
            if len(set(values)) == len(values):
                return key
    return None


def _keyed(items: Sequence[Any]) -> dict[str, Any] | None:
    key = _key_of(items)
    return None if key is None else {i[key]: i for i in items}


def changes(
    before: Any, after: Any, path: str = "", *, skip: frozenset[str] = frozenset()
) -> list[Change]:
    """Every leaf that differs between `before` and `after`, in a stable order."""
    out: list[Change] = []
    _walk(before, after, path, skip, out)
    return out


def _walk(before: Any, after: Any, path: str, skip: frozenset[str], out: list[Change]) -> None:
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        _walk_mapping(before, after, path, skip, out, bracket=False)
        return
    if isinstance(before, list) and isinstance(after, list):
        kb, ka = _keyed(before), _keyed(after)
        if kb is not None and ka is not None and _key_of(before) == _key_of(after):
            _walk_mapping(kb, ka, path, skip, out, bracket=True)
            return
        if (not before or not after) and (kb is not None or ka is not None):
            _walk_mapping(kb or {}, ka or {}, path, skip, out, bracket=True)
            return
        if len(before) == len(after):
            for i, (b, a) in enumerate(zip(before, after, strict=True)):
                _walk(b, a, f"{path}[{i}]", skip, out)
            return
    if before != after or (type(before) is not type(after) and not _same_number(before, after)):
        out.append(Change(path, before, after))


def _same_number(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and a == b
    )


def _walk_mapping(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    path: str,
    skip: frozenset[str],
    out: list[Change],
    *,
    bracket: bool,
) -> None:
    keys = list(before) + [k for k in after if k not in before]
    for key in keys:
        if not path and key in skip:
            continue
        sub = f"{path}[{key}]" if bracket else (f"{path}.{key}" if path else str(key))
        if key not in after:
            out.append(Change(sub, before[key], MISSING))
        elif key not in before:
            out.append(Change(sub, MISSING, after[key]))
        else:
            _walk(before[key], after[key], sub, skip, out)
