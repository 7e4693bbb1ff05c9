"""Runs that survive being killed, resume where they stopped, repeat exactly, and split
across processes: each compared table by table with one uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reportgen.cli import main

from .conftest import shared_run

# cheap techniques of every kind: a gradient CAM at two layers, a pixel gradient, a
# perturbation, a seeded random baseline, and the feature-map view
RUN = [
    # fixed: the start-up probe could pick another layout in another process; channels-last,
    # where bfloat16 passes on this CPU are 3x as fast as in NCHW (the run 39.6 -> 30.4 s)
    "--layout",
    "nhwc",
    "--limit",
    "4",
    "--batch-size",
    "1",
    "--methods",
    "gradcam,gradcampp,saliency,occlusion,baseline_random,feature_maps",
    "--set",
    "occlusion.window=112",
    "--set",
    "occlusion.stride=112",
    # every default group but the sanity check (its resume: test_learned.py)
    "--metrics",
    "faithfulness,insertion_deletion,localisation",
]
TABLES = ["images", "predictions", "metrics", "layers"]


def tables(out: Path) -> dict[str, bytes]:
    return {name: (out / "data" / f"{name}.csv").read_bytes() for name in TABLES}


def every_table(out: Path) -> dict[str, bytes]:
    """Every CSV the run wrote but its timings (wall-clock figures differ run to run)."""
    timed = {"timings.csv", "phases.csv"}
    return {p.name: p.read_bytes() for p in (out / "data").glob("*.csv") if p.name not in timed}


def overlays(out: Path) -> dict[str, bytes]:
    """Every picture the run drew (photos, overlays, channel and synthesis images)."""
    drawn = [p for suffix in ("*.jpg", "*.webp") for p in (out / "img").rglob(suffix)]
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in drawn}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return shared_run(tmp_path_factory, "reference", RUN)


def command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "reportgen", "run", "--out", str(out), *RUN, *extra]


def kill_when(process: subprocess.Popen, out: Path, parts: int) -> None:
    """SIGKILL the run once ``parts`` finished units are on disk (or fail if it ends first)."""
    deadline = time.monotonic() + 300
    while len(list((out / "data" / "parts").glob("b*/*.json"))) < parts:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


# Kill points after the batches, each by the run's own progress (reportgen.faults): as a
# run-wide view starts, as the tables are assembled, and in the middle of the render
AFTER_BATCHES = ("channel pages", "tables", "page:20")


@pytest.mark.slow
def test_killed_in_every_phase_and_resumed_equals_uninterrupted(reference, tmp_path):
    """SIGKILL inside the batches (twice: inside the first batch, then later), as a
    run-wide view starts, in the table assembly and mid-render, each time resumed with
    --resume: the tables (every CSV but the timings), the pages and the overlays equal an
    uninterrupted run's."""
    from reportgen.faults import ENV

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for parts in (3, 14):  # early (inside the first batch), then later
        extra = ["--resume"] if parts != 3 else []
        process = subprocess.Popen(command(out, *extra), env=env, stderr=subprocess.DEVNULL)
        kill_when(process, out, parts)
    assert not (out / "data" / "metrics.csv").exists()  # it never got to the tables
    for point in AFTER_BATCHES:
        done = subprocess.run(
            command(out, "--resume"), env={**env, ENV: point}, capture_output=True, text=True
        )
        assert done.returncode == -signal.SIGKILL, f"not killed at {point}: {done.stderr[-500:]}"
    assert len(pages(out)) < len(pages(reference))  # the last kill came mid-render
    done = subprocess.run(command(out, "--resume"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert every_table(out) == every_table(reference)
    assert pages(out) == pages(reference)
    assert overlays(out) == overlays(reference)


def test_resume_refuses_other_settings(reference, tmp_path, capsys):
    out = tmp_path / "other"
    small = [*RUN[:2], "--limit", "1", "--metrics", "complexity"]  # a finished run, quickly
    assert main(["run", "--out", str(out), *small, "--methods", "saliency"]) == 0
    argv = ["run", "--out", str(out), *small, "--methods", "gradcam", "--resume"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "methods 'saliency' -> 'gradcam'" in err
    assert main(["run", "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "holds no run to continue" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_or_merge_of_another_version_warns(reference, tmp_path, capsys):
    """run.json names the reportgen version and commit; continuing or merging results of
    another says so on stderr (the results stand, but definitions may differ)."""
    import json
    import shutil

    from reportgen.context import commit

    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert commit().removesuffix("+changes") == head

    def older(name: str) -> Path:
        out = tmp_path / name
        shutil.copytree(reference, out)
        run_part = out / "data" / "parts" / "model" / "run.json"
        about = json.loads(run_part.read_text())
        about["versions"]["reportgen"] = "0.0.1"
        run_part.write_text(json.dumps(about))
        return out

    capsys.readouterr()
    assert main(["run", "--out", str(older("resumed")), *RUN, "--resume"]) == 0
    assert "another reportgen (reportgen '0.0.1' -> " in capsys.readouterr().err
    merged = tmp_path / "merged"
    shutil.copytree(reference, merged)
    assert main(["merge", "--out", str(merged), str(reference)]) == 0
    assert "another reportgen" not in capsys.readouterr().err
    assert main(["merge", "--out", str(merged), str(older("shard"))]) == 0
    assert "another reportgen" in capsys.readouterr().err


def test_resume_of_a_finished_run_recomputes_nothing(reference, tmp_path):
    import shutil

    out = tmp_path / "again"
    shutil.copytree(reference, out)  # a finished run (the reference itself stays untouched)
    parts = {p: p.stat().st_mtime_ns for p in (out / "data" / "parts").rglob("b*/*.json")}
    assert main(["run", "--out", str(out), *RUN, "--resume"]) == 0
    assert {p: p.stat().st_mtime_ns for p in parts} == parts
    assert tables(out) == tables(reference)


def test_same_seed_gives_identical_tables_and_images(reference, tmp_path):
    out = tmp_path / "twin"
    assert main(["run", "--out", str(out), *RUN]) == 0
    assert tables(out) == tables(reference)
    assert overlays(out) == overlays(reference)


def test_shards_in_separate_folders_merge_to_the_same_tables(
    reference, tmp_path, capsys, monkeypatch
):
    """The merge makes the run-wide views (here the channel pages) as the single run does;
    when the model does not load it names them, on the index page too, and a later merge
    makes them. One shard is killed mid-way and re-run with --resume first."""
    from reportgen import pipeline

    first, second = tmp_path / "shard0", tmp_path / "shard1"
    assert main(["run", "--out", str(first), *RUN, "--shard", "0/2"]) == 0
    assert "shard 0/2 done" in capsys.readouterr().out
    assert main(["merge", "--out", str(first)]) == 2  # half the batches are missing
    assert "unfinished units" in capsys.readouterr().err
    # the second shard is killed in its second batch, then re-run: it resumes
    from reportgen.faults import ENV

    killed = subprocess.run(
        command(second, "--shard", "1/2"),
        env={**os.environ, ENV: "predict@input:2"},
        text=True,
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-500:]
    assert main(["run", "--out", str(second), *RUN, "--shard", "1/2", "--resume"]) == 0

    def gone(*args, **kwargs):
        raise FileNotFoundError("weights.pt is not there")

    with monkeypatch.context() as patched:
        patched.setattr(pipeline, "open_context", gone)
        assert main(["merge", "--out", str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert "could not load the model 'efficientnet_lite0' (weights.pt is not there)" in out
    assert "run-wide views not made: feature_maps" in out
    assert "run-wide views not made: feature_maps" in (first / "index.html").read_text()
    assert tables(first) == tables(reference)
    assert main(["merge", "--out", str(first)]) == 0
    assert "merge makes the run-wide views: feature_maps" in capsys.readouterr().out
    assert every_table(first) == every_table(reference)
    assert "not made" not in (first / "index.html").read_text()


# Every default metric group (the sanity check included), the top patches and a synthesis
# view (filter visualisation, at a plumbing-only step count) over three of the durability
# run's images: three batches, so the shards split them unevenly
EVERYTHING = [*RUN[:-2], "--methods", "gradcam,saliency,occlusion,feature_maps,filter_vis"]
EVERYTHING[EVERYTHING.index("--limit") + 1] = "3"
EVERYTHING[-1] += ",top_patches"
EVERYTHING += ["--set", "filter_vis.steps=2", "--set", "filter_vis.size=64"]


def pages(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*.html")}


@pytest.mark.slow
def test_one_process_shards_and_torchrun_give_one_report(tmp_path, capsys):
    """One process, two shards in separate folders joined by `reportgen merge`, and two
    CPU processes under torchrun (gloo; rank 0 makes the run-wide views and the site):
    every table but the timings equal cell for cell, and the same pages. Asked for every
    core each, torchrun's processes share the cores instead (oversubscribed thread pools
    made a run over 18 times slower); CPU kernels sum in another order with another
    thread count, so the other two run with the same threads per process."""
    cores = len(os.sched_getaffinity(0))
    fair = max(1, cores // 2)
    saved = torch.get_num_threads()
    torch.set_num_threads(fair)
    one, shards = tmp_path / "one", [tmp_path / "shard0", tmp_path / "shard1"]
    try:
        assert main(["run", "--out", str(one), *EVERYTHING]) == 0
        for k, shard in enumerate(shards):
            assert main(["run", "--out", str(shard), *EVERYTHING, "--shard", f"{k}/2"]) == 0
        assert main(["merge", "--out", str(shards[0]), str(shards[1])]) == 0
    finally:
        torch.set_num_threads(saved)
    made = capsys.readouterr().out
    assert "merge makes the run-wide views: " in made
    for view in ("feature_maps", "filter_vis", "top_patches", "sanity"):
        assert view in made.split("merge makes the run-wide views: ")[1].split("\n")[0], view
    out = tmp_path / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": str(cores)}
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    argv += ["--master-port", "29533", "-m", "reportgen", "run", "--out", str(out), *EVERYTHING]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    if cores > fair:
        assert f"2 CPU processes share {cores} cores: {cores} -> {fair} threads" in done.stderr
    reference = every_table(one)
    assert {"sanity.csv", "synthesis.csv", "channels.csv", "patches.csv"} <= set(reference)
    for other in (shards[0], out):
        assert every_table(other) == reference, other.name
        assert pages(other) == pages(one), other.name
