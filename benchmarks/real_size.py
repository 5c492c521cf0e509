"""A real-size dry run (issue 26): every component of the method built from its real configuration with random
weights, saved in the hub folder layout, and the real commands run on those folders. Random weights cost exactly
what trained ones cost in time and memory; no download is needed.

    python benchmarks/real_size.py --json outputs/real_size.json                   # everything, this CPU (fp32)
    python benchmarks/real_size.py --skip timed commands --json costs.json          # FLOPs and memory only: 6 CPU minutes
    python benchmarks/real_size.py --skip timed --reuse --json out.json              # edit and train kept from a last call
    python benchmarks/real_size.py --device cuda --dtype bf16 --json gpu.json       # real GPU seconds and memory

Parts (`--skip` any):
  costs     parameters and FLOPs per call of every component (meta device: nothing allocated), per frame of PropDPM at
            256 and 512 (25 steps), PropDPM's overhead over a plain SD 1.5 UNet call (goal <= 1.05), training FLOPs,
            and the projection for an H100 (FLOPs / (989 TFLOP/s bf16 x 40% utilisation)).
  memory    peak memory of a `sd15-256` training step (batch 1 and the recipe's 8, with and without gradient
            checkpointing; EMA added) and of propagation at 256 and 512 in bf16, from fake tensors (nothing allocated);
            whether each fits 24, 40 and 80 GB.
  timed     seconds (and CPU seconds) per call of every component on --device in --dtype, with its peak memory, each
            in its own process.
  commands  the hub folders (about 8 GB on disk), then `magicprop edit` at 512x512 (stage I + PropDPM converted from
            the SD UNet, a few frames and steps), `magicprop train --config sd15-256` for --train-steps steps and its
            export, and `magicprop propagate --model EXPORT`; seconds, CPU seconds and peak memory of each. With
            --reuse, a command an earlier call finished (WORK/NAME.result.json) is not run again: its record is
            reported, marked with when it was made (complete hub folders are always kept); so are the costs,
            memory and timed parts' records.
Before anything that allocates for real, the script waits (up to --max-wait seconds) until MemAvailable is what the
step needs + 3 GB: the machine may be shared. What it could not run is listed under "not_run" with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import real_size_costs as costs

MARGIN_GB = 3.0
# GiB each step holds at its peak (CPU, fp32): edit 12.1 measured (3 frames at 512x512); train: 14.6 of tensors (fake
# tensors: PropDPM + AdamW, VAE and CLIP, batch 1, no EMA) + the process; the others estimated from their weights
NEEDS_GB = {"edit": 12.5, "train": 16.0, "propagate": 6.0, "hub": 4.5, "timed": 5.0}
TIMED = ["propdpm@256", "sd15_unet@256", "vae_decode@256", "clip_vision", "text_encoder", "depth_anything@518",
         "controlnet@512", "sd15_unet@512", "propdpm@512", "vae_encode@512", "vae_decode@512"]  # cheapest first  # fmt: skip


def mem_available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def wait_for_memory(need_gb: float, max_wait: float, what: str) -> str | None:
    """None once MemAvailable >= need + MARGIN_GB; else, after max_wait seconds, the reason not to run."""
    deadline = time.monotonic() + max_wait
    while (free := mem_available_gb()) < need_gb + MARGIN_GB:
        if time.monotonic() > deadline:
            return f"{what} needs {need_gb:.1f} GB + {MARGIN_GB:.0f}; MemAvailable stayed at or below {free:.1f} GB for {max_wait:.0f} s"
        print(f"waiting for memory ({what}: {free:.1f} of {need_gb + MARGIN_GB:.1f} GB available)", file=sys.stderr, flush=True)
        time.sleep(30)
    return None


def run_measured(argv: list[str], log: Path) -> dict:
    """`magicprop ARGV` in a child process; its exit status, wall and CPU seconds and peak resident memory."""
    result = log.with_suffix(".measured.json")  # not NAME.json: `magicprop edit -o edit.mp4` writes its record there
    start = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.call([sys.executable, __file__, "--measure-cli", str(result), *map(str, argv)], stdout=out, stderr=out,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    measured = json.loads(result.read_text()) if result.is_file() else {}
    tail = log.read_text().strip().splitlines()[-1:] if log.is_file() else []
    return {"rc": rc, "seconds": time.perf_counter() - start, **measured, "last_line": tail[0][:300] if tail else "",
            "command": "magicprop " + " ".join(map(str, argv))}  # fmt: skip


def measure_cli(result: str, argv: list[str]) -> int:
    """The child of `run_measured`: run the CLI, then record this process's CPU seconds and peak memory."""
    from magicprop.cli import main

    try:
        rc = main(argv)
    finally:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        Path(result).write_text(json.dumps({"cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_gb": usage.ru_maxrss / 2**20}))
    return rc


