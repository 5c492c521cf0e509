"""Soak of `magicprop batch`: N small jobs with failures mixed in, killed with SIGKILL at random moments and restarted
with --resume until it finishes; nothing may be lost, repeated, left half-written, or leak.

The jobs run the weight-free propagators (`flow`, `copy`) on small synthetic clips (written once into WORKDIR/assets
and reused). About a quarter fail, each its own way: a missing video, a text file named .mp4, an mp4 with no decodable
frame, a keyframe that is not an image, a keyframe index outside the clip, a line that is not JSON, and an output
folder made unwritable midway (chmod 0500; as root, whom chmod does not stop, the folder is replaced by a file).
Kills land after a random number of jobs is done, plus a random fraction of a job, so some hit a job mid-write.

Checked, and printed with the numbers as one JSON line (and written with --json):
- every good job completed exactly once (its OUT.json, once there, is never rewritten) with frames identical to a solo
  run of the same settings (`jobs.run_job`, what `magicprop propagate` runs);
- every bad job reported in exactly one line by the run that finished, at most once by any run, never a traceback;
- no temporary file left (`*.tmp*`, `*.partial`, `*.magicprop-work`) in the output folder;
- peak RSS flat across restarts (VmHWM of each process, from /proc) and within the longest run (sampled from /proc).

    python benchmarks/soak.py --jobs 1000 --kills 20 --json outputs/soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
BAD_KINDS = ("missing_video", "text_as_video", "no_decodable_frames", "keyframe_not_an_image", "keyframe_out_of_range",
             "not_json", "unwritable_output")  # fmt: skip
ASSETS_VERSION = 1  # bump when the assets change: WORKDIR/assets is rebuilt
ERROR = re.compile(r"^jobs\.jsonl:(\d+): error: ")
LEFTOVER = re.compile(r"(\.tmp|\.partial$|\.magicprop-work$)")


@dataclass
class Job:
    line: int  # 1-based line of jobs.jsonl
    kind: str  # "good" or one of BAD_KINDS
    values: dict | None  # the line's settings (None for the line that is not JSON)


@dataclass
class Run:
    """One batch process: how it ended, what it used, what it said."""

    killed: bool
    exit_code: int | None
    seconds: float
    peak_rss_mb: float  # VmHWM of its last sample (ru_maxrss would count the driver's size at fork: exec keeps it)
    jobs_written: int  # "wrote" lines it printed
    rss_samples: list[tuple[int, float]] = field(default_factory=list)  # (jobs written so far, RSS MB), every ~0.25 s
    errors: dict[int, int] = field(default_factory=dict)  # jobs.jsonl line -> error lines about it
    tracebacks: int = 0


# ---------------------------------------------------------------------------------------------------------------------
# 1. Assets (once per WORKDIR) and the jobs file
# ---------------------------------------------------------------------------------------------------------------------
def make_assets(folder: Path) -> dict[str, Path]:
    """Three small clips with their edited frames as keyframes, and the bad files; reused while ASSETS_VERSION holds."""
    stamp = folder / "assets.json"
    names = {f"clip{i}": folder / f"clip{i}.mp4" for i in range(3)}
    names |= {f"key{i}_{k}": folder / f"key{i}_{k}.png" for i in range(3) for k in ("first", "last")}
    names |= {"text_as_video": folder / "notes.mp4", "no_decodable_frames": folder / "headless.mp4",
              "keyframe_not_an_image": folder / "key_text.png", "missing_video": folder / "missing.mp4"}  # fmt: skip
    if stamp.is_file() and json.loads(stamp.read_text()).get("version") == ASSETS_VERSION:
        return names
    sys.path.insert(0, str(ROOT / "src"))
    from magicprop.synthetic import render_clip
    from magicprop.video import save_image, write_video

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(3):
        clip = render_clip(i, frames=6 + 2 * i, size=(32, 48))
        write_video(names[f"clip{i}"], clip.source, 8.0)
        save_image(names[f"key{i}_first"], clip.edited[0])
        save_image(names[f"key{i}_last"], clip.edited[-1])
    names["text_as_video"].write_text("this is not a video\n" * 20)
    full = names["clip0"].read_bytes()
    names["no_decodable_frames"].write_bytes(full[: full.find(b"mdat") + 20])  # the index survives, no frame does
    names["keyframe_not_an_image"].write_text("I am a text file\n")
    stamp.write_text(json.dumps({"version": ASSETS_VERSION}))
    return names


def make_jobs(n: int, assets: dict[str, Path], rng: random.Random) -> list[Job]:
    """n jobs, a quarter bad (at least one of each kind, while a third stay good); unwritable outputs come last, so the
    batch reaches them only after the folder was made unwritable (the first kill lands in the first half)."""
    n_bad = min(max(len(BAD_KINDS), round(n / 4)), n - max(2, n // 3))
    bad = [BAD_KINDS[i % len(BAD_KINDS)] for i in range(n_bad)]
    late = [k for k in bad if k == "unwritable_output"]
    kinds = [k for k in bad if k != "unwritable_output"] + ["good"] * (n - n_bad)
    rng.shuffle(kinds)
    jobs = []
    for i, kind in enumerate(kinds + late, 1):
        clip = rng.randrange(3)
        end = rng.choice(("first", "last"))
        values = {"video": str(assets[f"clip{clip}"]), "keyframe_image": str(assets[f"key{clip}_{end}"]),
                  "keyframe_index": 0 if end == "first" else -1, "propagator": rng.choice(("flow", "copy")), "seed": 0,
                  "output": f"job-{i:05d}.mp4"}  # fmt: skip
        if kind in ("missing_video", "text_as_video", "no_decodable_frames"):
            values["video"] = str(assets[kind])
        elif kind == "keyframe_not_an_image":
            values["keyframe_image"] = str(assets[kind])
        elif kind == "keyframe_out_of_range":
            values["keyframe_index"] = 99
        elif kind == "unwritable_output":
            values["output"] = f"unwritable/job-{i:05d}.mp4"
        jobs.append(Job(i, kind, None if kind == "not_json" else values))
    return jobs


def write_jobs_file(jobs: list[Job], path: Path) -> None:
    lines = ["{not json: this line is broken" if j.values is None else json.dumps(j.values) for j in jobs]
    path.write_text("\n".join(lines) + "\n")


def make_unwritable(folder: Path) -> str:
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return "chmod 0500"
    shutil.rmtree(folder)
    folder.write_text("in the way: as root, chmod does not stop writes\n")
    return "replaced by a file (running as root)"


# ---------------------------------------------------------------------------------------------------------------------
# 2. Solo references: each good job's settings, run alone
# ---------------------------------------------------------------------------------------------------------------------
def solo_frames(jobs: list[Job], folder: Path) -> dict[str, object]:
    """Frames of a solo run of each distinct good setting, by its JSON (settings repeat: computed once each)."""
    sys.path.insert(0, str(ROOT / "src"))
    from magicprop.jobs import EditJob, PipelineCache, run_job
    from magicprop.video import read_video

    frames, cache = {}, PipelineCache()
    for job in jobs:
        key = settings_key(job)
        if job.kind != "good" or key in frames:
            continue
        out = folder / f"solo-{len(frames):03d}.mp4"
        run_job(EditJob.from_mapping({**job.values, "output": str(out)}), cache=cache, command="propagate")
        frames[key] = read_video(out)[0]
    return frames


def settings_key(job: Job) -> str:
    return json.dumps({k: v for k, v in (job.values or {}).items() if k != "output"}, sort_keys=True)


# ---------------------------------------------------------------------------------------------------------------------
# 3. Run, kill, restart
# ---------------------------------------------------------------------------------------------------------------------
def run_once(cmd: list[str], logs: Path, kill_after: int | None, delay: float, done_before: int) -> Run:
    """Start the batch; SIGKILL it `delay` s after the jobs done in all (done_before + its own) reach kill_after."""
    out_log, err_log = logs.with_suffix(".out"), logs.with_suffix(".err")
    t0 = time.monotonic()
    with open(out_log, "wb") as out, open(err_log, "wb") as err:  # files, not pipes: a full pipe would stall the child
        proc = subprocess.Popen(cmd, env=ENV, stdout=out, stderr=err, cwd=ROOT)
    written, samples, kill_at, peak = 0, [], None, 0.0
    while proc.poll() is None:
        time.sleep(0.02)
        written = out_log.read_bytes().count(b": wrote ")
        rss, hwm = _memory_mb(proc.pid)
        peak = max(peak, hwm)
        if not samples or time.monotonic() - t0 > 0.25 * len(samples):
            samples.append((written, rss))
        if kill_after is not None and kill_at is None and done_before + written >= kill_after:
            kill_at = time.monotonic() + delay
        if kill_at is not None and time.monotonic() >= kill_at:
            proc.kill()
    text = err_log.read_text(errors="replace").replace("\r", "\n")
    errors = Counter(int(m.group(1)) for line in text.splitlines() if (m := ERROR.match(line)))
    return Run(killed=proc.returncode == -signal.SIGKILL, exit_code=proc.returncode, seconds=round(time.monotonic() - t0, 2),
               peak_rss_mb=peak, jobs_written=out_log.read_bytes().count(b": wrote "),
               rss_samples=[s for s in samples if s[1] > 0], errors=dict(errors), tracebacks=text.count("Traceback"))  # fmt: skip


def _memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) of a live process, MB; zeros once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0.0
    values = [re.search(rf"^{name}:\s+(\d+) kB", status, re.M) for name in ("VmRSS", "VmHWM")]
    return tuple(round(int(m.group(1)) / 1024, 1) if m else 0.0 for m in values)


def soak(jobs_file: Path, out: Path, n_good: int, kills: int, rng: random.Random, on_first_kill) -> tuple[list[Run], list[dict]]:
    """Run the batch until it finishes on its own; return its runs and, after each, the stat of every OUT.json."""
    cmd = [sys.executable, "-m", "magicprop.cli", "batch", str(jobs_file), "--output-dir", str(out), "--resume"]
    # kill points count jobs done in all; the first within the first half (see make_jobs), the rest anywhere
    points = sorted([rng.randrange(1, max(2, n_good // 2))] + [rng.randrange(1, max(2, n_good)) for _ in range(kills - 1)])[:kills]
    runs, stats, done = [], [], 0
    while True:
        # a planned kill waits for at least one job of its own run: a kill while Python starts tests little
        kill_after = max(points[len(runs)], done + 1) if len(runs) < len(points) else None
        run = run_once(cmd, out.parent / f"run-{len(runs):03d}", kill_after, rng.uniform(0, 0.15), done)
        runs.append(run)
        done += run.jobs_written
        stats.append({p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("job-*.json")})
        if not run.killed:
            return runs, stats
        if len(runs) == 1:
            on_first_kill()
        if len(runs) > kills + 5:
            raise RuntimeError(f"the batch was killed {len(runs)} times, though only {kills} kills were planned")


# ---------------------------------------------------------------------------------------------------------------------
# 4. What must hold
# ---------------------------------------------------------------------------------------------------------------------
def check(jobs: list[Job], runs: list[Run], stats: list[dict], out: Path, solo: dict) -> dict:
    """The soak's properties, each with the jobs that break it (empty lists when all hold)."""
    sys.path.insert(0, str(ROOT / "src"))
    import numpy as np

    from magicprop.video import read_video

    good = [j for j in jobs if j.kind == "good"]
    final = runs[-1]
    missing, rewritten, different = [], [], []
    for job in good:
        name = f"job-{job.line:05d}.json"
        seen = [s[name] for s in stats if name in s]
        if not (out / name).is_file():
            missing.append(job.line)
            continue
        if len(set(seen)) != 1:  # once written, the same file (inode, mtime) after every later run
            rewritten.append(job.line)
        if not np.array_equal(read_video(out / f"job-{job.line:05d}.mp4")[0], solo[settings_key(job)]):
            different.append(job.line)
    bad = [j.line for j in jobs if j.kind != "good"]
    not_once = [i for i in bad if final.errors.get(i, 0) != 1]
    repeated = sorted({i for r in runs for i, n in r.errors.items() if n > 1})
    good_reported = sorted({i for r in runs for i in r.errors if i not in set(bad)})
    leftovers = sorted(str(p.relative_to(out)) for p in out.rglob("*") if LEFTOVER.search(p.name))
    return {"good_missing": missing, "good_rewritten": rewritten, "good_not_identical": different,
            "bad_not_reported_once": not_once, "bad_reported_twice_in_a_run": repeated, "good_reported_as_failed": good_reported,
            "tracebacks": sum(r.tracebacks for r in runs), "leftovers": leftovers[:20], "leftover_count": len(leftovers)}  # fmt: skip


