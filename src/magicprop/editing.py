"""Stage I: edit one keyframe (paper, section 3.1), then hand it to stage II as the appearance reference.

Three editors share one entry point, `edit_keyframe(image, depth, prompt, ...) -> uint8 (H, W, 3)` at the input's size:

- `ControlNetDepthEditor`: Stable Diffusion 1.5 steered by a depth ControlNet on the keyframe's own depth, so the edit
  keeps the frame's layout (and therefore fits the motion stage II will follow). Without `strength` it paints from noise
  (`StableDiffusionControlNetPipeline`, the strongest edit); with `strength` in (0, 1] it starts from the frame
  (`StableDiffusionControlNetImg2ImgPipeline`, which keeps more of the original); with a `mask` it repaints only inside
  it (`StableDiffusionControlNetInpaintPipeline`) and pastes the untouched frame back outside.
- `UserKeyframe`: a keyframe edited in any other tool, at any size, fitted to the clip's frame size.
- `mask_from_points`: a keyframe mask from clicks, with Segment Anything (the paper's suggestion in section 4).

`edit_keyframe_series` edits several keyframes so that they agree: each later one starts from the edit carried to its
frame and is refined image-to-image (`KEYFRAME_STRENGTH`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import numpy as np

from .errors import MagicPropError, UsageError
from .hub import DEFAULT_IDS, check_sd1_folder, load_component
from .torch_state import without_grad
from .video import fit_image, resize_frames

if TYPE_CHECKING:  # torch loads with the editor's or SAM's models: a user's keyframe image needs neither
    import torch

logger = logging.getLogger(__name__)

EditKind = Literal["text", "img2img", "inpaint"]
SchedulerName = Literal["unipc", "ddim"]
SD_MULTIPLE = 8  # diffusers' SD pipelines refuse heights and widths that are not multiples of 8


# ---------------------------------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------------------------------
def prepare_mask(mask: np.ndarray, size: tuple[int, int], *, what: str = "mask", allow_empty: bool = False) -> np.ndarray:
    """An in-memory mask as bool (H, W) at `size`: thresholded at half its range, resized (nearest) with a warning.

    (Mask files go through `video.load_mask`, which applies the same rule.) An empty mask raises: a local edit of
    nothing is a mistake, not a no-op.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask.max(axis=2)  # a colour mask: any channel counts
    if mask.ndim != 2:
        raise UsageError(f"{what} must be an (H, W) image, got shape {mask.shape}")
    if mask.dtype != bool:
        half = 127 if mask.dtype == np.uint8 else (0.5 if mask.dtype.kind == "f" else 0)
        mask = mask > half
    if mask.shape != tuple(size):
        logger.warning(f"{what} is {mask.shape[1]}x{mask.shape[0]} but the frames are {size[1]}x{size[0]}; resizing it (nearest)")
        mask = resize_frames(mask.astype(np.uint8)[..., None], size, interpolation="nearest")[..., 0].astype(bool)
    if not allow_empty and not mask.any():
        raise UsageError(f"{what} is empty (no pixel set); paint the region to edit, or leave the mask out for a global edit")
    return mask


def feather_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """bool (H, W) -> float32 (H, W) in [0, 1]: a Gaussian blur whose kernel stops at `radius` pixels, so the soft edge
    reaches at most `radius` pixels beyond the mask and everything farther is exactly 0 (the source, untouched)."""
    import cv2

    soft = mask.astype(np.float32)
    if radius <= 0:
        return soft
    size = 2 * int(radius) + 1
    return cv2.GaussianBlur(soft, (size, size), sigmaX=radius / 2, borderType=cv2.BORDER_REPLICATE)


