"""``reportgen run``: load, explain, score, store. Rendering is a separate step.

Work is cut into units (one batch x one technique at one layer). Each unit's
rows, raw maps and images are written as soon as it is done, its part file last
(see ``store``), so memory stays flat over any number of images, a killed run
resumes with ``--resume``, and shards (``--shard i/N`` or ``torchrun``) split the
batches. ``finish`` builds the tables from the parts and needs no model.

The engine knows techniques by kind only: scored maps (``compute``, then ``scoring``),
per-batch and run-wide views (``learned.VIEWS``). It names none of them.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from evaluation.rankings import agreement_rows, ranking_rows, rankings

from . import data, learned
from .batch import Batch, load_batch
from .compute import compute, problem_of
from .config import RunConfig
from .context import Context, open_context, versions
from .options import OptionError, check_same_settings, parse_metrics, warn_other_version
from .probe import best_times, per_row_times
from .scoring import references, scored, sensitivities
from .store import MODEL, Store, batch_name
from .timing import Phases, merge_phases, peak_rss_mb, phase_rows, timing_rows

TABLES = (
    "images",
    "predictions",
    "metrics",
    "layers",
    "synthesis",
    "patches",
    "dead",
    "atlas",
    "sanity",
    "sanity_independent",
    "random_logit",
    "channels",
)


@dataclass
class Summary:
    out: str
    seconds: float
    images: int
    failed: int
    methods: list[str]
    problems: list[str] = field(default_factory=list)


def begin(ctx: Context, fresh: bool) -> Context:
    """Check ``--resume`` against the stored settings; a ``fresh`` start forgets earlier
    parts. Shards never reset (others may be working) but refuse other settings. A
    resumed run keeps its first layout (the results' layout, not a new draw)."""
    store, config = ctx.store, ctx.config
    store.remove_temporary()
    earlier = store.read_part(MODEL, "run")
    if config.resume and earlier is None:
        raise OptionError(f"--resume: '{store.out}' holds no run to continue; run without --resume")
    if earlier is not None and (config.resume or not fresh):
        check_same_settings(earlier["settings"], config.results_settings(), store.out)
        warn_other_version(earlier.get("versions", {}), versions(), store.out)
    if fresh and not config.resume:
        store.reset()
    elif earlier is not None and config.layout == "auto":
        ctx = ctx.with_layout(earlier["probe"]["layout"])
    if earlier is None or fresh:
        store.write_part(MODEL, "run", ctx.describe())
    return ctx


def mine(ctx: Context) -> list[tuple[int, list[data.ImageRecord]]]:
    """This shard's batches: every N-th, so a batch is the same whoever runs it."""
    index, count = ctx.config.shard
    batches = data.batches(ctx.records, ctx.config.batch_size)
    return [(i, batch) for i, batch in enumerate(batches) if i % count == index]


def todo(ctx: Context, batch: str) -> list[str]:
    """The batch's unfinished units (none if none of its images could be read)."""
    done = ctx.store.done_units(batch)
    images = ctx.store.read_part(batch, "images") if "images" in done else None
    if images is not None and not images["ok"]:
        return []
    return [unit for unit in ctx.units if unit not in done]


def process(ctx: Context, index: int, records: list[data.ImageRecord]) -> None:
    """Every unfinished unit of one batch: its images, the scored maps (the gradient CAMs
    from one shared capture), then the per-batch views. Each part is written as soon as
    its unit is done."""
    name = batch_name(index)
    pending = todo(ctx, name)
    if not pending:
        return
    batch = load_batch(ctx, index, records)
    part = {"ok": len(batch.items), "images": batch.rows, "predictions": batch.predictions}
    if not batch.items:
        ctx.store.write_part(name, "images", part)
        return
    if "images" in pending:
        ctx.store.write_part(name, "images", {**part, "timing": ctx.timer.last})  # predict's
    units = [
        (t, lay) for t in ctx.methods for lay in ctx.layers_of(t) if f"{t.name}@{lay}" in pending
    ]
    maps = [(t, layer) for t, layer in units if t.scored]
    refs, robust = None, {}
    if maps:  # a batch resumed with only views left needs no metric pass
        with ctx.phases("metric: references"):
            refs = references(ctx, batch)
        robust = sensitivities(ctx, batch, maps, lambda t: unit_settings(ctx, t))
    bar = tqdm(total=len(units), desc="units", leave=False, disable=len(units) < 2)
    for c in compute(
        ctx.forward_model,  # batch norms folded, for gradient passes too
        batch.x,
        batch.targets,
        maps,
        ctx.spec.classifier,
        reshape=ctx.spec.reshape,
        settings=lambda t: unit_settings(ctx, t),
        around=lambda label, layer, t: around(ctx, batch, label, layer, t),
    ):
        timing = {**ctx.timer.last, "method": c.method, "layer": c.layer}
        if c.shared > 1:
            timing.update(fused=c.shared, seconds=timing["seconds"] / c.shared)
        part = {"problem": c.problem}
        if not c.problem:
            part = {
                **scored(
                    ctx,
                    batch,
                    refs,
                    c.method,
                    c.layer,
                    c.maps,
                    {**c.records, **robust.get((c.method, c.layer), {})},
                ),
                "timing": timing,
            }
        ctx.store.write_part(name, f"{c.method}@{c.layer}", part)
        bar.update()
    for t, layer in units:
        if not t.scored:
            ctx.store.write_part(name, f"{t.name}@{layer}", view_unit(ctx, batch, t.name, layer))
            bar.update()
    bar.close()


def unit_settings(ctx: Context, technique) -> dict:
    """What a scored technique is called with besides the batch: its settings, the
    normalisation, and rows per forward pass (on a GPU: what fits its free memory)."""
    rows = None if ctx.device.type == "cuda" else ctx.rows
    return {
        "batch_size": rows,
        "mean": ctx.spec.mean,
        "std": ctx.spec.std,
        "output": ctx.spec.output,  # the probabilities Occlusion and RISE read
        "seed": ctx.config.seed,  # RISE's masks, SmoothGrad's noise, the random baseline
        **ctx.options(technique),
    }


@contextlib.contextmanager
def around(ctx: Context, batch: Batch, label: str, layer: str, technique):
    """Each computation of a unit: profiled (``--profile``), timed, under its autocast."""
    unit = label if technique is None else f"{label}@{layer}"
    with ctx.profiled(unit), ctx.timer(label, layer, len(batch.items)), ctx.autocast(technique):
        yield


def view_unit(ctx: Context, batch: Batch, name: str, layer: str) -> dict:
    """One per-batch unit of a view; its error is recorded, not raised."""
    try:
        return learned.VIEWS[name].batch(ctx, batch, layer)
    except (ValueError, RuntimeError) as err:
        return {"problem": problem_of(name, layer, err)}


def after(ctx: Context) -> None:
    """Run-wide work once every batch is done: the views of what the network learned that
    need the whole data set or none (``learned.after``), then the probe again (the floor
    takes each shape's best). Its time is added to the run's in ``finish``."""
    started = time.perf_counter()
    with ctx.phases("bookkeeping"):
        learned.after(ctx)
    with ctx.phases("probe"):
        p = ctx.store.read_part(MODEL, "run")["probe"]  # what the floor is built on
        again = per_row_times(
            ctx.model,
            tuple(ctx.spec.input_size),
            ctx.device,
            p["layout"],
            p["rows"],
            ctx.forward_model,
        )
    ctx.store.write_part(MODEL, "probe-end", again)
    ctx.store.write_part(MODEL, "after", {"after_seconds": time.perf_counter() - started})
    save_phases(ctx)


def save_phases(ctx: Context) -> None:
    """This process's phase table so far, as a part (``finish`` adds up the shards')."""
    index, count = ctx.config.shard
    ctx.phases.part = ctx.phases.part or f"phases-{index}-of-{count}"
    ctx.store.write_part(MODEL, ctx.phases.part, ctx.phases.snapshot())


def work(
    config: RunConfig,
    progress: bool = True,
    fresh: bool = True,
    rank: int = 0,
    phases: Phases | None = None,
) -> Context:
    """Do this process's share of the units, skipping finished ones; returns the context
    (``after`` takes it for the run-wide work)."""
    started = time.perf_counter()
    phases = phases or Phases()
    with phases("start"):  # what the nested phases (model, probe, data) leave: checks, set-up
        ctx = begin(open_context(config, local_rank=rank, phases=phases), fresh)
    if progress:
        print(ctx.plan(), file=sys.stderr)
    with phases("bookkeeping"):  # the per-batch loop's own work: parts read, progress shown
        batches = mine(ctx)
        bar = tqdm(
            total=sum(len(b) for _, b in batches), desc="images", unit="img", disable=not progress
        )
        for index, records in batches:
            process(ctx, index, records)
            bar.update(len(records))
        bar.close()
    index, count = config.shard
    marker = {
        "seconds": time.perf_counter() - started,
        "device": str(ctx.device),
        "peak_rss_mb": peak_rss_mb(),
        "forward_rows": ctx.timer.counter.rows,
        "gradient_rows": ctx.timer.counter.grad_rows,
    }
    ctx.store.write_part(MODEL, f"shard-{index}-of-{count}", marker)
    save_phases(ctx)
    return ctx


def shards_done(out: str, count: int) -> bool:
    done = Store(out).done_units(MODEL)
    return all(f"shard-{i}-of-{count}" in done for i in range(count))


class Gathered:
    """Everything the parts hold, added up: each part, per batch or run-wide, goes through
    ``add`` once."""

    def __init__(self):
        self.rows: dict[str, list[dict]] = defaultdict(list)  # table -> rows
        self.calls: list[dict] = []  # timings
        self.problems: list[str] = []
        self.scales: dict[str, float] = {}  # unit -> largest value over its batches
        self.sums: dict[str, dict[str, list[float]]] = {}  # unit -> mode -> summed curve
        self.counts: dict[str, int] = {}  # unit -> images scored
        self.run: dict = {}  # run.json entries of the run-wide views

    def add(self, unit: str, part: dict) -> None:
        for table in TABLES:
            self.rows[table] += part.get(table, [])
        if part.get("timing"):
            self.calls.append(part["timing"])
        if part.get("problem") and part["problem"] not in self.problems:
            self.problems.append(part["problem"])
        if "scale" in part:
            self.scales[unit] = max(self.scales.get(unit, 0.0), part["scale"])
            scored = len({r["image"] for r in part["metrics"]})  # images scored
            self.counts[unit] = self.counts.get(unit, 0) + scored
        for mode, total in part.get("curves", {}).items():
            mine = self.sums.setdefault(unit, {}).setdefault(mode, [0.0] * len(total))
            self.sums[unit][mode] = [a + b for a, b in zip(mine, total, strict=True)]
        self.run.update(part.get("run", {}))

    def curves(self) -> dict[str, dict[str, list[float]]]:
        """Each unit's mean perturbation curves."""
        return {
            unit: {mode: [v / self.counts[unit] for v in total] for mode, total in by_mode.items()}
            for unit, by_mode in self.sums.items()
        }


def owed_views(about: dict, done: set[str]) -> list[str]:
    """The run-wide views the run ``about`` describes asked for and has not made, ``done``
    being its model folder's finished units."""
    groups = parse_metrics(about["settings"]["metrics"])
    return learned.owed(done, about["methods"], groups)


def after_merge(out: str, phases: Phases) -> None:
    """What a merge of shard folders still owes once every shard's batches are in ``out``:
    the run-wide work (``after``), as the last shard or torchrun's rank 0 does it, on the
    model the run's settings name. When a shard is missing or the model does not load, it
    says so and leaves the views to a later merge (``finish`` lists them as not made)."""
    store = Store(out)
    about = store.read_part(MODEL, "run")
    done = store.done_units(MODEL)
    lacking = owed_views(about, done)
    if not lacking and "after" in done:
        return
    counts = {int(u.rsplit("-of-", 1)[1]) for u in done if u.startswith("shard-")}
    absent = [f"{i}/{n}" for n in counts for i in range(n) if f"shard-{i}-of-{n}" not in done]
    if absent:
        print(f"reportgen: shard(s) {', '.join(absent)} not merged yet: run-wide views wait")
        return
    settings = {**about["settings"], "out": out, "resume": True}
    config = RunConfig.from_settings(settings)
    try:
        ctx = begin(open_context(config, phases=phases), fresh=False)
    except (OSError, RuntimeError, ValueError, ImportError) as err:
        print(
            f"reportgen: merge could not load the model '{config.model}' ({err}); "
            f"not made: {', '.join(lacking) or 'the end probe'}"
        )
        return
    ctx.phases.part = "phases-merge"  # the shards keep their own tables
    print(f"reportgen: merge makes the run-wide views: {', '.join(lacking) or 'none'}")
    after(ctx)


def finish(out: str, phases: Phases | None = None) -> Summary:
    """Tables and ``run.json`` from the parts; no model needed.
    Raises if any batch of the run is unfinished (a shard still working or lost)."""
    store = Store(out, phases)
    about = store.read_part(MODEL, "run")
    if about is None:
        raise FileNotFoundError(f"'{out}' holds no run: nothing to finish")
    found, missing = Gathered(), []
    for index in range(about["batches"]):
        batch = batch_name(index)
        images = store.read_part(batch, "images")
        for unit in about["units"] if images is None or images["ok"] else ["images"]:
            part = store.read_part(batch, unit)
            if part is None:
                missing.append(f"{batch}/{unit}")
            else:
                found.add(unit, part)
    for unit in sorted(store.done_units(MODEL)):
        if unit.startswith(learned.AFTER):
            found.add(unit, store.read_part(MODEL, unit))
    if missing:
        raise OptionError(
            f"'{out}' has {len(missing)} unfinished units (first: {', '.join(missing[:3])}): "
            "finish them with `reportgen run --resume` (same options), or run the missing "
            "shards and `reportgen merge`"
        )
    lacking = owed_views(about, store.done_units(MODEL))
    if lacking:  # listed on the index page and in the closing summary, never left out silently
        found.problems.append(
            f"run-wide views not made: {', '.join(lacking)} (they need every batch and the "
            "model: `reportgen merge` or `reportgen run --resume` where the model loads)"
        )
    rows = found.rows
    for table in TABLES:
        store.write_table(table, rows[table])
    metrics = store.read_table("metrics")  # the rankings and how far the metrics agree
    store.write_table("rankings", ranking_rows(rankings(metrics), about["dataset"]))
    store.write_table("metric_agreement", agreement_rows(metrics, about["dataset"]))
    for view in learned.VIEWS.values():
        if view.tables and view.name in about["methods"]:
            for table, made in view.tables(store, rows, about).items():
                store.write_table(table, made)
    model = about["model"]["name"]
    calls = found.calls
    store.write_table("timings", timing_rows(calls, model, about["device"], about["threads"]))
    ok = [row["image"] for row in rows["images"] if row["status"] == "ok"]
    shards = [store.read_part(MODEL, u) for u in sorted(store.done_units(MODEL))]
    seconds = max((p["seconds"] for p in shards if "seconds" in p), default=0.0)
    seconds += sum(p.get("after_seconds", 0.0) for p in shards)
    peak = max((p["peak_rss_mb"] for p in shards if "peak_rss_mb" in p), default=None)
    failed = len(rows["images"]) - len(ok)
    store.write_json(
        "run",
        {
            **about,
            **found.run,
            "scales": found.scales,
            "curves": found.curves(),
            "seconds": round(seconds, 2),
            "peak_rss_mb": peak,
            "forward_rows": sum(p.get("forward_rows", 0) for p in shards),
            "gradient_rows": sum(p.get("gradient_rows", 0) for p in shards),
            "failed": failed,
            "problems": found.problems,
        },
    )
    return Summary(out, seconds, about["images"], failed, about["methods"], found.problems)


def write_phases(out: str, phases: Phases, wall: float) -> None:
    """The phase table (``data/phases.csv``): this process's phases, which include the
    tables and the render, added to the other shards' stored ones; ``wall`` is this
    process's wall time, and each share is of it."""
    store = Store(out)
    mine = {name: dict(row) for name, row in phases.snapshot().items()}
    tables = [mine] + [
        store.read_part(MODEL, unit)
        for unit in sorted(store.done_units(MODEL))
        if unit.startswith("phases-") and unit != phases.part
    ]
    about = store.read_json("run")
    end = store.read_part(MODEL, "probe-end") if "probe-end" in store.done_units(MODEL) else None
    probe = best_times(about.get("probe"), end)
    rows = phase_rows(merge_phases([t for t in tables if t]), probe, wall)
    store.write_table("phases", rows)
    covered = sum(r["seconds"] for r in rows)
    floor = sum(r["floor_seconds"] for r in rows)
    store.write_json(
        "phases",
        {
            "wall_seconds": wall,
            "covered_seconds": covered,
            "coverage": covered / wall if wall else None,
            "floor_seconds": floor,
            "efficiency": floor / wall if wall else None,
            "probe": probe,  # the start-up probe, each per-row time the best of start and end
            "probe_end": end,
        },
    )


def phase_summary(out: str) -> str:
    """One line for the closing summary: coverage, efficiency and the top three phases."""
    store = Store(out)
    about = store.read_json("phases")
    top = store.read_table("phases").head(3)
    where = ", ".join(f"{r.phase} {r.seconds:.0f} s" for r in top.itertuples())
    return (
        f"time: {where}; phases cover {100 * about['coverage']:.0f} % of the run, "
        f"efficiency {100 * about['efficiency']:.0f} % (floor {about['floor_seconds']:.0f} s "
        f"of model passes at the probe's speed; perf.html#phases)"
    )


def run(config: RunConfig, progress: bool = True) -> Summary:
    """Compute every selected technique and metric over the data set, store the tables and
    the phase table (``reportgen run`` also renders the site)."""
    started = time.perf_counter()
    phases = Phases()
    after(work(config, progress, phases=phases))
    summary = finish(config.out, phases)
    write_phases(config.out, phases, time.perf_counter() - started)
    return summary
