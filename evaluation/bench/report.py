"""pytest-benchmark JSON -> ratio tables for the performance page (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

PEERS = ("pytorch-grad-cam", "captum")


def load(path: str | Path) -> dict:
    """One benchmark run: its machine, date, and per group ``{who: (median s, iqr s)}``."""
    raw = json.loads(Path(path).read_text())
    groups: dict[str, dict[str, tuple[float, float]]] = {}
    extra: dict = {}
    runs, paired = [], []
    for bench in raw["benchmarks"]:
        info = bench.get("extra_info", {})
        extra = extra or info
        if "efficiency" in info:  # a whole run: no peer, its own figures
            runs.append(info)
            continue
        if "paired" in info:  # interleaved: per-round times of every contender
            paired.append((bench["group"], info["paired"]))
            continue
        stats = bench["stats"]
        groups.setdefault(bench["group"], {})[info.get("who", bench["name"])] = (
            stats["median"],
            stats["iqr"],
        )
    machine = raw.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", machine.get("processor", ""))
    return {
        "file": Path(path).name,
        "device": extra.get("device_name") or extra.get("device", "cpu"),
        "cpu": cpu,
        "threads": extra.get("threads"),
        "batch": extra.get("batch"),
        "size": extra.get("size"),
        "date": raw.get("datetime", ""),
        "groups": groups,
        "rows": ratios(groups) + [row for g, t in paired for row in paired_ratios(g, t)],
        "runs": runs,
    }


def ratios(groups: dict[str, dict[str, tuple[float, float]]]) -> list[dict]:
    """Per group: our median, the peer's, and ours / peer (below 1: we are faster); the
    six-CAM group also gets ours / one forward pass."""
    rows = []
    for group, times in groups.items():
        if "ours" not in times:
            continue
        ours = times["ours"][0]
        for who, (median, iqr) in times.items():
            if who == "ours":
                continue
            rows.append(
                {
                    "group": group,
                    "ours_ms": 1000 * ours,
                    "ours_iqr_ms": 1000 * times["ours"][1],
                    "other": who,
                    "other_ms": 1000 * median,
                    "other_iqr_ms": 1000 * iqr,
                    "ratio": ours / median,
                }
            )
    return rows


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def spread(values: list[float]) -> float:
    """Interquartile range (nearest ranks): enough for a handful of rounds."""
    ordered = sorted(values)
    n = len(ordered)
    return ordered[(3 * (n - 1)) // 4] - ordered[(n - 1) // 4]


def paired_ratios(group: str, times: dict[str, list[float]]) -> list[dict]:
    """Rows like ``ratios``' for an interleaved group; ``ratio`` is the median over rounds of
    ours / theirs within the same round (``paired`` marks them)."""
    ours = times["ours"]
    return [
        {
            "group": group,
            "ours_ms": 1000 * median(ours),
            "ours_iqr_ms": 1000 * spread(ours),
            "other": who,
            "other_ms": 1000 * median(theirs),
            "other_iqr_ms": 1000 * spread(theirs),
            "ratio": median([a / b for a, b in zip(ours, theirs, strict=True)]),
            "paired": True,
        }
        for who, theirs in times.items()
        if who != "ours"
    ]


def results(*folders: str | Path) -> list[dict]:
    """Every benchmark JSON in the folders (newest first within each)."""
    found = []
    for folder in folders:
        paths = sorted(Path(folder).glob("*.json"), reverse=True) if Path(folder).is_dir() else []
        found += [load(p) for p in paths]
    return found