def composite(edited: np.ndarray, source: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """edited * alpha + source * (1 - alpha) per pixel, uint8; `alpha` (..., H, W) in [0, 1]. Where alpha is 0 the
    result is the source bit for bit (0 * e + 1 * s is exact in floating point)."""
    a = alpha[..., None].astype(np.float32)
    out = edited.astype(np.float32) * a + source.astype(np.float32) * (1 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def default_feather(height: int, width: int) -> int:
    """1% of the longer side (5 px at 512): wide enough to hide the seam, narrow enough to keep the background."""
    return max(1, round(0.01 * max(height, width)))


# ---------------------------------------------------------------------------------------------------------------------
# Keyframe choice
# ---------------------------------------------------------------------------------------------------------------------
def choose_keyframe(num_frames: int, masks: np.ndarray | None = None, index: int | str = "auto") -> int:
    """The frame to edit, as a non-negative index.

    An int is used as given (negative counts from the end; outside the clip raises UsageError). "auto" picks the frame
    whose mask covers the most pixels (the edited object is seen largest there, so stage I has the most to work with),
    ties going to the frame nearest the middle; without masks (or with all of them empty) it picks the middle frame,
    `num_frames // 2`, which keeps both propagation chains, and so their drift, as short as possible.
    """
    if num_frames < 1:
        raise UsageError("the clip has no frames")
    if index != "auto":
        try:
            i = int(index)
        except (TypeError, ValueError):
            raise UsageError(f"keyframe index must be an integer or 'auto', got {index!r}") from None
        if not -num_frames <= i < num_frames:
            raise UsageError(f"keyframe index {i} is outside the clip (0..{num_frames - 1}); pick a frame inside it")
        return i % num_frames
    middle = num_frames // 2
    if masks is None:
        return middle
    areas = np.asarray(masks).reshape(len(masks), -1).sum(axis=1)
    if len(areas) != num_frames:
        raise UsageError(f"got {len(areas)} masks for a {num_frames}-frame clip; give one mask per frame")
    if areas.max() == 0:
        return middle
    best = np.flatnonzero(areas == areas.max())
    return int(best[np.argmin(np.abs(best - middle))])


# ---------------------------------------------------------------------------------------------------------------------
# Editors
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class UserKeyframe:
    """A keyframe the user edited elsewhere, fitted to the frame size (warns when it must stretch). With a mask, only
    the part inside it is taken (a local edit), blended over `feather` pixels; the prompt and sampling are unused."""

    image: np.ndarray  # uint8 (H, W, 3), any size

    def edit_keyframe(self, image: np.ndarray, depth: np.ndarray | None = None, *args, mask: np.ndarray | None = None,
                      feather: int | None = None, **unused) -> np.ndarray:  # fmt: skip
        fitted = fit_image(self.image, image.shape[:2])
        if mask is None:
            return fitted
        mask = prepare_mask(mask, image.shape[:2], what="keyframe mask")
        radius = default_feather(*image.shape[:2]) if feather is None else feather
        return composite(fitted, image, feather_mask(mask, radius))


def depth_condition(depth: np.ndarray) -> torch.Tensor:
    """(H, W) depth, 1 = near -> the ControlNet's conditioning image (1, 3, H, W) in [0, 1], min-max normalised per
    image as the depth ControlNets were trained (MiDaS maps rescaled to 0..255)."""
    import torch

    d = np.asarray(depth, dtype=np.float32)
    lo, hi = float(d.min()), float(d.max())
    d = (d - lo) / (hi - lo) if hi > lo else np.zeros_like(d)
    return torch.from_numpy(d)[None, None].repeat(1, 3, 1, 1)


def check_tokenizer(tokenizer, source: str, flag: str) -> None:
    """A tokenizer that loaded without its vocabulary encodes every prompt to [bos, eos]: refuse to run with it."""
    if len(tokenizer) <= 2 or len(tokenizer("a photo")["input_ids"]) <= 2:
        raise MagicPropError(
            f"the tokenizer of {source} loaded with an empty vocabulary ({len(tokenizer)} tokens): its files are missing from "
            f"the folder or the local cache; download the model on a connected machine or pass a complete folder with {flag} DIR"
        )


class ControlNetDepthEditor:
    """Stable Diffusion 1.5 + a depth ControlNet, built from components loaded once and shared by the three pipelines.

    The safety checker is not loaded (`safety_checker=None`): it is a 1.2 GB model that blacks out whole frames on false
    positives, which in a video edit silently ruins the reference for every frame. Whoever publishes the output is
    responsible for it, as with any image editor.
    """

    def __init__(self, *, vae, text_encoder, tokenizer, unet, controlnet, scheduler, sources: dict[str, str] | None = None):
        self.sources = dict(sources or {})
        check_tokenizer(tokenizer, self.sources.get("base_model", "the base model"), "--base-model")
        self.components = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, controlnet=controlnet, scheduler=scheduler)
        self._pipelines: dict[str, object] = {}
        self._offload_device: torch.device | None = None

    @classmethod
    def from_pretrained(
        cls,
        base_model: str | os.PathLike = DEFAULT_IDS["sd15"],
        controlnet: str | os.PathLike = DEFAULT_IDS["controlnet_depth"],
        *,
        scheduler: SchedulerName = "unipc",
        allow_pickle: bool = False,
    ) -> "ControlNetDepthEditor":
        """Load from an SD 1.x folder or hub id (unet/, vae/, text_encoder/, tokenizer/, scheduler/) and a ControlNet.

        UniPC reaches in 20-30 steps what DDIM needs 50 for; its betas come from the base model's scheduler config.
        """
        from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel, UniPCMultistepScheduler
        from transformers import CLIPTextModel, CLIPTokenizer

        schedulers = {"unipc": UniPCMultistepScheduler, "ddim": DDIMScheduler}
        if scheduler not in schedulers:
            raise UsageError(f"unknown scheduler {scheduler!r}; choose one of {sorted(schedulers)}")
        base = dict(id_or_path=base_model, flag="--base-model", allow_pickle=allow_pickle)
        # Cheap parts first: a wrong id fails before gigabytes of weights are read. The scheduler's config goes first of
        # all: offline, a tokenizer missing from the cache can load "successfully" with an empty vocabulary.
        check_sd1_folder(base_model, "--base-model")  # SD 2.x / SDXL named in one line, before any weight is read
        check_sd1_folder(controlnet, "--controlnet", subfolder=None)
        sched = load_component(schedulers[scheduler], **base, what="SD scheduler", subfolder="scheduler")
        tokenizer = load_component(CLIPTokenizer, **base, what="SD tokenizer", subfolder="tokenizer")
        check_tokenizer(tokenizer, str(base_model), "--base-model")
        net = load_component(ControlNetModel, controlnet, what="depth ControlNet", flag="--controlnet", allow_pickle=allow_pickle)
        text_encoder = load_component(CLIPTextModel, **base, what="SD text encoder", subfolder="text_encoder")
        vae = load_component(AutoencoderKL, **base, what="SD VAE", subfolder="vae")
        unet = load_component(UNet2DConditionModel, **base, what="SD UNet", subfolder="unet")
        for module in (net, text_encoder, vae, unet):
            module.eval().requires_grad_(False)
        sources = {"base_model": str(base_model), "controlnet": str(controlnet), "scheduler": scheduler}
        return cls(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, controlnet=net, scheduler=sched, sources=sources)

    @property
    def device(self) -> torch.device:
        return self._offload_device or self.components["unet"].device

    @property
    def dtype(self) -> torch.dtype:
        return self.components["unet"].dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "ControlNetDepthEditor":
        kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}  # diffusers warns on dtype=None
        for name in ("vae", "text_encoder", "unet", "controlnet"):
            self.components[name].to(**kwargs)
        return self

    def enable_model_cpu_offload(self, device: torch.device | str = "cuda") -> None:
        """Keep each model on the CPU until its turn (diffusers' hooks): SD + ControlNet fit in about 3 GB of GPU memory."""
        import torch

        self._offload_device = torch.device(device)
        self.to("cpu")

    def pipeline(self, kind: EditKind):
        """The diffusers pipeline for one kind of edit; all three share the same modules (no extra memory)."""
        from diffusers import (
            StableDiffusionControlNetImg2ImgPipeline,
            StableDiffusionControlNetInpaintPipeline,
            StableDiffusionControlNetPipeline,
        )

        classes = {
            "text": StableDiffusionControlNetPipeline,
            "img2img": StableDiffusionControlNetImg2ImgPipeline,
            "inpaint": StableDiffusionControlNetInpaintPipeline,
        }
        if kind not in self._pipelines:
            pipe = classes[kind](**self.components, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
            pipe.set_progress_bar_config(disable=True)
            self._pipelines[kind] = pipe
        pipe = self._pipelines[kind]
        if self._offload_device is not None:  # hooks are per pipeline: (re)install them on the one about to run
            pipe.enable_model_cpu_offload(device=self._offload_device)
        return pipe

    @without_grad
    def edit_keyframe(
        self,
        image: np.ndarray,
        depth: np.ndarray | None,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        mask: np.ndarray | None = None,
        num_inference_steps: int = 30,
        guidance_scale: float = 7.5,
        strength: float | None = None,
        generator: torch.Generator | None = None,
        *,
        controlnet_conditioning_scale: float = 1.0,
        feather: int | None = None,
    ) -> np.ndarray:
        """Edit `image` (uint8 (H, W, 3)) guided by `prompt` and its `depth` (H, W); returns uint8 (H, W, 3).

        mask: bool (H, W), repaint only inside it (any other size is resized, non-bool values thresholded; an empty
            mask raises UsageError). The result keeps the input outside the mask, blended over `feather` pixels.
        strength: None paints from noise; in (0, 1] starts from the image (1 = as free as from noise). With a mask,
            None means 1.
        """
        # 1. Check inputs
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise UsageError(f"keyframe must be a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
        if not prompt or not str(prompt).strip():
            raise UsageError("a text edit needs a prompt (--prompt); or pass an edited keyframe image (--keyframe-image)")
        if depth is None or np.asarray(depth).ndim != 2:
            raise UsageError("the depth ControlNet needs the keyframe's depth as an (H, W) map")
        if strength is not None and not 0 < strength <= 1:
            raise UsageError(f"strength must be in (0, 1], got {strength}")
        if num_inference_steps < 1:
            raise UsageError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        h, w = image.shape[:2]
        if mask is not None:
            mask = prepare_mask(mask, (h, w), what="keyframe mask")

        # 2. SD works on multiples of 8: run at the nearest such size, come back to (h, w) at the end
        sh, sw = (max(SD_MULTIPLE, round(s / SD_MULTIPLE) * SD_MULTIPLE) for s in (h, w))
        work = resize_frames(image, (sh, sw))
        control = depth_condition(resize_frames(np.asarray(depth, np.float32)[..., None], (sh, sw))[..., 0])
        common = dict(
            prompt=prompt, negative_prompt=negative_prompt or None, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, generator=generator, height=sh, width=sw, output_type="np",
            controlnet_conditioning_scale=controlnet_conditioning_scale,
        )  # fmt: skip

        # 3. Pick the pipeline for the kind of edit and run it
        from PIL import Image

        if mask is not None:
            m = resize_frames(mask.astype(np.uint8)[..., None] * 255, (sh, sw), interpolation="nearest")[..., 0]
            pipe = self.pipeline("inpaint")
            args = dict(image=Image.fromarray(work), mask_image=Image.fromarray(m), control_image=control, strength=strength or 1.0)
        elif strength is not None:
            pipe = self.pipeline("img2img")
            args = dict(image=Image.fromarray(work), control_image=control, strength=strength)
        else:
            pipe = self.pipeline("text")
            args = dict(image=control)
        out = pipe(**common, **args).images[0]  # (sh, sw, 3) float in [0, 1]
        edited = resize_frames(np.clip(np.rint(out * 255), 0, 255).astype(np.uint8), (h, w))

        # 4. A local edit leaves the frame outside the mask as it was (the inpaint pipeline re-encodes all of it)
        if mask is not None:
            radius = default_feather(h, w) if feather is None else feather
            edited = composite(edited, image, feather_mask(mask, radius))
        return edited


# ---------------------------------------------------------------------------------------------------------------------
# Several keyframes that agree
# ---------------------------------------------------------------------------------------------------------------------
# The strength at which stage I refines a later keyframe from the edit carried to it: the diffusers img2img pipelines
# run the last `strength` of the schedule, so 0.5 keeps the carried picture's layout and colours and repaints its
# detail (and what the carried edit could not explain, which the fill only approximated). Not tuned on real weights.
KEYFRAME_STRENGTH = 0.5


def edit_keyframe_series(
    order: Sequence[int],
    edit: Callable[[int, np.ndarray | None], np.ndarray],
    carry: Callable[[dict[int, np.ndarray], int], np.ndarray],
) -> dict[int, np.ndarray]:
    """Stage I on several keyframes that agree with each other, in `order`: the first edited from its own frame,
    `edit(k, None)`; every later one from the keyframes edited so far carried to its frame, `edit(k, carry(edited, k))`,
    where `edit` refines its start image image-to-image (with the depth ControlNet, at `KEYFRAME_STRENGTH`, inside the
    frame's mask if any). Returns {frame index: edited keyframe}, in `order`."""
    edited: dict[int, np.ndarray] = {}
    for j, k in enumerate(order):
        if k in edited:
            raise UsageError(f"frame {k} is named twice; give each keyframe once")
        edited[k] = edit(k, None if j == 0 else carry(dict(edited), k))
    return edited


# ---------------------------------------------------------------------------------------------------------------------
# Masks from clicks (Segment Anything)
# ---------------------------------------------------------------------------------------------------------------------
class PointSegmenter:
    """SAM (transformers' SamModel + SamProcessor): clicks on an object -> its mask."""

    def __init__(self, model, processor, source: str = ""):
        self.model, self.processor, self.source = model, processor, source

    @classmethod
    def from_pretrained(
        cls, id_or_path: str | os.PathLike = DEFAULT_IDS["sam"], *, device=None, allow_pickle: bool = False
    ) -> "PointSegmenter":
        from transformers import SamModel, SamProcessor

        processor = load_component(SamProcessor, id_or_path, what="SAM processor", flag="--sam-model")
        model = load_component(SamModel, id_or_path, what="SAM model", flag="--sam-model", allow_pickle=allow_pickle)
        model = model.eval() if device is None else model.eval().to(device)
        return cls(model, processor, str(id_or_path))

    @without_grad
    def __call__(self, image: np.ndarray, points: Sequence[tuple[float, float]]) -> np.ndarray:
        """bool (H, W): the mask SAM scores highest for the object under all `points` ((x, y) pixels, all "inside")."""
        h, w = image.shape[:2]
        points = [(float(x), float(y)) for x, y in points]
        if not points:
            raise UsageError("give at least one point (--mask-point X,Y) on the object to mask")
        for x, y in points:
            if not (0 <= x < w and 0 <= y < h):
                raise UsageError(f"point {x:g},{y:g} is outside the {w}x{h} keyframe; give X,Y in pixels of the video")
        inputs = self.processor(images=image, input_points=[[points]], return_tensors="pt").to(self.model.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        out = self.model(**inputs, multimask_output=True)  # three candidate masks (whole, part, subpart) and their IoU
        masks = self.processor.post_process_masks(out.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu())
        best = int(out.iou_scores[0, 0].argmax())
        return masks[0][0, best].numpy().astype(bool)


def mask_from_points(
    image: np.ndarray,
    points: Sequence[tuple[float, float]],
    sam_model: str | os.PathLike | PointSegmenter = DEFAULT_IDS["sam"],
) -> np.ndarray:
    """bool (H, W) mask of the object under the clicked `points` ((x, y) in pixels), with Segment Anything."""
    segmenter = sam_model if isinstance(sam_model, PointSegmenter) else PointSegmenter.from_pretrained(sam_model)
    mask = segmenter(image, points)
    if not mask.any():
        raise UsageError("SAM found no object under the given points; click inside the object, or pass a mask file")
    return mask
