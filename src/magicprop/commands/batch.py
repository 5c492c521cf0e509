"""Run many edits from a JSON-lines file, one job per line, sharing loaded models between jobs.

Each line holds the settings of one `magicprop edit` run, with the long flag names in snake_case:
  {"video": "clips/dog.mp4", "prompt": "a wolf in the snow", "seed": 0, "output": "dog_wolf.mp4"}
  {"video": "clips/car.mp4", "keyframe_image": "car_red.png", "keyframe_index": 0, "masks": "car_masks/"}
  {"video": "clips/cat.mp4", "keyframe_image": "cat_first_frame_edited.png"}   (its frame is found, as in propagate)
  {"video": "clips/cat.mp4", "prompt": "a dog", "edit_keyframes": "auto"}       (stage I on the suggested keyframes)
Relative paths are taken from the JSON-lines file's folder; outputs from --output-dir when given. A job without
"output" writes OUTPUT_DIR/<video name>-<line number>.mp4. Jobs whose OUT.mp4 and OUT.json both exist are skipped, so
re-running the same file finishes what a killed batch left. A failing job prints one line and the rest still run;
the exit status is 1 when any failed.

Under `accelerate launch`, job i runs on process i % num_processes, each process on its own GPU.

Examples:
  magicprop batch jobs.jsonl --output-dir outputs/
  accelerate launch --num_processes 4 -m magicprop.cli batch jobs.jsonl --output-dir outputs/
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

NAME = "batch"
HELP = "run one edit per line of a JSON-lines file (skips finished jobs; accelerate shares jobs across GPUs)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("jobs", metavar="JOBS.jsonl", help="one JSON object of edit settings per line")
    p.add_argument("--output-dir", metavar="DIR", help="where relative and missing outputs go (default: the jobs file's folder)")
    p.add_argument("--resume", action="store_true", help="continue jobs a killed batch left half done (their work folders)")


# what the launchers accelerate uses (torchrun; MPI for CPU processes) set to the number of processes
_WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


def process_share() -> tuple[int, int, str | None]:
    """(this process's index, the number of processes, its device; None: the job's own). Launched as one of several,
    accelerate's `PartialState` says (it imports torch); alone, nothing is asked, so a weight-free batch (flow, chain,
    lut, copy) never imports torch."""
    sizes = [os.environ.get(name, "").strip() for name in _WORLD_SIZE_VARIABLES]
    if all(not size.isdigit() or int(size) <= 1 for size in sizes):
        return 0, 1, None
    from accelerate import PartialState

    state = PartialState()
    return state.process_index, state.num_processes, str(state.device)


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError, first_line
    from ..fileio import require_file
    from ..jobs import EditJob, Outputs, PipelineCache, resolve_paths, run_job

    path = require_file(args.jobs, "jobs file")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, IsADirectoryError):
        raise UsageError(f"jobs file {path} is not a UTF-8 text file; write one JSON object per line") from None
    lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")]
    index, count, device = process_share()
    out_dir = Path(args.output_dir) if args.output_dir else path.parent
    cache = PipelineCache()
    done = skipped = 0
    failed: list[str] = []
    for n, (i, line) in enumerate(lines):
        if n % count != index:
            continue
        where = f"{path.name}:{i}"
        try:
            values = json.loads(line)
            if not isinstance(values, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            failed.append(f"{where}: error: not a JSON object of settings ({exc})")
            print(failed[-1], file=sys.stderr)
            continue
        try:
            values = resolve_paths({k: v for k, v in values.items() if k != "output"}, path.parent) | _output(values, out_dir, i)
            values.setdefault("resume", args.resume)
            if count > 1 and not values.get("device"):
                values["device"] = device
            job = EditJob.from_mapping(values, where=where)
            if Outputs.of(job.output).complete():
                Outputs.of(job.output).tidy()  # a kill after the record was written can leave a work folder
                skipped += 1
                continue
            record = run_job(job, cache=cache, command="edit")
            done += 1
            print(f"{where}: wrote {job.output} ({record['seconds']:g} s)")
        except Exception as exc:  # noqa: BLE001 - one job's failure, whatever it is, must not stop the others
            message = first_line(exc)
            failed.append(f"{where}: error: {message}")
            print(failed[-1], file=sys.stderr)
    rank = f" (process {index} of {count})" if count > 1 else ""
    print(f"batch{rank}: {done} done, {skipped} skipped (already complete), {len(failed)} failed")
    return 1 if failed else 0


def _output(values: dict, out_dir: Path, line: int) -> dict:
    from ..errors import UsageError
    from ..fileio import expand_user

    if values.get("output"):
        if not isinstance(values["output"], str):
            raise UsageError(f"output must be a file name, got {json.dumps(values['output'])[:60]}")
        out = expand_user(values["output"])
        return {"output": str(out if out.is_absolute() else out_dir / out)}
    stem = Path(str(values.get("video", "job"))).stem
    return {"output": str(out_dir / f"{stem}-{line}.mp4")}
