"""Speed and memory of PropDPM propagation, measured in one run.

* overhead_ratio: seconds per frame of PropDPM propagation (10-channel UNet + adaptor tokens, CLIP and adaptor once per
  clip) over seconds per frame of a plain 4-channel UNet2DConditionModel of the same config sampled with the same
  scheduler, steps and guidance on 77 text-length tokens (what SD 1.5 costs per image). Goal <= 1.05. The two are
  timed alternately, `--repeats` times each, and the median of the per-pair ratios is reported with its spread
  (min and max): one measurement of each read 1.42 on a loaded machine and 1.01 on a quiet one.
* memory_ratio_64_vs_16: peak memory propagating (and decoding, streamed to an mp4) 64 frames over 16 frames, each in a
  fresh subprocess (CPU: peak RSS; CUDA: torch.cuda.max_memory_allocated). Goal <= 1.10: memory must not grow with length.

    python benchmarks/propagation_speed.py --config tiny --json outputs/propagation_speed.json
    python benchmarks/propagation_speed.py --config sd15 --device cuda --dtype bf16 --json sd15.json   # random weights

Random weights cost exactly what trained ones cost, so no download is needed.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SIZES = {"tiny": 64, "sd15": 256}


def build(config: str, device: str, dtype: torch.dtype):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from magicprop.models import PropagationModels, PropDPM
    from magicprop.models.configs import PROPDPM_CONFIGS, TINY_CLIP_VISION_CONFIG, TINY_VAE_CONFIG
    from magicprop.schedulers import make_scheduler

    torch.manual_seed(0)
    propdpm = PropDPM.from_config_name(config)
    if config == "tiny":
        vae = AutoencoderKL(**TINY_VAE_CONFIG)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP_VISION_CONFIG))
    else:  # SD 1.5's VAE and CLIP ViT-L/14
        from magicprop.models import real

        vae, clip = real.sd15_vae(), real.clip_vision_tower()
    cfg = dict(PROPDPM_CONFIGS[config])
    unet = UNet2DConditionModel(
        in_channels=4, out_channels=4, **{k: v for k, v in cfg.items() if k != "sample_size"}, sample_size=cfg["sample_size"]
    )
    models = PropagationModels(propdpm, vae, clip, dict(make_scheduler("ddim").config), source=f"random {config}")
    models.eval().to(device)
    unet.eval().requires_grad_(False).to(device)
    if dtype != torch.float32:  # a no-op cast still makes diffusers warn
        models.to(dtype=dtype)
        unet.to(dtype)
    return models, unet


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def time_plain_unet(unet, models, steps: int, guidance: float, frames: int, size: int, device: str, dtype) -> float:
    """Seconds per frame of plain SD-style sampling, two frames per batch like the two propagation chains."""
    from magicprop.schedulers import scheduler_from_config

    scheduler = scheduler_from_config(models.scheduler_config)
    h = size // (2 ** (len(models.vae.config.block_out_channels) - 1))
    tokens = torch.randn(2, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    if guidance != 1.0:
        tokens = torch.cat([tokens, torch.zeros_like(tokens)])
    sync(device)
    t0 = time.perf_counter()
    for _ in range(0, frames - 1, 2):
        latents = torch.randn(2, 4, h, h, device=device, dtype=dtype)
        scheduler.set_timesteps(steps, device=device)
        for t in scheduler.timesteps:
            x = torch.cat([latents, latents]) if guidance != 1.0 else latents
            pred = unet(x, t, encoder_hidden_states=tokens).sample
            if guidance != 1.0:
                c, u = pred.chunk(2)
                pred = u + guidance * (c - u)
            latents = scheduler.step(pred, t, latents).prev_sample
    sync(device)
    return (time.perf_counter() - t0) / (frames - 1)


def time_propdpm(models, steps: int, guidance: float, frames: int, size: int, device: str) -> float:
    import numpy as np

    from magicprop.propagation import PropagationSettings
    from magicprop.propagation.propdpm.sampling import propagate_latents

    rng = np.random.default_rng(0)
    depth = rng.random((frames, size, size), dtype=np.float32)
    key = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    settings = PropagationSettings(num_inference_steps=steps, guidance_scale=guidance)
    sync(device)
    t0 = time.perf_counter()
    propagate_latents(models, depth, key, frames // 2, settings, progress=False)  # keyframe in the middle: two chains
    sync(device)
    return (time.perf_counter() - t0) / (frames - 1)


def memory_child(args) -> None:
    """Propagate and stream-decode `args.frames` frames; print the peak memory in MB."""
    import numpy as np

    from magicprop.propagation import PropagationSettings
    from magicprop.propagation.propdpm.sampling import decode_steps, propagate_latents
    from magicprop.video import VideoWriter

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    models, _ = build(args.config, args.device, dtype)
    size = SIZES[args.config]
    rng = np.random.default_rng(0)
    depth = rng.random((args.frames, size, size), dtype=np.float32)
    key = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        store, where = propagate_latents(
            models, depth, key, 0, PropagationSettings(num_inference_steps=2), work_dir=Path(tmp) / "work", progress=False
        )
        with VideoWriter(Path(tmp) / "out.mp4", fps=8) as writer:
            for frame in decode_steps(models, store, where, key, 0):
                writer.write(frame)
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(json.dumps({"peak_mb": peak}))


def peak_memory(args, frames: int) -> float:
    cmd = [sys.executable, __file__, "--child-frames", str(frames), "--config", args.config, "--device", args.device, "--dtype", args.dtype]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mb"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(SIZES), default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default=None, help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance-scale", type=float, default=1.0)
    p.add_argument("--frames", type=int, default=9, help="frames timed per method and run")
    p.add_argument("--repeats", type=int, default=5, help="runs of each method, alternated (plain, propdpm, plain, ...)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child-frames", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    if args.child_frames:
        args.frames = args.child_frames
        memory_child(args)
        return
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    torch.backends.cuda.matmul.allow_tf32 = True
    models, unet = build(args.config, args.device, dtype)
    size = SIZES[args.config]
    time_propdpm(models, 2, args.guidance_scale, 3, size, args.device)  # warm-up
    # alternate the two run by run, so that load on the machine hits both alike; report the median ratio
    plains, props = [], []
    for _ in range(args.repeats):
        plains.append(time_plain_unet(unet, models, args.steps, args.guidance_scale, args.frames, size, args.device, dtype))
        props.append(time_propdpm(models, args.steps, args.guidance_scale, args.frames, size, args.device))
    ratios = sorted(p / q for p, q in zip(props, plains))
    plain, prop = statistics.median(plains), statistics.median(props)
    m16, m64 = peak_memory(args, 16), peak_memory(args, 64)
    result = {
        "overhead_ratio": statistics.median(ratios),
        "overhead_ratio_min": ratios[0],
        "overhead_ratio_max": ratios[-1],
        "repeats": args.repeats,
        "memory_ratio_64_vs_16": m64 / m16,
        "frames_per_s": 1.0 / prop,
        "plain_unet_frames_per_s": 1.0 / plain,
        "peak_memory_mb_16": m16,
        "peak_memory_mb_64": m64,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "dtype": args.dtype,
        "resolution": size,
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "config": args.config,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
