"""The real commands of benchmarks/real_size.py, run on hub folders of real-size random weights:

    hub/sd15, hub/controlnet, hub/clip, hub/depth   `magicprop.models.real.save_hub_folders`
    propdpm-sd15/     PropDPM converted from hub/sd15's UNet (`PropDPM.from_stable_diffusion`), its VAE and CLIP
                      referenced in magicprop.json, as `magicprop train` starts from it
    clip/             a synthetic 512x512 clip;  train-clips/: two 256x256 synthetic clips of 12 frames
    edit.mp4          `magicprop edit` at 512x512: Depth Anything, SD 1.5 + depth ControlNet, PropDPM
    run/final         `magicprop train --config sd15-256` (a few steps) and its export
    propagated.mp4    `magicprop propagate --model run/final` at 256x256
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

# what the run had to change in the `sd15-256` recipe on a 2-core, 24 GB machine shared by six: one triplet per step,
# no EMA (3.5 GB), no worker processes
TRAIN_OVERRIDES = {"batch_size": 1, "use_ema": False, "num_workers": 0, "warmup_steps": 1, "checkpoint_every": 1000,
                   "frames_per_clip": 12, "frame_stride": 4}  # fmt: skip


def earlier_record(args, record: Path) -> dict | None:
    """With --reuse, what an earlier call of the script recorded in `record` (and when, under "reused"); else None,
    and a stale record is removed so that it cannot outlive a failed rerun."""
    if args.reuse and record.is_file():
        stamp = datetime.fromtimestamp(record.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return {**json.loads(record.read_text()), "reused": stamp}
    record.unlink(missing_ok=True)
    return None


def convert(sd15: Path, clip: Path, out: Path) -> Path:
    """PropDPM from the SD UNet, saved as a propagation model whose frozen VAE and CLIP are the hub folders'."""
    from diffusers import UNet2DConditionModel

    from magicprop.models import PropagationModels, PropDPM
    from magicprop.schedulers import make_scheduler

    if (out / "magicprop.json").is_file():
        return out
    propdpm = PropDPM.from_stable_diffusion(UNet2DConditionModel.from_pretrained(sd15 / "unet"))  # takes its tensors
    models = PropagationModels(propdpm, None, None, dict(make_scheduler("ddpm", zero_snr=True).config), source=str(out))
    refs = {"vae": {"id": str(sd15.resolve()), "subfolder": "vae"}, "image_encoder": {"id": str(clip.resolve())}}
    models.save_pretrained(out, card={"config": "sd15, converted, untrained"}, reference_components=refs)
    return out


def commands(args, run_measured, wait_for_memory, needs: dict) -> tuple[dict, dict]:
    """(results by command, reasons for what was not run)."""
    import torch

    from magicprop.cli import main
    from magicprop.models.real import save_hub_folders

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    results, not_run = {}, {}
    device = ["--device", args.device, "--dtype", args.dtype]

    def run(name: str, argv: list | None, need: str) -> None:
        if argv is None:
            return
        record = work / f"{name}.result.json"
        if (earlier := earlier_record(args, record)) is not None:  # edit and train took an hour here
            results[name] = earlier
            return
        if (why := wait_for_memory(needs[need], args.max_wait, name)) is not None:
            not_run[name] = why
            return
        results[name] = run_measured(argv, work / f"{name}.log")
        if results[name]["rc"] == 0:
            record.write_text(json.dumps(results[name]))
        else:
            not_run[name] = f"exit {results[name]['rc']}: {results[name]['last_line']}"

    # 1. The hub folders and the converted PropDPM (the largest piece in memory is one UNet at a time)
    if (why := wait_for_memory(needs["hub"], args.max_wait, "building the hub folders")) is not None:
        return results, {"commands": why}
    folders = save_hub_folders(work / "hub")
    model = convert(folders["sd15"], folders["clip"], work / "propdpm-sd15")
    torch.cuda.empty_cache() if torch.cuda.is_available() else None

    # 2. Clips with exact depth (the depth model still runs in `edit`, which is not given it)
    if not (work / "clip" / "meta.json").is_file():
        main(["synth", "--out", str(work / "clip"), "--seed", "900021", "--frames", str(args.frames), "--size", "512", "512"])
    if not (work / "train-clips").is_dir():
        main(["synth", "--out", str(work / "train-clips"), "--seed", "0", "--count", "2", "--frames", "12", "--size", "256", "256"])
    source = work / "clip" / "source.mp4"
    k = str(args.frames // 2)

    # 3. `magicprop edit` at 512x512: stage I (SD 1.5 + depth ControlNet on Depth Anything's depth), then PropDPM
    steps = ["--steps", str(args.steps), "--propagation-steps", str(args.steps)]
    edit = ["edit", source, "--prompt", "a watercolor painting of a city", "--keyframe-index", k, "--seed", "0", *steps,
            "--base-model", folders["sd15"], "--controlnet", folders["controlnet"], "--depth-model", folders["depth"],
            "--model", model, *device, "-o", work / "edit.mp4"]  # fmt: skip
    run("edit", edit, "edit")

    # 4. `magicprop train --config sd15-256` from hub/sd15 and hub/clip, a few steps, and its export
    recipe = work / "train-overrides.json"
    recipe.write_text(json.dumps(TRAIN_OVERRIDES))
    run_dir = work / "run"
    train = ["train", "--config", "sd15-256", "--data", work / "train-clips", "--output-dir", run_dir, "--recipe", recipe,
             "--pretrained", folders["sd15"], "--image-encoder", folders["clip"], "--max-steps", str(args.train_steps)]  # fmt: skip
    run("train", train, "train")

    # 5. `magicprop propagate --model run/final` at the recipe's 256x256, from the keyframe `edit` made (or the truth's)
    key = work / "edit.keyframe.png"
    if not key.is_file():
        from magicprop.video import read_video, save_image

        key = save_image(work / "key.png", read_video(work / "clip" / "edited.mp4")[0][int(k)])
    if (run_dir / "final" / "magicprop.json").is_file():
        propagate = ["propagate", source, "--keyframe-image", key, "--keyframe-index", k, "--model", run_dir / "final", "--seed", "0",
                     "--steps", str(args.steps), "--max-pixels", str(256 * 256), "--depth", work / "clip" / "depth.npz",
                     *device, "-o", work / "propagated.mp4"]  # fmt: skip
        run("propagate", propagate, "propagate")
    else:
        not_run["propagate --model run/final"] = "no export: training did not run"
    return results, not_run

