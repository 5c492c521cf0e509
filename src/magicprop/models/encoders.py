"""Encoders of the reference frame and of frames: the frozen VAE and CLIP image tower around PropDPM.

Images cross this boundary as float tensors (B, 3, H, W) in [0, 1]; latents are scaled by the VAE's scaling factor.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def images_to_tensor(images: np.ndarray, device=None, dtype=torch.float32) -> torch.Tensor:
    """uint8 (B, H, W, 3) or (H, W, 3) -> float (B, 3, H, W) in [0, 1]."""
    if images.ndim == 3:
        images = images[None]
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return x.to(device=device, dtype=dtype) / 255.0


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [0, 1] -> uint8 (B, H, W, 3), rounded."""
    x = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def clip_image_tokens(image_encoder, images: torch.Tensor) -> torch.Tensor:
    """CLIP tokens of images (B, 3, H, W) in [0, 1] -> (B, 1 + gh * gw, C) with C the projection width.

    The paper feeds cross-attention with CLIP's class and patch tokens: we take the vision tower's last hidden state
    through its post-layernorm and visual projection, so every token lands in the space the class embedding lives in
    (768 wide for ViT-L/14, SD 1.5's cross-attention width). Frames are squashed, not cropped, to CLIP's square input:
    the adaptor resizes the patch grid back to the latent's aspect, so every patch keeps its place in the frame.
    """
    tower = image_encoder.vision_model
    size = image_encoder.config.image_size
    x = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(CLIP_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[:, None, None]
    x = ((x.clamp(0, 1) - mean) / std).to(image_encoder.dtype)
    hidden = tower(pixel_values=x).last_hidden_state  # (B, 1 + gh * gw, hidden)
    return image_encoder.visual_projection(tower.post_layernorm(hidden))  # (B, 1 + gh * gw, C)


@torch.no_grad()
def vae_encode(vae, images: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] -> scaled latents (B, 4, H/f, W/f). The mean unless `sample` (training targets)."""
    dist = vae.encode((images * 2 - 1).to(vae.dtype)).latent_dist
    z = dist.sample(generator) if sample else dist.mean
    return z * vae.config.scaling_factor


@torch.no_grad()
def vae_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images (B, 3, H, W) in [0, 1]."""
    x = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype)).sample
    return (x.float() + 1) / 2


def vae_scale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)
