"""Training throughput from raw clips against the latent cache, measured in one run on one machine.

Raw: every step decodes the clips, runs the depth model over each clip's sampled frames, and encodes with VAE and CLIP.
Cached: every step reads latents, tokens and depth written once by `magicprop precompute`. Both then run the same
PropDPM forward/backward/AdamW step (the functions `magicprop train` uses). Components are randomly initialised from
the named configs (no downloads; speed does not depend on the weights' values), clips are synthetic and written to a
temporary folder as plain mp4s so the raw path really runs the depth model.

    python benchmarks/training_speed.py --config tiny --json outputs/training_speed_tiny.json          # CPU, about a minute
    python benchmarks/training_speed.py --config sd15 --json outputs/training_speed_sd15.json --steps 20  # a GPU
    python benchmarks/training_speed.py --config tiny --options --json outputs/training_options_tiny.json  # option costs

Writes samples_per_s_raw, samples_per_s_cached (batch / median step time; the two modes take turns step by step so a
shared machine's load hits both alike), ratio_cached_vs_raw, peak_memory_mb (per step: CUDA's peak allocation on a GPU,
the process's resident set on a CPU), device, config, and the settings.

`--options` measures instead what the beyond-the-paper recipe options cost per training step: the recipe's own data
(synthetic clip folders with exact depth, source and edited clips) with the plain recipe (baseline), with
`anchored_reference` (the maps computed for every sample: clip_cache 0, the cost before any cache is warm) and with
`self_rollout` 0.25 (2 rollout steps); each variant its own model, the variants taking turns step by step. Writes
step_s_median per variant and ratio_vs_baseline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SETTINGS = {  # per config: frames, batch, clips; the model sizes come from magicprop.models.configs
    "tiny": {"recipe": "tiny-synthetic", "resolution": 64, "batch_size": 4, "clips": 4, "clip_frames": 120, "clip_size": (72, 96)},
    "sd15": {"recipe": "sd15-256", "resolution": 256, "batch_size": 8, "clips": 8, "clip_frames": 120, "clip_size": (288, 384)},
}


def build_components(config: str, folder: Path):
    """PropDPM, VAE, CLIP tower and depth model of the named size, random weights; the encoders saved as folders."""
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    from magicprop.models import PropDPM
    from magicprop.models.configs import TINY_CLIP_VISION_CONFIG, TINY_VAE_CONFIG

    torch.manual_seed(0)
    if config == "tiny":
        vae = AutoencoderKL(**TINY_VAE_CONFIG)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP_VISION_CONFIG))
        backbone = Dinov2Config(image_size=28, patch_size=14, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                intermediate_size=64, out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False)  # fmt: skip
        depth = DepthAnythingForDepthEstimation(DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[16] * 4, fusion_hidden_size=16,
                                                                    head_hidden_size=8, reassemble_hidden_size=32, patch_size=14))  # fmt: skip
        depth_input = 70  # 5x5 patches: the depth model stays a small share, as Depth Anything Small is on a GPU
    else:  # SD 1.5's VAE, CLIP ViT-L/14, Depth-Anything-V2-Small
        from magicprop.models import real
        from magicprop.models.configs import DEPTH_ANYTHING_INPUT

        vae, clip, depth = real.sd15_vae(), real.clip_vision_tower(), real.depth_anything_small()
        depth_input = DEPTH_ANYTHING_INPUT
    vae.save_pretrained(folder / "vae")
    clip.save_pretrained(folder / "image_encoder")
    depth.save_pretrained(folder / "depth")
    DPTImageProcessor(do_resize=True, size={"height": depth_input, "width": depth_input}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder / "depth")  # fmt: skip
    return PropDPM.from_config_name(config)


def write_clips(folder: Path, n: int, frames: int, size: tuple[int, int]) -> Path:
    """Synthetic clips as plain videos (no depth.npz), so the raw path estimates depth like any real video."""
    from magicprop.synthetic import render_clip
    from magicprop.video import write_video

    raw = folder / "raw"
    raw.mkdir(parents=True)
    for seed in range(n):
        write_video(raw / f"clip{seed:03d}.mp4", render_clip(seed, frames=frames, size=size).source, fps=24)
    return raw


def trainer(propdpm, recipe, device) -> tuple:
    """(PropDPMTraining, AdamW) as `magicprop train` builds them."""
    from magicprop.schedulers import make_scheduler
    from magicprop.training.loop import PropDPMTraining

    model = PropDPMTraining(propdpm, make_scheduler("ddpm", zero_snr=recipe.zero_snr)).to(device).train()
    return model, torch.optim.AdamW(model.parameters(), lr=recipe.lr)


def measure(variants: dict[str, tuple], vae, image_encoder, steps: int, device) -> dict:
    """Per variant (name -> (dataset, recipe, model, optimizer)): samples/s from the median step time, and the per-step
    peak memory. The variants take turns step by step (after one warm-up step each), so all see the same machine load."""
    import psutil

    from magicprop.training.data import make_dataloader
    from magicprop.training.loop import diffusion_loss, encode_batch, step_generator

    loaders = {mode: iter(make_dataloader(ds, recipe, world_size=1, rank=0, num_workers=0)) for mode, (ds, recipe, *_) in variants.items()}
    times = {mode: [] for mode in variants}
    peak = {mode: 0.0 for mode in variants}
    for step in range(steps + 1):
        for mode, loader in loaders.items():
            _, recipe, model, optimizer = variants[mode]
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            generator = step_generator(0, step, 0, 0)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.mixed_precision == "bf16"):
                enc = encode_batch(next(loader), vae, image_encoder, device, generator)  # raw: decode + depth + VAE + CLIP
                loss = diffusion_loss(model, model.noise_scheduler, enc, recipe, generator)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
                peak[mode] = max(peak[mode], torch.cuda.max_memory_allocated() / 2**20)
            else:
                peak[mode] = max(peak[mode], psutil.Process().memory_info().rss / 2**20)
            if step > 0:  # the first step pays for lazy initialisation (depth model load, allocator, kernels)
                times[mode].append(time.perf_counter() - start)
    return {mode: {"samples_per_s": variants[mode][1].batch_size / float(np.median(times[mode])), "step_s": times[mode],
                   "peak_memory_mb": peak[mode]} for mode in variants}  # fmt: skip


OPTION_VARIANTS = {  # name -> recipe overrides
    "baseline": {},
    "anchored_reference": {"anchored_reference": True},
    "self_rollout_0.25": {"self_rollout": 0.25, "self_rollout_steps": 2},
}


def measure_options(config: str, work: Path, steps: int, device, batch_size: int, clips: int) -> dict:
    """Seconds per training step of the config's recipe with each option of OPTION_VARIANTS, in one run."""
    from magicprop.models import PropDPM
    from magicprop.synthetic import render_clip, write_clip
    from magicprop.training.components import load_encoders
    from magicprop.training.data import FrameSampling, RawTripletDataset
    from magicprop.training.recipes import load_recipe
    from magicprop.training.sources import discover_clips

    s = SETTINGS[config]
    build_components(config, work)  # the frozen encoders' folders
    size = (s["resolution"], s["resolution"])
    for seed in range(clips):  # the recipe's own data: synth folders (exact depth; source and edited clips)
        write_clip(render_clip(seed, frames=16, size=size), work / "synth" / f"clip{seed:03d}")
    found = discover_clips(work / "synth", synthetic_edited=True)
    mp = "bf16" if device.type == "cuda" else "no"
    variants = {}
    for name, overrides in OPTION_VARIANTS.items():
        recipe = load_recipe(s["recipe"], resolution=s["resolution"], batch_size=batch_size, num_workers=0, clip_cache=0,
                             mixed_precision=mp, pretrained=None, model_config=config, vae=str(work / "vae"),
                             image_encoder=str(work / "image_encoder"), frames_per_clip=16, frame_stride=1, **overrides)  # fmt: skip
        torch.manual_seed(0)
        propdpm = PropDPM.from_config_name(config, use_anchored_reference=recipe.anchored_reference)
        dataset = RawTripletDataset(found.clips, FrameSampling.from_recipe(recipe), 0, with_anchor=recipe.anchored_reference,
                                    with_pp=recipe.self_rollout > 0)  # fmt: skip
        variants[name] = (dataset, recipe, *trainer(propdpm, recipe, device))
    vae, image_encoder = load_encoders(variants["baseline"][1])
    results = measure(variants, vae.to(device), image_encoder.to(device), steps, device)
    base = float(np.median(results["baseline"]["step_s"]))
    return {
        "config": config,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "batch_size": batch_size,
        "resolution": s["resolution"],
        "steps": steps,
        "clips": len(found.clips),
        "step_s_median": {name: float(np.median(r["step_s"])) for name, r in results.items()},
        "ratio_vs_baseline": {name: float(np.median(r["step_s"])) / base for name, r in results.items()},
        "step_s": {name: r["step_s"] for name, r in results.items()},
        "variants": OPTION_VARIANTS,
        "torch": torch.__version__,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(SETTINGS), default="tiny")
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per mode (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default on a CPU: 1, the steadiest on a shared machine)")
    parser.add_argument("--options", action="store_true", help="measure the cost of anchored_reference and self_rollout instead")
    parser.add_argument("--batch-size", type=int, default=None, help="with --options: triplets per step (default: the config's)")
    parser.add_argument("--clips", type=int, default=4, help="with --options: synthetic clip folders to train on")
    args = parser.parse_args(argv)
    if args.threads or not torch.cuda.is_available():
        torch.set_num_threads(args.threads or 1)
    if args.options:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        work = Path(tempfile.mkdtemp(prefix="magicprop-bench-"))
        try:
            result = measure_options(args.config, work, args.steps, device, args.batch_size or SETTINGS[args.config]["batch_size"], args.clips)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: result[k] for k in ("config", "device", "batch_size", "steps", "step_s_median", "ratio_vs_baseline")}, indent=2))
        return 0

    from magicprop.training.data import FrameSampling, RawTripletDataset
    from magicprop.training.precompute import CachedTripletDataset, precompute
    from magicprop.training.recipes import load_recipe
    from magicprop.training.sources import discover_clips

    s = SETTINGS[args.config]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    work = Path(tempfile.mkdtemp(prefix="magicprop-bench-"))
    try:
        # 1. Components and clips
        propdpm = build_components(args.config, work)
        raw = write_clips(work, s["clips"], s["clip_frames"], s["clip_size"])
        mp = "bf16" if device.type == "cuda" else "no"
        recipe = load_recipe(s["recipe"], resolution=s["resolution"], batch_size=s["batch_size"], num_workers=0, mixed_precision=mp,
                             pretrained=None, model_config=args.config, vae=str(work / "vae"), image_encoder=str(work / "image_encoder"),
                             depth_model=str(work / "depth"))  # fmt: skip
        from magicprop.training.components import load_encoders

        vae, image_encoder = load_encoders(recipe)
        vae.to(device)
        image_encoder.to(device)

        # 2. The cache (timed: it is paid once per dataset)
        t = time.perf_counter()
        precompute(recipe, str(raw), work / "cache")
        precompute_s = time.perf_counter() - t

        # 3. Raw and cached training steps, the same model and step function
        found = discover_clips(raw)
        raw_ds = RawTripletDataset(found.clips, FrameSampling.from_recipe(recipe), 0, recipe.depth_model, depth_device=str(device))
        cached_ds = CachedTripletDataset(work / "cache", 0)
        model, optimizer = trainer(propdpm, recipe, device)  # shared by both modes, as before
        results = measure({"raw": (raw_ds, recipe, model, optimizer), "cached": (cached_ds, recipe, model, optimizer)}, vae,
                          image_encoder, args.steps, device)  # fmt: skip
        raw_result, cached_result = results["raw"], results["cached"]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "config": args.config,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "samples_per_s_raw": raw_result["samples_per_s"],
        "samples_per_s_cached": cached_result["samples_per_s"],
        "ratio_cached_vs_raw": cached_result["samples_per_s"] / raw_result["samples_per_s"],
        "peak_memory_mb": max(raw_result["peak_memory_mb"], cached_result["peak_memory_mb"]),
        "peak_memory_mb_raw": raw_result["peak_memory_mb"],
        "peak_memory_mb_cached": cached_result["peak_memory_mb"],
        "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process RSS",
        "precompute_s": precompute_s,
        "precompute_s_per_clip": precompute_s / s["clips"],
        "step_s_raw": raw_result["step_s"],
        "step_s_cached": cached_result["step_s"],
        "steps": args.steps,
        "batch_size": recipe.batch_size,
        "resolution": recipe.resolution,
        "frames_per_clip": recipe.frames_per_clip,
        "frame_stride": recipe.frame_stride,
        "num_workers": 0,
        "mixed_precision": mp,
        "torch": torch.__version__,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