def time_component(name: str, device: str, dtype: str) -> dict:
    """The child of the timed part: build the component (and only what its call needs), time one call."""
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    res = int(name.split("@")[1]) if "@" in name and not name.startswith("depth") else 512
    needs = {"sd15_unet": ["sd15_unet"], "propdpm": ["propdpm"], "controlnet": ["controlnet"], "vae_encode": ["vae"],
             "vae_decode": ["vae"], "clip_vision": ["clip_vision"], "text_encoder": ["text_encoder"],
             "depth_anything": ["depth_anything"]}[name.split("@")[0]]  # fmt: skip
    torch.manual_seed(0)
    module, fn = costs.calls(costs.build(device, torch_dtype, only=needs), res, device)[name]()
    return {"component": name, "params": costs.params(module), "device": device, "dtype": dtype, **costs.timed(fn, device)}


def part_timed(args) -> tuple[dict, dict]:
    from real_size_commands import earlier_record

    rows, not_run = {}, {}
    for name in TIMED:
        record = args.work / "timed" / f"{name}-{args.device}-{args.dtype}.result.json"
        if (earlier := earlier_record(args, record)) is not None:
            rows[name] = earlier
            continue
        if (why := wait_for_memory(NEEDS_GB["timed"], args.max_wait, f"timing {name}")) is not None:
            not_run[f"timed {name}"] = why
            continue
        out = subprocess.run([sys.executable, __file__, "--time-component", name, "--device", args.device, "--dtype", args.dtype],
                             capture_output=True, text=True)  # fmt: skip
        if out.returncode:
            not_run[f"timed {name}"] = out.stderr.strip().splitlines()[-1][:300]
            continue
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(rows[name]))
        print(json.dumps(rows[name]), file=sys.stderr, flush=True)
    return rows, not_run


def part_costs() -> dict:
    rows = costs.cost_table(costs.build("meta"))
    return {"components": rows, "per_frame": costs.per_frame(rows)}


def part_memory() -> dict:
    memory = {f"inference@{res}": costs.inference_memory(res) for res in (256, 512)}
    for batch in (1, 8):
        for ckpt in (False, True):
            memory[f"train batch {batch}{', checkpointing' if ckpt else ''}"] = costs.training_memory(batch, ckpt)
    return memory


def kept(args, result: dict, part: str, compute) -> dict:
    """`compute()`, recorded in WORK/PART.result.json; with --reuse, an earlier call's record (when: result["reused"])."""
    from real_size_commands import earlier_record

    record = args.work / f"{part}.result.json"
    if (earlier := earlier_record(args, record)) is not None:
        result.setdefault("reused", {})[part] = earlier.pop("reused")
        return earlier
    value = compute()
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(value))
    return value


def part_commands(args) -> tuple[dict, dict]:
    """Hub folders, a PropDPM converted from the SD UNet, synthetic clips; then edit, train, propagate."""
    from real_size_commands import commands

    return commands(args, run_measured, wait_for_memory, NEEDS_GB)


def fits(gb: float) -> str:
    return " / ".join(("yes" if gb + 1.0 <= cap else "no") for cap in (24, 40, 80))  # + ~1 GB CUDA context


