"""The tiny VAE and image tower that the embedded tiny PropDPM works with.

SD 1.5's VAE (84M parameters) and CLIP ViT-L/14 (300M) are too large to ship, and nothing can be downloaded at run time,
so the tiny model brings its own: an AutoencoderKL with two downsamplings (64x64 frames -> 4x16x16 latents), trained
here on synthetic frames with a reconstruction loss and a small KL term, and a small CLIP vision tower kept at its
seeded random initialisation (frozen, as CLIP is for the real model: random patch features still carry the colour and
layout of the reference; the VAE branch of the adaptor carries the fine appearance).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..models.configs import TINY_CLIP_VISION_CONFIG, TINY_VAE_CONFIG

logger = logging.getLogger(__name__)


def build_tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    # Start the posterior narrow (std ~ 0.05): at the default init its std is ~1 and the decoder first has to learn to
    # see through that noise, which costs thousands of steps that a CPU budget does not have. The KL term is still free
    # to widen it.
    with torch.no_grad():
        vae.quant_conv.bias[TINY_VAE_CONFIG["latent_channels"] :] = -6.0
    return vae


def build_tiny_image_encoder(seed: int = 0):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP_VISION_CONFIG)).eval()


def synthetic_frames(num_clips: int, frames: int, size: int, seed: int) -> np.ndarray:
    """Frames of source and edited synthetic clips (procedural and photo textures), (N, size, size, 3) uint8."""
    from ..synthetic import render_clip

    out = []
    for i in range(num_clips):
        clip = render_clip(
            seed + i,
            frames=frames,
            size=(size, size),
            edit="global" if i % 2 else "local",
            textures="photo" if i % 4 == 3 else "procedural",
        )
        out.extend([clip.source, clip.edited])
    return np.concatenate(out)


def train_tiny_vae(
    out_dir: str | Path,
    *,
    steps: int = 3000,
    batch_size: int = 8,
    crop: int = 32,
    lr: float = 1e-3,
    kl_weight: float = 1e-6,
    num_clips: int = 200,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train the tiny VAE on synthetic frames; save it (safetensors) with its scaling factor set to 1 / std(latents)."""
    from ..fileio import ensure_writable_dir

    out_dir = ensure_writable_dir(out_dir)
    size = TINY_VAE_CONFIG["sample_size"]
    data = torch.from_numpy(synthetic_frames(num_clips, 8, size, seed=10_000 + seed)).permute(0, 3, 1, 2)
    vae = build_tiny_vae(seed).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    g = torch.Generator().manual_seed(seed)
    log, t0 = [], time.time()
    bar = tqdm(range(steps), desc="tiny VAE", disable=not progress)
    for step in bar:
        idx = torch.randint(0, len(data), (batch_size,), generator=g)
        # Random crops: the VAE is convolutional (its one attention layer sees any grid), and a crop of half the
        # frame costs a quarter of the compute, which is what makes training it on 2 CPU cores practical.
        y, x0 = (int(v) for v in torch.randint(0, size - crop + 1, (2,), generator=g))
        x = data[idx, :, y : y + crop, x0 : x0 + crop].float() / 127.5 - 1
        if torch.rand((), generator=g) < 0.5:
            x = x.flip(-1)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(g)).sample
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        kl = posterior.kl().mean() / (x.shape[1] * x.shape[2] * x.shape[3])
        loss = rec + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            bar.set_postfix(rec=f"{rec.item():.4f}")
            log.append({"step": step, "rec": rec.item(), "kl": kl.item()})
    vae.eval()
    with torch.no_grad():  # the scaling factor that gives latents unit variance, as SD's 0.18215 does
        x = data[:256].float() / 127.5 - 1
        z = vae.encode(x).latent_dist.mean
        vae.register_to_config(scaling_factor=float(1.0 / z.std()))
        recon = vae.decode(z).sample
        mse = F.mse_loss((recon.clamp(-1, 1) + 1) * 127.5, (x + 1) * 127.5).item()
    psnr = 10 * math.log10(255**2 / mse)
    vae.save_pretrained(out_dir)
    summary = {"steps": steps, "psnr_db": psnr, "scaling_factor": vae.config.scaling_factor, "seconds": time.time() - t0}
    logger.info("tiny VAE: reconstruction PSNR %.2f dB, scaling factor %.3f", psnr, vae.config.scaling_factor)
    return {**summary, "log": log}


def main(argv: list[str] | None = None) -> None:
    """`python -m magicprop.training.autoencoder --out DIR`: the first step of `make tiny-model`."""
    import argparse
    import json

    p = argparse.ArgumentParser(description="Train the tiny VAE on synthetic frames; save it and the tiny CLIP tower.")
    p.add_argument("--out", required=True, help="folder for vae/ and image_encoder/")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    summary = train_tiny_vae(out / "vae", steps=args.steps, lr=args.lr, seed=args.seed)
    build_tiny_image_encoder(args.seed).save_pretrained(out / "image_encoder")
    from ..fileio import atomic_write_json

    atomic_write_json(out / "vae_summary.json", {k: v for k, v in summary.items() if k != "log"})
    print(json.dumps({k: v for k, v in summary.items() if k != "log"}))


if __name__ == "__main__":
    main()