def rss_flatness(runs: list[Run]) -> dict:
    """Peak RSS per restart, and the growth within the run that wrote the most jobs, from its first written job on
    (before it, Python and torch are still loading)."""
    peaks = [r.peak_rss_mb for r in runs if r.jobs_written > 0] or [r.peak_rss_mb for r in runs]
    longest = max(runs, key=lambda r: sum(n >= 1 for n, _ in r.rss_samples))
    warm = [mb for n, mb in longest.rss_samples if n >= 1] or [0.0]
    return {"peak_rss_mb_per_run": [r.peak_rss_mb for r in runs], "peak_rss_spread": round(max(peaks) / min(peaks), 3),
            "longest_run_jobs": longest.jobs_written, "longest_run_rss_mb": [warm[0], max(warm)],
            "longest_run_rss_growth_mb": round(max(warm) - warm[0], 1)}  # fmt: skip


# Restarts that ran different jobs peak differently (a run killed after its first small job never reaches the peak of
# a larger one: 353 against 415 MB here since a weight-free run stopped loading torch, a spread of 1.18); what a leak
# looks like is growth with the work done, so a spread of up to this many MB is flat whatever the ratio.
SPREAD_FLOOR_MB = 100.0


def is_flat(rss: dict) -> bool:
    """Flat: restarts peak within 15% (or `SPREAD_FLOOR_MB`) of each other, and the longest run grows less than 10% of
    its peak."""
    peaks = rss["peak_rss_mb_per_run"]
    close = rss["peak_rss_spread"] <= 1.15 or max(peaks) - min(peaks) <= SPREAD_FLOOR_MB
    return close and rss["longest_run_rss_growth_mb"] <= 0.10 * max(peaks)


