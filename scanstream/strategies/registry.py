"""Finding strategies: the built-in ones, and those of extra modules named by import path.

A strategy module is any importable module with module-level `Strategy` objects (what
`@strategy` makes) and/or a module-level `STRATEGIES` list of them. Names are unique across
everything loaded: `[a-z][a-z0-9_]{0,63}`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

from scanstream.errors import StrategyLoadError
from scanstream.market import MarketParams, parse_params
from scanstream.settings import CsvSettings
from scanstream.strategies.api import Strategy
from scanstream.strategies.builtin import BUILTIN
from scanstream.strategies.builtin.common import check_knobs

NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_MODULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def builtin_strategies() -> dict[str, Strategy]:
    """The 14 built-in strategies by name, in a stable order."""
    return {s.name: s for s in BUILTIN}


def load_strategies(extra_modules: Sequence[str] = ()) -> dict[str, Strategy]:
    """The built-in strategies, then those of each module in `extra_modules`, by name.

    Raises `StrategyLoadError` when a module cannot be imported, defines no strategy, or
    defines one whose name is malformed or already taken by a different strategy.
    """
    found = builtin_strategies()
    origin = dict.fromkeys(found, "a built-in strategy")
    for path in extra_modules:
        module = _import(path)
        strategies = strategies_in(module)
        if not strategies:
            raise StrategyLoadError(
                f"strategy module {path!r} defines no strategies: expected module-level "
                "objects made with @strategy(...) or a STRATEGIES list of them"
            )
        for s in strategies:
            _validate(s, path)
            existing = found.get(s.name)
            if existing is not None and existing is not s:
                raise StrategyLoadError(
                    f"strategy {s.name!r} of module {path!r} clashes with {origin[s.name]} "
                    "of the same name; rename one of them"
                )
            found[s.name] = s
            origin.setdefault(s.name, f"the strategy of module {path!r}")
    return found


def strategies_in(module: ModuleType) -> list[Strategy]:
    """A module's strategies: its `Strategy` attributes in definition order, then `STRATEGIES`."""
    out: list[Strategy] = [
        v for k, v in vars(module).items() if isinstance(v, Strategy) and k != "STRATEGIES"
    ]
    listed: Any = getattr(module, "STRATEGIES", None)
    if listed is not None:
        if isinstance(listed, str | bytes) or not isinstance(listed, Iterable):
            raise StrategyLoadError(f"{module.__name__}.STRATEGIES must be a list of strategies")
        for item in listed:
            if not isinstance(item, Strategy):
                raise StrategyLoadError(
                    f"{module.__name__}.STRATEGIES holds {type(item).__name__!s}, not a Strategy "
                    "(decorate the function with @strategy(name, description))"
                )
            if not any(item is s for s in out):
                out.append(item)
    return out


def check_params(
    params: Mapping[str, Any] | None,
    strategies: Iterable[str] | None = None,
    *,
    csv_settings: CsvSettings | None = None,
) -> MarketParams:
    """Validate a scan's `params` up front: the market part (a CSV folder under
    `csv_settings.root`), and any built-in threshold overrides (`params.<strategy>.<knob>`)
    of `strategies` (default: all). Raises `InvalidRequest` naming the field."""
    parsed = parse_params(params, csv_settings=csv_settings)
    check_knobs(params or {}, None if strategies is None else list(strategies))
    return parsed


def _import(path: str) -> ModuleType:
    if not _MODULE_PATH.fullmatch(path):
        raise StrategyLoadError(f"{path!r} is not a module import path (like 'package.module')")
    try:
        return importlib.import_module(path)
    except Exception as exc:  # any failure of user code at import time is a load error
        raise StrategyLoadError(
            f"cannot import strategy module {path!r}: {type(exc).__name__}: {exc}"
        ) from exc


def _validate(s: Strategy, path: str) -> None:
    if not isinstance(s.name, str) or not NAME.fullmatch(s.name):
        raise StrategyLoadError(
            f"strategy name {s.name!r} of module {path!r} must match [a-z][a-z0-9_]{{0,63}}"
        )
    if not isinstance(s.description, str) or not s.description.strip():
        raise StrategyLoadError(f"strategy {s.name!r} of module {path!r} needs a description")
    if not callable(s.run):
        raise StrategyLoadError(f"strategy {s.name!r} of module {path!r} has no callable run")
