"""Where explorers get their tables: a runs DataFrame or a store-like object; small value helpers."""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["resolve_source"]


def resolve_source(source: Any, func: str = "explorer") -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(runs, layers) from a runs DataFrame or a store-like object (``.runs()`` / ``.layers()``).

    Example:
        >>> runs, layers = resolve_source(pd.DataFrame({"run_id": ["a"]}))
        >>> layers is None
        True
    """
    if isinstance(source, pd.DataFrame):
        return source, None

    def get(name: str) -> pd.DataFrame | None:
        attr = getattr(source, name, None)
        value = attr() if callable(attr) else attr
        if value is not None and not isinstance(value, pd.DataFrame):
            raise TypeError(
                f"{func}: {type(source).__name__}.{name} gave {type(value).__name__}, not a DataFrame"
            )
        return value

    runs = get("runs")
    if runs is None:
        raise TypeError(f"{func} needs a runs DataFrame or a store with .runs(), got {type(source).__name__}")
    return runs, get("layers")


def py_scalar(value: Any) -> Any:
    """numpy / pandas scalar -> plain Python (None for missing)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def one_context(runs: pd.DataFrame, func: str, **wanted: str | None) -> pd.DataFrame:
    """Keep the rows of the wanted dataset / model; ValueError when one is not given but several exist."""
    for col, want in wanted.items():
        if col not in runs.columns:
            continue
        if want is not None:
            runs = runs.loc[(runs[col] == want).to_numpy(dtype=bool, na_value=False)]
        elif runs[col].nunique() > 1:
            values = sorted(map(str, runs[col].dropna().unique()))
            raise ValueError(
                f"{func}: the runs cover several {col} values {values}; pass {col}=... to pick one"
            )
    return runs