def fresh_folder(folder: Path) -> Path:
    if folder.exists():
        for p in folder.rglob("*"):  # a folder left unwritable by the last soak
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def summary_line(r: dict) -> str:
    rss = r["peak_rss_mb_per_run"]
    return (f"soak: {r['good_completed_once_identical']}/{r['good']} good jobs completed once and identical to a solo run, "
            f"{r['bad_reported_once']}/{r['bad']} bad jobs reported once, {r['kills']} SIGKILLs, {r['leftover_count']} "
            f"leftovers, {r['tracebacks']} tracebacks, peak RSS {min(rss):.0f}-{max(rss):.0f} MB per run "
            f"({'flat' if r['rss_flat'] else 'NOT flat'}), {r['seconds']:.0f} s: {'OK' if r['ok'] else 'FAILED'}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100, help="jobs in the batch file (a quarter of them bad)")
    parser.add_argument("--kills", type=int, default=None, help="SIGKILLs planned (default: 2 + jobs / 100)")
    parser.add_argument("--seed", type=int, default=0, help="draws the jobs and the kill moments")
    parser.add_argument("--workdir", default=str(ROOT / "outputs" / "soak"), help="assets/ are kept here; run/ is redone")
    parser.add_argument("--json", metavar="PATH", help="write the report (and every run's record) here")
    args = parser.parse_args(argv)
    kills = 2 + args.jobs // 100 if args.kills is None else args.kills
    rng = random.Random(args.seed)
    t0 = time.monotonic()

    # 1. Assets, jobs; the solo references are computed alongside the soak (most of either is starting Python and torch)
    workdir = Path(args.workdir).resolve()
    assets = make_assets(workdir / "assets")
    run_dir = fresh_folder(workdir / "run")
    out = run_dir / "out"
    (out / "unwritable").mkdir(parents=True)
    jobs = make_jobs(args.jobs, assets, rng)
    write_jobs_file(jobs, run_dir / "jobs.jsonl")
    solo: dict = {}
    worker = threading.Thread(target=lambda: solo.update(solo_frames(jobs, run_dir / "solo")), daemon=True)
    worker.start()

    # 2. Batch, killed and restarted until it finishes
    how: list[str] = []
    on_first_kill = lambda: how.append(make_unwritable(out / "unwritable"))  # noqa: E731
    if kills == 0:
        on_first_kill()
    n_good = sum(j.kind == "good" for j in jobs)
    runs, stats = soak(run_dir / "jobs.jsonl", out, n_good, kills, rng, on_first_kill)
    worker.join()
    if len(solo) < len({settings_key(j) for j in jobs if j.kind == "good"}):
        raise RuntimeError("the solo reference runs failed (see the traceback above)")

    # 3. Report
    problems = check(jobs, runs, stats, out, solo)
    rss = rss_flatness(runs)
    ok = not any(v for k, v in problems.items() if k != "leftovers") and is_flat(rss)
    report = {
        "jobs": len(jobs), "good": n_good, "bad": len(jobs) - n_good, "bad_kinds": dict(Counter(j.kind for j in jobs if j.kind != "good")),
        "kills": sum(r.killed for r in runs), "restarts": len(runs) - 1, "good_completed_once_identical": n_good - len(
            set(problems["good_missing"]) | set(problems["good_rewritten"]) | set(problems["good_not_identical"])),
        "bad_reported_once": len(jobs) - n_good - len(problems["bad_not_reported_once"]), **problems, **rss,
        "rss_flat": is_flat(rss), "unwritable_midway": how[0] if how else None, "ok": ok,
        "seconds": round(time.monotonic() - t0, 1),
    }  # fmt: skip
    print(json.dumps(report))
    print(summary_line(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**report, "runs": [asdict(r) for r in runs]}, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
