"""Command line: ``reportgen run | render | merge | list``.

Exit status: 0 when the run finished (images that were skipped or failed are
listed in the report), 1 when no image could be explained, 2 for a bad option or
input folder (one line on stderr; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

from evaluation import catalogue

from .config import SYNTHETIC_MODEL, RunConfig

EXIT_NOTHING_DONE = 1
EXIT_BAD_OPTION = 2


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"'{text}' is not i/N with 0 <= i < N, e.g. 0/2")
    return int(index), int(count)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="reportgen", description=__doc__)
    top.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = top.add_subparsers(dest="command", required=True)

    d = RunConfig()
    run = sub.add_parser("run", help="explain, score and render a site")
    run.add_argument(
        "--model",
        help="registered name, torchvision/ARCH, timm/NAME or package.module:factory (default "
        f"{d.model}; with --data synthetic: {SYNTHETIC_MODEL})",
    )
    run.add_argument("--weights", help="state-dict file for the model (loaded weights_only)")
    run.add_argument(
        "--data",
        help="folder of images, of class sub-folders, a VOC or ImageNet-val tree, or a set "
        "drawn by code: synthetic, composites (default: the embedded photos)",
    )
    run.add_argument("--methods", default=d.methods, help="comma-separated names, or all")
    run.add_argument(
        "--layers", default=d.layers, help="comma-separated module names for CAM methods, or auto"
    )
    run.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    run.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"])
    run.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    run.add_argument("--limit", type=positive_int, help="only the first N images")
    run.add_argument("--seed", type=int, default=d.seed)
    run.add_argument(
        "--target",
        default=d.target,
        help="class each map explains: predicted (default), label (first annotated), labels "
        "(a map per annotated class), topk:K (a map per K likeliest class) or a class id",
    )
    run.add_argument(
        "--metrics",
        default=d.metrics,
        help="metric groups, comma-separated, or default (all but settings, five more curves "
        "per map; robustness, which re-explains every image 10 times in the fast preset; and "
        "road, which solves a sparse system per image: slow on CPU) or all. "
        # argparse formats help with %: a literal one is doubled
        + "; ".join(f"{g}: {catalogue.group_help(g)}" for g in catalogue.GROUPS).replace("%", "%%"),
    )
    run.add_argument(
        "--curve-steps",
        type=positive_int,
        default=d.curve_steps,
        help="steps of the insertion/deletion curves, spaced as the --quality preset's (fast: "
        "8, step i of n at (i/n)^1.5 of the pixels; paper: 100 even, 1 %% of the pixels each)",
    )
    run.add_argument(
        "--input-size",
        help="the model's input, H,W or one side (default: the model's own; timm models: "
        "their pretrained configuration's)",
    )
    run.add_argument("--mean", help="per-channel mean of the model's normalisation, R,G,B")
    run.add_argument("--std", help="per-channel std of the model's normalisation, R,G,B")
    run.add_argument(
        "--output",
        default=d.output,
        choices=["auto", "softmax", "sigmoid"],
        help="the model's probabilities: softmax, sigmoid (multi-label) or its own (auto)",
    )
    run.add_argument(
        "--reshape",
        default=d.reshape,
        help="how the CAM layers' outputs read as [N, C, H, W]: auto (tokens [N, T, C] and "
        "channels-last found by shape), nchw, nhwc, tokens:P (P leading tokens dropped), or "
        "package.module:function",
    )
    run.add_argument(
        "--classes",
        default=d.classes,
        help="class ids class_model also draws, besides every predicted class (e.g. 1,130)",
    )
    run.add_argument(
        "--quality",
        default=d.quality,
        choices=["fast", "paper"],
        help="settings preset: fast (default; shortened settings measured to agree with the "
        "published ones, minutes on a CPU) or paper (every published setting, e.g. RISE's "
        "4000 masks, 512 filter_vis steps; long on a CPU); each method page lists both",
    )
    run.add_argument(
        "--precision",
        default=d.precision,
        choices=["fp32", "bf16", "fp16"],
        help="run the techniques under torch.autocast in this dtype (fp16: GPU only); "
        "predictions and metrics stay fp32; maps change slightly (README: Speed)",
    )
    run.add_argument(
        "--layout",
        default=d.layout,
        choices=["auto", "nchw", "nhwc"],
        help="memory layout of the model and its inputs: auto (default: the faster one in "
        "a probe at start-up, recorded in run.json), nchw or nhwc (channels_last); maps "
        "equal to float noise",
    )
    run.add_argument("--channels-last", action="store_true", help="the same as --layout nhwc")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out, skipping finished work (same options required)",
    )
    run.add_argument(
        "--profile",
        action="store_true",
        help="record a torch.profiler kernel table per technique (first batch; slows it)",
    )
    run.add_argument(
        "--shard",
        type=shard,
        help="do only every N-th batch, starting at i (i/N); under torchrun set from the rank",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="a technique's setting, e.g. --set rise.masks=1000 (repeatable; "
        "the method pages list each technique's settings)",
    )

    render = sub.add_parser("render", help="re-render the site from stored tables")
    render.add_argument("--out", default=d.out)

    merge = sub.add_parser(
        "merge", help="join the shards of one run (other --out folders) and render the site"
    )
    merge.add_argument("--out", default=d.out, help="the folder to merge into and render")
    merge.add_argument("folders", nargs="*", help="--out folders of the other shards")

    bench = sub.add_parser(
        "bench", help="time our techniques beside pytorch-grad-cam and captum (pytest-benchmark)"
    )
    bench.add_argument("--out", default=d.out, help="site folder: JSON to OUT/data/bench/")
    bench.add_argument("--size", default="full", choices=["full", "small"])
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    bench.add_argument("-k", dest="select", help="only benchmarks matching this pytest -k")

    benchmark = sub.add_parser(
        "benchmark",
        help="every scored method on the shipped data sets, each a report, rankings side by "
        "side (README: Benchmarks)",
    )
    benchmark.add_argument("--out", default="benchmark", help="folder: one report per set")
    benchmark.add_argument(
        "run_options", nargs="*", metavar="-- RUN_OPTION",
        help="after --, more `reportgen run` options for every set (e.g. -- --limit 20)",
    )  # fmt: skip

    compare = sub.add_parser(
        "compare", help="check two run folders hold the same tables and pages (exit 1 if not)"
    )
    compare.add_argument("folders", nargs=2, metavar="OUT", help="two --out folders")
    compare.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance of numbers")
    compare.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance of numbers")

    lst = sub.add_parser("list", help="list methods, metrics, models or layers")
    lst.add_argument("what", choices=["methods", "metrics", "models", "layers"])
    lst.add_argument("--model", default=d.model)
    lst.add_argument("--weights")
    return top


def cmd_run(args: argparse.Namespace) -> int:
    started = time.perf_counter()  # the run's wall clock: the phase table accounts for it
    from . import pipeline
    from .options import numbers
    from .techniques import parse_setting
    from .timing import Phases

    phases = Phases()
    phases.add("import libraries", time.perf_counter() - started)

    options: dict[str, dict[str, object]] = {}
    for text in args.set:
        method, key, value = parse_setting(text)
        options.setdefault(method, {})[key] = value
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    rank = int(os.environ.get("RANK", "0"))
    config = RunConfig(
        model=args.model or (SYNTHETIC_MODEL if args.data == "synthetic" else RunConfig.model),
        weights=args.weights,
        data=args.data,
        methods=args.methods,
        layers=args.layers,
        out=args.out,
        device=args.device,
        batch_size=args.batch_size,
        limit=args.limit,
        seed=args.seed,
        target=args.target,
        metrics=args.metrics,
        curve_steps=args.curve_steps,
        input_size=numbers(args.input_size, "--input-size", int, (1, 2), positive=True),
        mean=numbers(args.mean, "--mean", float, (3,)),
        std=numbers(args.std, "--std", float, (3,), positive=True),
        reshape=args.reshape,
        output=args.output,
        classes=args.classes,
        quality=args.quality,
        precision=args.precision,
        layout="nhwc" if args.channels_last else args.layout,
        options=options,
        resume=args.resume,
        shard=args.shard or (rank, world),
        profile=args.profile,
    )
    if world > 1 and not args.shard:
        return distributed(config, rank, phases, started)
    count = config.shard[1]
    state = pipeline.work(config, fresh=count == 1, phases=phases)
    if count > 1 and not pipeline.shards_done(config.out, count):
        print(
            f"reportgen: shard {config.shard[0]}/{count} done; the last shard to finish "
            f"builds the site (or run `reportgen merge --out {config.out} ...`)"
        )
        return 0
    pipeline.after(state)
    return finish(config.out, phases, started)


def distributed(config: RunConfig, rank: int, phases, started: float) -> int:
    """Under torchrun: rank 0 clears the folder (unless --resume), every rank does its
    share of the batches, and rank 0 builds the tables and the site once all are done."""
    import torch.distributed as dist

    from . import pipeline
    from .store import Store

    dist.init_process_group("gloo", timeout=timedelta(days=7))  # shards may take days
    try:
        share_cores(config.device, rank)
        if rank == 0 and not config.resume:
            Store(config.out).reset()
        dist.barrier()
        state = pipeline.work(
            config,
            progress=rank == 0,
            fresh=False,
            rank=int(os.environ.get("LOCAL_RANK", "0")),
            phases=phases,
        )
        dist.barrier()
        if rank:
            return 0
        pipeline.after(state)
        return finish(config.out, phases, started)
    finally:
        dist.destroy_process_group()


def share_cores(device: str, rank: int) -> None:
    """CPU processes under torchrun split the cores: with more threads than cores in all,
    the thread pools spin against each other and a run got over 18 times slower."""
    import torch

    from .options import resolve_device

    if resolve_device(device).type != "cpu":
        return
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    fair = max(1, (cores or 1) // local)
    if torch.get_num_threads() > fair:
        if rank == 0:
            print(
                f"reportgen: {local} CPU processes share {cores} cores: "
                f"{torch.get_num_threads()} -> {fair} threads each (OMP_NUM_THREADS sets it)",
                file=sys.stderr,
            )
        torch.set_num_threads(fair)


def finish(out: str, phases=None, started: float | None = None) -> int:
    """Tables from the parts, then the site; prints the summary. With the run's ``phases``
    (``reportgen run``), the phase table is written just before the performance page is
    rendered, so it covers the run up to its last page."""
    from . import pipeline
    from .render import SiteSize, render

    began = time.perf_counter()
    with phases("tables") if phases else contextlib.nullcontext():
        summary = pipeline.finish(out, phases)
    closing = None
    if phases is not None:

        def closing() -> None:  # called by render() right before perf.html
            pipeline.write_phases(out, phases, time.perf_counter() - started)

    with phases("render") if phases else contextlib.nullcontext():
        written, pages = render(out, before_perf=closing)
    total = (
        time.perf_counter() - started
        if started is not None
        else summary.seconds + time.perf_counter() - began
    )
    done = summary.images - summary.failed
    print(
        f"\nreportgen: {done} of {summary.images} images explained "
        f"with {len(summary.methods)} methods in {total:.1f} s"
    )
    if phases is not None:
        print(f"  {pipeline.phase_summary(out)}")
    if summary.failed:
        print(f"  {summary.failed} image(s) skipped: see the index page's 'Skipped images'")
    for problem in summary.problems:
        print(f"  not computed: {problem}")
    print(f"  site: {out}/index.html ({pages} pages); tables: {out}/data/")
    print(f"  {SiteSize.recorded(out)}")
    return 0 if done else EXIT_NOTHING_DONE


def cmd_merge(args: argparse.Namespace) -> int:
    """Copy the other shards' parts, maps and images into --out, make the run-wide views
    there once every shard is in (``pipeline.after_merge``), then finish."""
    from . import pipeline
    from .options import check_same_settings, warn_other_version
    from .store import MODEL, Store
    from .timing import Phases

    target = Store(args.out)
    for folder in args.folders:
        other = Store(folder)
        about = other.read_part(MODEL, "run")
        if about is None:
            raise FileNotFoundError(f"'{folder}' holds no reportgen run to merge")
        mine = target.read_part(MODEL, "run")
        if mine is not None:
            check_same_settings(mine["settings"], about["settings"], folder)
            warn_other_version(about.get("versions", {}), mine.get("versions", {}), folder)
        for sub in ("data/parts", "data/maps", "img"):
            if (Path(folder) / sub).is_dir():
                shutil.copytree(Path(folder) / sub, Path(args.out) / sub, dirs_exist_ok=True)
    started, phases = time.perf_counter(), Phases()
    pipeline.after_merge(args.out, phases)
    return finish(args.out, phases, started)


def cmd_render(args: argparse.Namespace) -> int:
    from .render import SiteSize, render

    started = time.perf_counter()
    written, pages = render(args.out)
    print(
        f"reportgen: wrote {written} of {pages} pages to {args.out}/ "
        f"({pages - written} unchanged) in {time.perf_counter() - started:.2f} s"
    )
    print(f"  {SiteSize.recorded(args.out)}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run ``evaluation/bench`` with pytest-benchmark; save its JSON where the site finds it."""
    import subprocess

    import evaluation.bench

    folder = Path(evaluation.bench.__file__).parent
    target = Path(args.out) / "data" / "bench" / f"{args.device}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    # in one process (-n 0): pytest-benchmark times nothing under xdist, which addopts use
    argv = [sys.executable, "-m", "pytest", str(folder), "-q", "-p", "no:cacheprovider", "-n", "0"]
    argv += ["--dist=no", "--benchmark-enable", "--benchmark-only", f"--benchmark-json={target}"]
    argv += ["--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name"]
    argv += ["-k", args.select] if args.select else []
    env = {**os.environ, "REPORTGEN_BENCH": args.size, "REPORTGEN_BENCH_DEVICE": args.device}
    try:
        code = subprocess.run(argv, env=env, cwd=folder).returncode
    except FileNotFoundError as err:
        raise FileNotFoundError(f"cannot start pytest ({err})") from err
    if code:
        print(
            "reportgen: benchmarks need the test extras: pip install -e '.[test]'", file=sys.stderr
        )
        return code
    print(f"reportgen: benchmark results in {target}")
    if (Path(args.out) / "data" / "run.json").is_file():
        return cmd_render(args)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import differences

    for folder in args.folders:
        if not (Path(folder) / "data").is_dir():
            raise FileNotFoundError(f"'{folder}' holds no run (no data/ folder)")
    found = differences(*args.folders, rtol=args.rtol, atol=args.atol)
    for line in found:
        print(line)
    a, b = args.folders
    print(
        f"reportgen: {a} and {b} "
        + (f"differ in {len(found)} ways" if found else "hold the same report")
    )
    return 1 if found else 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "methods":
        from . import techniques

        for t in techniques.REGISTRY.values():
            print(f"{t.name:14s} {t.family:9s} {t.title} ({t.cost})")
        return 0
    if args.what == "metrics":  # the catalogue every page reads
        print(f"{'id':24s} {'--metrics group':19s} {'better':7s} {'needs':7s} source")
        for m in catalogue.CATALOGUE:
            better = m.better if m.ranked else "-"
            print(f"{m.id:24s} {m.group or '-':19s} {better:7s} {m.needs:7s} {m.paper}")
        return 0
    from .models import REGISTRY, get_spec, layer_table, load_model

    if args.what == "models":
        for name, spec in REGISTRY.items():
            print(f"{name:20s} {spec.description}")
        print(f"{'torchvision/ARCH':20s} any torchvision classifier (hub weights or --weights)")
        print(
            f"{'timm/NAME':20s} any timm model, its own input size and normalisation (hub "
            'weights or --weights; names: python -c "import timm; print(timm.list_models())")'
        )
        print(f"{'package.module:fn':20s} your own nn.Module factory (with --weights)")
        return 0
    model, spec = load_model(get_spec(args.model), args.weights)
    print("\n".join(layer_table(model, spec)))
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import benchmark

    code = benchmark(args.out, args.run_options, main)
    if not code:
        print(f"reportgen: benchmark: {Path(args.out) / 'index.html'}")
    return code


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    commands = {
        "run": cmd_run,
        "render": cmd_render,
        "merge": cmd_merge,
        "bench": cmd_bench,
        "benchmark": cmd_benchmark,
        "compare": cmd_compare,
        "list": cmd_list,
    }
    try:
        return commands[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        if args.debug:
            raise
        print(f"reportgen: error: {err}", file=sys.stderr)
        return EXIT_BAD_OPTION


if __name__ == "__main__":
    sys.exit(main())
