"""The appearance adaptor (paper, section 3.3.1 and Listing 1).

It fuses two views of the edited reference frame into the tokens PropDPM's cross-attention reads:
  * CLIP image tokens: the class token (kept as is) and the patch tokens (semantics, class-level appearance);
  * the VAE latent (pixel-level appearance, with exact spatial correspondence to the image).
Both are brought to half the latent grid with C/2 channels each, concatenated and mixed into C channels, so the output is
one class token followed by one token per 2x2 latent cell: (B, 1 + h/2 * w/2, C).

Generalised from the listing: the latent may be non-square, and the CLIP patch grid may be any (gh, gw) (it is resized
bilinearly to the latent's half grid, which also undoes the squash of a non-square frame into CLIP's square input).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class AppearanceAdapter(nn.Module):
    def __init__(self, embed_dim: int = 768, latent_channels: int = 4, use_vae: bool = True):
        """
        Args:
            embed_dim: C, the width of the CLIP tokens and of PropDPM's cross-attention (768 for SD 1.5).
            latent_channels: channels of the VAE latent (4 for SD).
            use_vae: False gives the CLIP-only ablation: the VAE branch is fed zeros, so the architecture and the
                parameter count stay the same and only the information differs.
        """
        super().__init__()
        if embed_dim % 2:
            raise ValueError(f"embed_dim must be even, got {embed_dim}")
        half = embed_dim // 2
        self.embed_dim = embed_dim
        self.use_vae = use_vae
        # Names follow the listing so weights trained with the reference code map one to one.
        self.clip_downsample_emb = nn.Sequential(
            nn.Conv2d(embed_dim, half, kernel_size=1), nn.SiLU(),
            nn.Conv2d(half, half, kernel_size=1), nn.SiLU(),
        )  # fmt: skip
        self.vae_upsample_chn_down_spatial = nn.Sequential(
            nn.Conv2d(latent_channels, half, kernel_size=3, padding=1), nn.SiLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(half, half, kernel_size=1), nn.SiLU(),
        )  # fmt: skip
        self.mix_clip_vae = nn.Sequential(
            nn.Conv2d(embed_dim, embed_dim, kernel_size=3, padding=1), nn.SiLU(),
            nn.Conv2d(embed_dim, embed_dim, kernel_size=3, padding=1),
        )  # fmt: skip

    def forward(
        self, clip_tokens: torch.Tensor, vae_latent: torch.Tensor, clip_grid: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """clip_tokens (B, 1 + gh * gw, C), vae_latent (B, 4, h, w) -> tokens (B, 1 + (h // 2) * (w // 2), C)."""
        b, n, c = clip_tokens.shape
        _, _, h, w = vae_latent.shape
        if c != self.embed_dim:
            raise ValueError(f"CLIP tokens have width {c}, the adaptor expects {self.embed_dim}")
        if h < 2 or w < 2:
            raise ValueError(f"latent grid {h}x{w} is too small for the adaptor (needs at least 2x2)")
        gh, gw = clip_grid if clip_grid is not None else _square_grid(n - 1)
        cls_token = clip_tokens[:, :1]  # (B, 1, C), untouched
        patches = clip_tokens[:, 1:].transpose(1, 2).reshape(b, c, gh, gw)  # (B, C, gh, gw)
        patches = F.interpolate(patches, size=(h // 2, w // 2), mode="bilinear", align_corners=False)
        patches = self.clip_downsample_emb(patches)  # (B, C/2, h/2, w/2)
        if not self.use_vae:
            vae_latent = torch.zeros_like(vae_latent)
        latent = self.vae_upsample_chn_down_spatial(vae_latent)  # (B, C/2, h/2, w/2)
        fused = self.mix_clip_vae(torch.cat([patches, latent], dim=1))  # (B, C, h/2, w/2)
        fused = fused.flatten(2).transpose(1, 2)  # (B, h/2 * w/2, C)
        return torch.cat([cls_token, fused], dim=1)  # (B, 1 + h/2 * w/2, C)


def _square_grid(num_patches: int) -> tuple[int, int]:
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"{num_patches} CLIP patch tokens do not form a square grid; pass clip_grid=(gh, gw)")
    return side, side
