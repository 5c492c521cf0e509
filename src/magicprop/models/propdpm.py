"""PropDPM: the appearance-propagation diffusion model (paper, sections 3.2-3.3).

A latent-diffusion UNet initialised from SD 1.5 renders frame k from
  * spatial conditions, concatenated to the noisy latent: the target depth m_k, the previous edited latent z_{k-1} and the
    previous depth m_{k-1} (4 + 1 + 4 + 1 = 10 input channels);
  * semantic conditions, read by cross-attention: the appearance adaptor's fusion of the edited keyframe's CLIP tokens
    and VAE latent.
`assemble_conditioning` is the one place where these inputs are put together: training and inference both call it.

Beyond the paper, `use_warped_previous=True` adds 4 more input channels: the previous edited latent warped along the
source's optical flow to the target frame (as FlowVid conditions on flow-warped frames). The paper's model has none,
and that stays the default; the option exists because the paper's conditioning must infer motion from depth alone.

`predict_residual=True` (with `use_warped_previous`) changes what is diffused: not the target latent z_k but its
difference from the warped previous latent, z_k - warp(z_{k-1}). The network then only learns the correction (what the
flow gets wrong: disocclusions, entering content, blur), and a network that predicts nothing returns the warped
latent. `PropConditioning.base` carries that warped latent; training subtracts it from the target and sampling adds it
back to what it sampled.

`context_level_embedding=True` (beyond the paper, after GameNGen's noise augmentation) is against exposure bias: at
inference the previous latent is the chain's own output, with every earlier frame's error in it, while training shows
the true one. Training noises the previous latent to a random level l in [0, max] (prev' = sqrt(1 - l^2) prev + l eps)
and tells the model l through an embedding added to the timestep embedding (diffusers' `class_embed_type="timestep"`,
zero-initialised, so such a model starts out equal to one without it); inference noises its own previous output to a
small fixed level (`inference_context_level`), which hides small errors the model then learns to ignore.

`use_anchored_reference=True` (beyond the paper) adds 5 input channels that carry the edited keyframe itself to the
target frame: the keyframe sampled once (Lanczos) through the target's anchored coordinate map (the `flow`
propagator's maps, `propagation.flow.maps`, walked over the *source* clip from the keyframe), VAE-encoded, plus
the map's validity (1 where the keyframe explains the pixel). The adaptor only tells the UNet what the keyframe looks
like; these channels tell it where each keyframe pixel is now, re-measured against the source keyframe every frame, so
they do not drift along the chain the way the previous latent does. When the reference is dropped (the null
reference of training and of classifier-free guidance) these channels are zeros too: "no reference" means no keyframe
anywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..hub import check_sd1
from .adapter import AppearanceAdapter
from .attention import ReferenceAttnProcessor, ReferenceKV, cache_reference
from .configs import propdpm_config

logger = logging.getLogger(__name__)

REFERENCE_MODES = ("clip+vae", "clip")


@dataclass
class PropConditioning:
    """Everything PropDPM reads besides the noisy latent and the timestep."""

    # (B, 6 [+4] [+5], h, w): target depth, previous latent, previous depth [, warped previous latent]
    # [, anchored keyframe latent, anchored validity]
    spatial: torch.Tensor
    reference_tokens: torch.Tensor  # (B or 1, 1 + h/2 * w/2, C): adaptor output, shared by every frame of a clip
    base: torch.Tensor | None = None  # (B, 4, h, w) residual models: the warped previous latent the sample is added to
    context_level: torch.Tensor | None = None  # (B,) in [0, 1]: how much the previous latent was noised (0 = clean)

    def to_latent(self, sample: torch.Tensor) -> torch.Tensor:
        """A sampled (denoised) latent -> the frame's latent: the sample itself, or base + sample for residual models."""
        return sample if self.base is None else self.base.to(sample.dtype) + sample

    def to_sample(self, latent: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_latent`: what training noises and the network learns to produce."""
        return latent if self.base is None else latent - self.base.to(latent.dtype)


def depth_to_latent_grid(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Depth in [0, 1] (B, 1, H, W) or (B, H, W) -> (B, 1, h, w) in [-1, 1], area-resized to the latent grid."""
    if depth.ndim == 3:
        depth = depth[:, None]
    if tuple(depth.shape[-2:]) != tuple(size):
        depth = F.interpolate(depth, size=size, mode="area" if depth.shape[-1] >= size[-1] else "bilinear")
    return depth * 2 - 1  # same range as the latents' typical values, as SD's ControlNet conditioning is centred


def warp_latent(latent: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp a latent (B, C, h, w) with a pixel-space flow (B, 2, H, W) from the target to the latent's frame.

    flow[:, 0] = dx, flow[:, 1] = dy in pixels (OpenCV's convention, `magicprop.motion.flow.optical_flow(target, previous)`):
    target[y, x] ~ previous[y + dy, x + dx]. The flow is area-averaged onto the latent grid and scaled to latent cells;
    samples outside the frame repeat the border (the UNet also sees the unwarped latent, so it can fix them).
    """
    b, _, h, w = latent.shape
    H, W = flow.shape[-2:]
    flow = F.interpolate(flow.to(latent.dtype), size=(h, w), mode="area" if W >= w else "bilinear")
    scale = torch.tensor([w / W, h / H], dtype=latent.dtype, device=latent.device)[None, :, None, None]
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=latent.dtype, device=latent.device), torch.arange(w, dtype=latent.dtype, device=latent.device), indexing="ij"
    )
    pos = torch.stack([xs, ys])[None] + flow * scale  # (B, 2, h, w): where each target cell comes from, in latent cells
    size = torch.tensor([w, h], dtype=latent.dtype, device=latent.device)[None, :, None, None]
    grid = (2 * (pos + 0.5) / size - 1).permute(0, 2, 3, 1)  # grid_sample's [-1, 1] with align_corners=False
    return F.grid_sample(latent, grid, mode="bilinear", padding_mode="border", align_corners=False)


def mask_to_latent_grid(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A mask in [0, 1] (B, 1, H, W) or (B, H, W) -> (B, 1, h, w) in [0, 1]: the valid fraction of each latent cell."""
    if mask.ndim == 3:
        mask = mask[:, None]
    if tuple(mask.shape[-2:]) != tuple(size):
        mask = F.interpolate(mask, size=size, mode="area" if mask.shape[-1] >= size[-1] else "bilinear")
    return mask


def assemble_conditioning(
    target_depth: torch.Tensor,
    previous_latent: torch.Tensor,
    previous_depth: torch.Tensor,
    reference_tokens: torch.Tensor,
    *,
    previous_flow: torch.Tensor | None = None,
    drop_previous: torch.Tensor | None = None,
    residual: bool = False,
    context_noise: torch.Tensor | None = None,
    context_level: torch.Tensor | None = None,
    anchored_latent: torch.Tensor | None = None,
    anchored_valid: torch.Tensor | None = None,
    drop_reference: torch.Tensor | None = None,
) -> PropConditioning:
    """Put PropDPM's conditions together; training and inference both call this.

    Args:
        target_depth: (B, 1, H, W) or (B, H, W) in [0, 1], 1 = nearest, at any size (resized to the latent grid).
        previous_latent: (B, 4, h, w) scaled VAE latent of the previous *edited* frame.
        previous_depth: depth of the previous frame, like target_depth.
        reference_tokens: adaptor output (see `PropDPM.encode_reference`).
        previous_flow: (B, 2, H, W) optical flow of the *source* clip from the target frame to the previous one, in
            pixels; given only to models built with `use_warped_previous=True`, which then also read the previous latent
            warped along it (`warp_latent`).
        drop_previous: (B,) bool; True replaces the previous frame (latent and depth) with zeros, as training does so
            that the first frame of a chain can be generated from the reference alone.
        residual: for models built with `predict_residual=True`: the warped previous latent becomes `base` too (zeros
            where the previous frame is dropped, so such samples learn the whole latent).
        context_noise, context_level: for models built with `context_level_embedding=True`: Gaussian noise like the
            previous latent and (B,) levels in [0, 1]; the previous latent becomes sqrt(1 - l^2) prev + l noise (before
            it is warped) and the levels are passed on to the model's level embedding.
        anchored_latent, anchored_valid: for models built with `use_anchored_reference=True`: (B, 4, h, w) scaled VAE
            latent (posterior mean) of the edited keyframe sampled through the target's anchored map, and (B, 1, H, W)
            or (B, H, W) its validity in [0, 1], at any size (area-resized to the latent grid, so a cell holds the
            fraction of its pixels the keyframe explains). The mask stays in [0, 1], not [-1, 1] like depth: 0 then
            means "the keyframe explains nothing here", which is exactly what an invalid pixel and a dropped reference
            both mean, so the null reference's all-zero channels need no third value.
        drop_reference: (B,) bool; True zeroes the anchored channels, as `PropDPM.encode_reference(drop=...)` gives
            the null reference tokens for the same samples (training's reference dropout, guidance's null branch).
    """
    size = tuple(previous_latent.shape[-2:])
    target = depth_to_latent_grid(target_depth, size)  # (B, 1, h, w)
    prev_depth = depth_to_latent_grid(previous_depth, size)  # (B, 1, h, w)
    if context_level is not None:
        level = context_level.to(previous_latent.dtype)[:, None, None, None]  # (B, 1, 1, 1)
        previous_latent = (1 - level**2).sqrt() * previous_latent + level * context_noise.to(previous_latent.dtype)
    if drop_previous is not None:
        keep = (~drop_previous).to(previous_latent.dtype)[:, None, None, None]
        previous_latent, prev_depth = previous_latent * keep, prev_depth * keep
    parts = [target, previous_latent, prev_depth]
    warped = None
    if previous_flow is not None:
        warped = warp_latent(previous_latent, previous_flow)  # a dropped previous warps to zeros too
        parts.append(warped)
    if residual and warped is None:
        raise ValueError("a residual PropDPM adds its sample to the warped previous latent: pass previous_flow")
    if (anchored_latent is None) != (anchored_valid is None):
        raise ValueError("the anchored reference is a latent and its validity: pass both anchored_latent and anchored_valid")
    if anchored_latent is not None:
        anchored = anchored_latent.to(previous_latent.dtype)  # (B, 4, h, w)
        valid = mask_to_latent_grid(anchored_valid.to(previous_latent.dtype), size)  # (B, 1, h, w) in [0, 1]
        if drop_reference is not None:  # the null reference has no keyframe to warp
            keep = (~drop_reference).to(anchored.dtype)[:, None, None, None]
            anchored, valid = anchored * keep, valid * keep
        parts += [anchored, valid]
    spatial = torch.cat(parts, dim=1)  # (B, 6 [+4] [+5], h, w)
    return PropConditioning(spatial=spatial, reference_tokens=reference_tokens, base=warped if residual else None,
                            context_level=context_level)  # fmt: skip


class PropDPM(ModelMixin, ConfigMixin):
    """UNet2DConditionModel with 10 input channels plus the appearance adaptor; predicts v (zero-terminal-SNR)."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        latent_channels: int = 4,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D",
        ),  # fmt: skip
        up_block_types: tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block: int = 2,
        attention_head_dim: int | tuple[int, ...] = 8,
        cross_attention_dim: int = 768,  # = CLIP's projected token width, so the adaptor needs no projection
        norm_num_groups: int = 32,
        reference_mode: str = "clip+vae",  # "clip" is the CLIP-only ablation of the adaptor
        use_warped_previous: bool = False,  # 4 more input channels: the previous latent warped along the source's flow
        predict_residual: bool = False,  # diffuse target - warped previous latent (needs use_warped_previous)
        context_level_embedding: bool = False,  # read how much the previous latent was noised (exposure-bias training)
        inference_context_level: float = 0.0,  # the level sampling noises its own previous output to (with the embedding)
        use_anchored_reference: bool = False,  # 5 more input channels: the keyframe warped along its anchored map + validity
    ):
        super().__init__()
        if reference_mode not in REFERENCE_MODES:
            raise ValueError(f"reference_mode must be one of {REFERENCE_MODES}, got {reference_mode!r}")
        if predict_residual and not use_warped_previous:
            raise ValueError("predict_residual needs use_warped_previous: the residual is taken from the warped previous latent")
        self.unet = UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=self.num_input_channels,
            out_channels=latent_channels,
            block_out_channels=tuple(block_out_channels),
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim,
            cross_attention_dim=cross_attention_dim,
            norm_num_groups=norm_num_groups,
            class_embed_type="timestep" if context_level_embedding else None,
        )
        if context_level_embedding:
            # zero-init the level embedding's output layer: it adds nothing until training teaches it (DiT's zero-init)
            torch.nn.init.zeros_(self.unet.class_embedding.linear_2.weight)
            torch.nn.init.zeros_(self.unet.class_embedding.linear_2.bias)
        self.adapter = AppearanceAdapter(cross_attention_dim, latent_channels, use_vae=reference_mode == "clip+vae")
        # reads the reference's keys and values from a per-clip cache at inference (`cache_reference`)
        self.unet.set_attn_processor(ReferenceAttnProcessor())

    @property
    def num_input_channels(self) -> int:
        c = self.config.latent_channels
        # noisy latent, target depth, previous latent, previous depth [, warped previous latent]
        # [, anchored keyframe latent, anchored validity]
        anchored = c + 1 if self.config.get("use_anchored_reference", False) else 0
        return c + 1 + c + 1 + (c if self.config.use_warped_previous else 0) + anchored

    @property
    def inference_context_level(self) -> float:
        """The level sampling (and self-rollout training) noises the model's own previous output to; 0 without the
        level embedding."""
        if not self.config.get("context_level_embedding", False):
            return 0.0
        return float(self.config.get("inference_context_level", 0.0))

    @classmethod
    def from_config_name(cls, name: str, **overrides) -> "PropDPM":
        """Build a randomly initialised PropDPM of a named size (`sd15`, `tiny`)."""
        return cls(**{**propdpm_config(name), **overrides})

    @classmethod
    def from_stable_diffusion(cls, unet: UNet2DConditionModel, **overrides) -> "PropDPM":
        """Initialise from an SD 1.5 UNet: take every weight, grow conv_in from 4 to 10 (or more) channels with zeros.

        The new input channels start at zero, so the converted model gives exactly the SD UNet's output whatever the
        conditions are, and training starts from SD's prior (DiT's zero-init idea). The adaptor (and the level
        embedding) are new and random. The UNet's tensors are taken, not copied: at SD 1.5's size a copy is 3.4 GB more
        at the moment of conversion, so PropDPM shares them with `unet` (which is of no further use: training updates
        them in place; pass a deep copy to keep it).
        """
        cfg = unet.config
        if cfg.in_channels != 4 or cfg.out_channels != 4:
            from ..errors import UsageError

            raise UsageError(
                f"the UNet has {cfg.in_channels} input / {cfg.out_channels} output channels, not SD 1.5's 4/4; "
                "pass a Stable Diffusion 1.x model (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5)"
            )
        check_sd1(dict(cfg), "the UNet")
        kwargs = dict(
            sample_size=cfg.sample_size,
            latent_channels=cfg.in_channels,
            block_out_channels=tuple(cfg.block_out_channels),
            down_block_types=tuple(cfg.down_block_types),
            up_block_types=tuple(cfg.up_block_types),
            layers_per_block=cfg.layers_per_block,
            attention_head_dim=cfg.attention_head_dim,
            cross_attention_dim=cfg.cross_attention_dim,
            norm_num_groups=cfg.norm_num_groups,
            **overrides,
        )
        device = next(unet.parameters()).device
        with torch.device("meta"):  # the UNet's weights come from SD: building them randomly first would be wasted
            model = cls(**kwargs)
        with torch.device(device):
            model.adapter = AppearanceAdapter(model.config.cross_attention_dim, model.config.latent_channels,
                                              use_vae=model.config.reference_mode == "clip+vae")  # fmt: skip
        source, target = unet.state_dict(), model.unet.state_dict()
        taken = {}
        for key, value in source.items():
            if key not in target:
                logger.warning("PropDPM.from_stable_diffusion: skipped %s (not in PropDPM)", key)
                continue
            if key == "conv_in.weight":
                grown = torch.zeros(target[key].shape, dtype=value.dtype, device=value.device)  # (320, 10 [+4] [+5], 3, 3)
                grown[:, : value.shape[1]] = value  # zeros for the new channels
                value = grown
            if target[key].shape != value.shape:
                raise ValueError(f"shape mismatch for {key}: SD {tuple(value.shape)} vs PropDPM {tuple(target[key].shape)}")
            taken[key] = value
        model.unet.load_state_dict(taken, strict=False, assign=True)
        new = _materialise(model.unet, device)  # what SD has no weights for (the level embedding), initialised here
        if model.config.get("context_level_embedding", False):
            torch.nn.init.zeros_(model.unet.class_embedding.linear_2.weight)
            torch.nn.init.zeros_(model.unet.class_embedding.linear_2.bias)
        if model.dtype != unet.dtype:  # a cast that changes nothing still makes diffusers warn
            model.to(dtype=unet.dtype)
        logger.info("PropDPM.from_stable_diffusion: took %d tensors, %d new in the UNet", len(taken), new)
        return model

    def cache_reference(self, reference_tokens: torch.Tensor) -> ReferenceKV:
        """Keys and values of reference tokens (R, N, C) in every cross-attention layer, for `forward(reference_kv=)`:
        computed once per clip, not at every step of every frame."""
        return cache_reference(self.unet, reference_tokens.to(self.dtype))

    def encode_reference(
        self, clip_tokens: torch.Tensor, reference_latent: torch.Tensor, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Adaptor tokens of the reference frame (computed once per clip at inference).

        `drop` (B,) bool gives the *null reference* for the samples where it is True: the adaptor applied to zero CLIP
        tokens and a zero latent. Training drops to it at random, and classifier-free guidance uses it as the
        unconditional branch, so both agree on what "no reference" means.
        """
        if drop is not None:
            keep = (~drop).to(clip_tokens.dtype)
            clip_tokens = clip_tokens * keep[:, None, None]
            reference_latent = reference_latent * keep[:, None, None, None]
        return self.adapter(clip_tokens, reference_latent)  # (B, 1 + h/2 * w/2, C)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, conditioning: PropConditioning,
        reference_kv: ReferenceKV | None = None,
    ) -> torch.Tensor:
        """sample (B, 4, h, w) noisy latent -> (B, 4, h, w) prediction (v for our schedulers). `reference_kv`: the
        reference tokens' keys and values from `cache_reference`, selected for this batch's samples."""
        x = torch.cat([sample, conditioning.spatial.to(sample.dtype)], dim=1)  # (B, 10 [+4] [+5], h, w)
        if x.shape[1] != self.num_input_channels:
            from ..errors import UsageError

            wants = "needs the source's optical flow (previous_flow)" if self.config.use_warped_previous else "takes no flow"
            if self.config.get("use_anchored_reference", False):
                wants += " and needs the anchored keyframe (anchored_latent, anchored_valid)"
            else:
                wants += " and no anchored keyframe"
            raise UsageError(f"PropDPM got {x.shape[1]} input channels, expects {self.num_input_channels}: this model {wants}")
        tokens = conditioning.reference_tokens.to(sample.dtype)
        if tokens.shape[0] != x.shape[0]:
            tokens = tokens.expand(x.shape[0], -1, -1)  # one reference for every chain of a clip
        levels = None
        if self.config.get("context_level_embedding", False):  # the level on the timestep scale (0..1000)
            level = conditioning.context_level if conditioning.context_level is not None else torch.zeros(x.shape[0])
            levels = (level.to(x.device, torch.float32) * 1000).expand(x.shape[0])
        kwargs = None if reference_kv is None else {"reference_kv": reference_kv}
        return self.unet(x, timestep, encoder_hidden_states=tokens, class_labels=levels, cross_attention_kwargs=kwargs).sample


def _materialise(module: torch.nn.Module, device) -> int:
    """Give the parameters still on the meta device real memory and their module's own initialisation; their count."""
    count = 0
    for sub in module.modules():
        if any(p.is_meta for p in sub.parameters(recurse=False)):
            sub.to_empty(device=device, recurse=False)
            sub.reset_parameters()
            count += sum(1 for _ in sub.parameters(recurse=False))
    return count
