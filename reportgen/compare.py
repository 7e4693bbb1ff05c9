"""``reportgen compare A B``: do two runs' folders hold the same report?

Every table under ``data/`` is compared cell by cell (rows matched by their text cells,
whatever order the rows were written in; numbers within a tolerance), except the ones
that measure time (timings, phases, profiles, benchmarks), and the two sites must have
the same pages. Used to check that a refactoring, a resume or a sharded run changes
nothing; torch-free.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

TIMED = {"timings.csv", "phases.csv"}  # tables of measured time: they differ run to run
TIMED_FOLDERS = {"profile", "bench"}  # per-operator profiles, benchmark results


def tables(out: Path) -> dict[str, Path]:
    """The folder's result tables by name (relative to ``data/``)."""
    data = out / "data"
    return {
        str(p.relative_to(data)): p
        for p in sorted(data.rglob("*.csv"))
        if p.name not in TIMED and not TIMED_FOLDERS & set(p.relative_to(data).parts[:-1])
    }


def pages(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*.html")}


def table_differences(a: pd.DataFrame, b: pd.DataFrame, rtol: float, atol: float) -> list[str]:
    """What differs between two versions of one table ([] if nothing)."""
    if list(a.columns) != list(b.columns):
        return [f"columns {list(a.columns)} != {list(b.columns)}"]
    if len(a) != len(b):
        return [f"{len(a)} rows != {len(b)} rows"]
    numeric = [c for c in a.columns if is_number(a[c]) and is_number(b[c])]
    keys = [c for c in a.columns if c not in numeric]
    if keys:  # the rows in one order: by their text cells, then their numbers
        a, b = a.fillna({c: "" for c in keys}), b.fillna({c: "" for c in keys})
        a = a.sort_values(keys + numeric, kind="stable").reset_index(drop=True)
        b = b.sort_values(keys + numeric, kind="stable").reset_index(drop=True)
    found = []
    for column in keys:
        left, right = a[column].fillna("").astype(str), b[column].fillna("").astype(str)
        unequal = left != right
        if unequal.any():
            row = int(np.argmax(unequal.to_numpy()))
            first = f"{left[row]!r} != {right[row]!r}"
            found.append(f"{column}: {unequal.sum()} cells differ (first {first})")
    for column in numeric:
        x, y = a[column].to_numpy(float), b[column].to_numpy(float)
        close = np.isclose(x, y, rtol=rtol, atol=atol, equal_nan=True)
        if not close.all():
            worst = float(np.nanmax(np.abs(x - y)[~close]))
            count = f"{int((~close).sum())} of {len(x)}"
            found.append(f"{column}: {count} values differ (largest by {worst:.3g})")
    return found


def is_number(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def differences(a: str | Path, b: str | Path, rtol: float = 1e-5, atol: float = 1e-6) -> list[str]:
    """Every difference between the reports in folders ``a`` and ``b``, one line each."""
    a, b = Path(a), Path(b)
    mine, theirs = tables(a), tables(b)
    found = [f"table {name} only in {a}" for name in sorted(set(mine) - set(theirs))]
    found += [f"table {name} only in {b}" for name in sorted(set(theirs) - set(mine))]
    for name in sorted(set(mine) & set(theirs)):
        read = {"keep_default_na": False, "na_values": [""]}
        left, right = pd.read_csv(mine[name], **read), pd.read_csv(theirs[name], **read)
        found += [f"{name}: {line}" for line in table_differences(left, right, rtol, atol)]
    only = pages(a) ^ pages(b)
    if only:
        found.append(f"{len(only)} pages in one site only: {', '.join(sorted(only)[:5])}")
    return found