def report(result: dict) -> str:
    """The README's tables (markdown)."""
    lines = []
    rows, timed = result.get("costs", {}).get("components", {}), result.get("timed", {})
    if rows:
        lines += ["| component (one call, batch 1) | parameters | GFLOPs | s per call here | peak memory here (GB) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for name, row in rows.items():
            t = timed.get(name, {})
            s = f"{t['seconds']:.1f} ({t['cpu_seconds']:.1f} CPU)" if t else "n/a"
            peak = f"{t['peak_gb']:.1f}" if t else "n/a"
            lines.append(f"| {name} | {row['params'] / 1e6:.1f}M | {row['gflops']:.1f} | {s} | {peak} |")
    per = result.get("costs", {}).get("per_frame", {})
    mem = result.get("memory", {})
    if per:
        g, p = per["gflops"], per["projection"]
        lines += ["", "| PropDPM | 256x256 | 512x512 |", "|---|---|---|",
                  f"| GFLOPs per frame, {per['assumed']['steps']} steps (UNet calls + VAE decode) | {g['propdpm_frame@256']:.0f} | {g['propdpm_frame@512']:.0f} |",
                  f"| overhead over a plain SD 1.5 UNet call (goal <= 1.05) | {g['overhead_ratio@256']:.3f} | {g['overhead_ratio@512']:.3f} |",
                  f"| ... before caching the reference's keys and values | {g['overhead_ratio_uncached@256']:.3f} | {g['overhead_ratio_uncached@512']:.3f} |",
                  f"| projected frames/s, H100 bf16 at {per['assumed']['utilisation']:.0%} of peak | {p['h100_propdpm_frames_per_s@256']:.1f} | {p['h100_propdpm_frames_per_s@512']:.1f} |"]  # fmt: skip
        if "inference@256" in mem and "inference@512" in mem:  # one step of both chains, then one batch of decodes
            lines.append("| peak memory propagating, bf16, PropDPM + VAE + CLIP resident (GB) | "
                         f"{mem['inference@256']['total']:.1f} | {mem['inference@512']['total']:.1f} |")  # fmt: skip
    if any(k.startswith("train") for k in mem):
        lines += ["", "| `sd15-256` training step (AdamW fp32, bf16 autocast, raw clips) | GB | with EMA | fits 24 / 40 / 80 GB (with EMA) |",
                  "|---|---|---|---|"]  # fmt: skip
        for key, m in mem.items():
            if key.startswith("train"):
                lines.append(f"| {key} | {m['total']:.1f} | {m['total_with_ema']:.1f} | {fits(m['total'])} ({fits(m['total_with_ema'])}) |")
    cmds = result.get("commands", {})
    if cmds:
        lines += ["", "| command | exit | seconds | CPU seconds | peak memory (GB) |", "|---|---|---|---|---|"]
        for name, c in cmds.items():
            when = f" (run {c['reused']})" if "reused" in c else ""
            lines.append(f"| `{name}`{when} | {c['rc']} | {c['seconds']:.0f} | {c.get('cpu_seconds', 0):.0f} | {c.get('peak_gb', 0):.1f} |")
    return "\n".join(lines)


def main() -> int:
    if sys.argv[1:2] == ["--measure-cli"]:  # before argparse: the command's own --steps, --device, --dtype are its own
        return measure_cli(sys.argv[2], sys.argv[3:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--skip", nargs="*", default=[], choices=["costs", "memory", "timed", "commands"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default=None, help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--work", type=Path, default=Path("outputs/real-size"), help="hub folders, clips and runs (kept)")
    p.add_argument("--train-steps", type=int, default=2)
    p.add_argument("--frames", type=int, default=3, help="frames of the clips `edit` and `propagate` run on")
    p.add_argument("--steps", type=int, default=2, help="sampling steps of stage I and of PropDPM in the commands")
    p.add_argument("--reuse", action="store_true",
                   help="keep the result of a command an earlier call finished (WORK/NAME.result.json) instead of running it again")
    p.add_argument("--max-wait", type=float, default=1800, help="seconds to wait for memory before giving a part up")
    p.add_argument("--time-component", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    if args.time_component:
        print(json.dumps(time_component(args.time_component, args.device, args.dtype)))
        return 0

    import torch

    result: dict = {"device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({os.cpu_count()} cores)",
                    "dtype": args.dtype, "torch": torch.__version__, "not_run": {}}  # fmt: skip
    if "costs" not in args.skip:
        result["costs"] = kept(args, result, "costs", part_costs)
    if "memory" not in args.skip:
        result["memory"] = kept(args, result, "memory", part_memory)
    if "timed" not in args.skip:
        result["timed"], not_run = part_timed(args)
        result["not_run"].update(not_run)
    if "commands" not in args.skip:
        result["commands"], not_run = part_commands(args)
        result["not_run"].update(not_run)
    result["table"] = report(result)
    print(result["table"])
    if result["not_run"]:
        print("\nnot run:\n" + "\n".join(f"- {k}: {v}" for k, v in result["not_run"].items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
