"""MagicPropPipeline: stage I (edit one keyframe) then stage II (propagate it along the clip's depth), diffusers style.

    pipe = MagicPropPipeline.from_pretrained()  # SD 1.5 + depth ControlNet (loaded when a prompt needs them), tiny PropDPM
    out = pipe("clip.mp4", prompt="a bear walking through stars", generator=torch.Generator().manual_seed(0))
    write_video("edited.mp4", out.frames, out.fps)

Everything runs at a working size: the largest size within `max_pixels` with the clip's aspect ratio whose sides are
multiples of 8 (SD) and of twice the propagation VAE's factor (the appearance adaptor halves the latent grid). Frames
come back at the source's size. Models a call needs are loaded before the clip is decoded, so a missing one costs
nothing: a run from a user's keyframe image never loads Stable Diffusion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from .editing import (
    ControlNetDepthEditor, PointSegmenter, UserKeyframe, choose_keyframe, composite, default_feather, feather_mask, split_masks,
)  # fmt: skip
from .errors import UsageError
from .fileio import atomic_write_json, require_file
from .jobs import LEARNED, PROPAGATORS
from .models.bundle import PropagationModels
from .models.configs import DEFAULT_IDS
from .video import load_image, read_video, resize_frames, save_image, working_size

logger = logging.getLogger(__name__)

Propagator = Literal["propdpm", "hybrid", "flow", "copy"]
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}  # fmt: skip


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device asked for, else the best available: CUDA, then Apple's MPS, then the CPU."""
    if device is not None:
        device = torch.device(device)
        mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        if (device.type == "cuda" and not torch.cuda.is_available()) or (device.type == "mps" and not mps):
            raise UsageError(f"device {device} asked for, but it is not available here; use --device cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """float16 on CUDA (half the memory, twice the speed, as SD is usually run), float32 elsewhere, unless asked."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() not in _DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; choose fp32, fp16 or bf16")
    resolved = _DTYPES[str(dtype).lower()]
    if device.type == "cpu" and resolved == torch.float16:
        logger.warning("float16 on the CPU is slow and some operations lack kernels; prefer fp32 or bf16 there")
    return resolved


def check_call_inputs(prompt, keyframe_image, mask, mask_points, strength) -> None:
    """The checks of a call that need no model and no frames (shared with the CLI, which runs them before loading)."""
    if keyframe_image is not None and prompt:
        raise UsageError("give either a prompt (stage I edits the keyframe) or a keyframe image, not both")
    if keyframe_image is None and not (prompt and str(prompt).strip()):
        raise UsageError("nothing to edit: give a prompt (--prompt), or an edited keyframe image (--keyframe-image)")
    if mask is not None and mask_points:
        raise UsageError("give either a mask or mask points (--mask-point), not both")
    if strength is not None and not 0 < strength <= 1:
        raise UsageError(f"strength must be in (0, 1], got {strength}")


@dataclass
class MagicPropOutput:
    frames: np.ndarray | list  # (T, H, W, 3) uint8 at the source's size, or a list of PIL images (output_type="pil")
    keyframe: np.ndarray  # (H, W, 3) uint8: the edited keyframe, at the source's size
    keyframe_index: int
    depth: np.ndarray | None  # (T, h, w) float32 in [0, 1] at the working size; None when the run needed none
    fps: float | None = None  # the source's frame rate when `video` was a file; None for an array


class MagicPropPipeline:
    """Stage I editor + stage II propagator. Build it with `from_pretrained`; call it on a clip."""

    def __init__(
        self,
        propagation_models: PropagationModels | None = None,
        *,
        propagator: Propagator = "propdpm",
        editor: ControlNetDepthEditor | None = None,
        depth_estimator=None,
        segmenter: PointSegmenter | None = None,
        model_ids: dict[str, str] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        load_editor: bool = True,
        cpu_offload: bool = False,
        allow_pickle: bool = False,
    ):
        if propagator not in PROPAGATORS:
            raise UsageError(f"unknown propagator {propagator!r}; choose one of {', '.join(PROPAGATORS)}")
        if propagator in LEARNED and propagation_models is None:
            raise UsageError(f"the {propagator} propagator needs propagation models; load them with MagicPropPipeline.from_pretrained")
        self.propagation_models = propagation_models
        self.propagator = propagator
        self.editor, self.depth_estimator, self.segmenter = editor, depth_estimator, segmenter
        self.model_ids = {**_default_ids(), **(model_ids or {})}
        self.device, self.dtype = torch.device(device), dtype
        self.load_editor_allowed = load_editor  # False: stage I is never loaded (prompts are refused)
        self.cpu_offload = cpu_offload
        self.allow_pickle = allow_pickle

    @classmethod
    def from_pretrained(
        cls,
        base_model: str | os.PathLike = DEFAULT_IDS["sd15"],
        controlnet: str | os.PathLike = DEFAULT_IDS["controlnet_depth"],
        propagation_model: str | os.PathLike | None = None,
        depth_model: str | os.PathLike = DEFAULT_IDS["depth"],
        *,
        sam_model: str | os.PathLike = DEFAULT_IDS["sam"],
        propagator: Propagator = "propdpm",
        device: str | torch.device | None = None,
        torch_dtype: str | torch.dtype | None = None,
        enable_model_cpu_offload: bool = False,
        load_editor: bool = True,
        allow_pickle: bool = False,
    ) -> "MagicPropPipeline":
        """Load the propagation model now (None = the tiny model embedded in the package); SD, the ControlNet, the depth
        model and SAM are only named here and loaded by the first call that needs them (`prepare`).

        enable_model_cpu_offload: for GPUs with little memory: SD's parts visit the GPU one at a time (diffusers'
            hooks) and PropDPM is moved there only while it propagates.
        load_editor: False never loads stage I (a prompt is then refused): for propagation-only services.
        """
        if propagator not in PROPAGATORS:
            raise UsageError(f"unknown propagator {propagator!r}; choose one of {', '.join(PROPAGATORS)}")
        dev = resolve_device(device)
        dtype = resolve_dtype(torch_dtype, dev)
        models = None
        if propagator in LEARNED:
            models = PropagationModels.from_pretrained(propagation_model, allow_pickle=allow_pickle)
            move(models, "cpu" if enable_model_cpu_offload else dev, _changed(models.dtype, dtype))
        ids = {"base_model": str(base_model), "controlnet": str(controlnet), "depth_model": str(depth_model), "sam_model": str(sam_model),
               "propagation_model": models.source if models is not None else None}  # fmt: skip
        return cls(models, propagator=propagator, model_ids=ids, device=dev, dtype=dtype, load_editor=load_editor,
                   cpu_offload=enable_model_cpu_offload, allow_pickle=allow_pickle)  # fmt: skip

    # -----------------------------------------------------------------------------------------------------------------
    def prepare(self, *, prompt: str | None = None, depth=None, mask_points: Sequence | None = None) -> None:
        """Load every model a call with these inputs will need, so that a missing one fails before any work."""
        if prompt and self.editor is None:
            if not self.load_editor_allowed:
                raise UsageError("this pipeline was built with load_editor=False; pass an edited keyframe image instead of a prompt")
            self.editor = ControlNetDepthEditor.from_pretrained(self.model_ids["base_model"], self.model_ids["controlnet"], allow_pickle=self.allow_pickle)
            if self.cpu_offload and self.device.type != "cpu":
                self.editor.to(dtype=_changed(self.editor.dtype, self.dtype)).enable_model_cpu_offload(self.device)
            else:
                self.editor.to(self.device, _changed(self.editor.dtype, self.dtype))
        needs_depth = depth is None and (self.propagator in LEARNED or bool(prompt))
        if needs_depth and self.depth_estimator is None:
            from .motion import DepthEstimator

            self.depth_estimator = DepthEstimator.from_pretrained(
                self.model_ids["depth_model"], device=str(self.device), dtype=self.dtype, allow_pickle=self.allow_pickle
            )
        if mask_points and self.segmenter is None:
            self.segmenter = PointSegmenter.from_pretrained(self.model_ids["sam_model"], device=self.device, allow_pickle=self.allow_pickle)

    def working_size(self, height: int, width: int, max_pixels: int = 512 * 512) -> tuple[int, int]:
        """(h, w) within `max_pixels`, sides multiples of 8 (SD) and of 2x the propagation VAE's factor."""
        multiple = 8
        if self.propagation_models is not None:
            from .models.reference import vae_scale_factor

            multiple = math.lcm(8, 2 * vae_scale_factor(self.propagation_models.vae))
        return working_size(height, width, max_pixels=max_pixels, multiple_of=multiple)

    @torch.no_grad()
    def __call__(
        self,
        video: str | os.PathLike | np.ndarray,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        mask: np.ndarray | None = None,
        keyframe_index: int | str = "auto",
        keyframe_image: str | os.PathLike | np.ndarray | Mapping[int, str | os.PathLike | np.ndarray] | None = None,
        num_inference_steps: int = 30,
        guidance_scale: float = 7.5,
        strength: float | None = None,
        propagation_steps: int = 25,
        propagation_guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        depth: str | os.PathLike | np.ndarray | None = None,
        max_pixels: int = 512 * 512,
        output_type: Literal["np", "pil"] = "np",
        work_dir: str | os.PathLike | None = None,
        resume: bool = False,
        callback: Callable[[int, int], None] | None = None,
        *,
        mask_points: Sequence[tuple[float, float]] | None = None,
        feather: int | None = None,
    ) -> MagicPropOutput:
        """Edit `video` ((T, H, W, 3) uint8 or a path) and return it edited, at its own size.

        prompt: the edit, for stage I (SD 1.5 + depth ControlNet); or `keyframe_image`, a keyframe edited elsewhere.
        mask: (H, W) keyframe mask: SD repaints only inside it. (T, H, W) per-frame masks: also composites every output
            frame over the source outside its mask, with a `feather`-pixel soft edge (default 1% of the longer side).
        mask_points: (x, y) clicks on the keyframe (source pixels): the keyframe mask from Segment Anything.
        keyframe_index: int (negative from the end) or "auto" (see `editing.choose_keyframe`).
        keyframe_image: a keyframe edited elsewhere (stage I is skipped); or several, {frame index: image}, each kept
            exactly and propagated to its neighbours, crossfaded between them (`propagation.blend_keyframes`);
            `keyframe_index` is then unused and `output.keyframe` is the first of them.
        strength: None = paint the keyframe from noise; in (0, 1] = start from the frame (img2img / inpaint).
        generator: seeds stage I; its initial seed also seeds stage II. None draws a seed from torch's global RNG.
        depth: (T, h, w) in [0, 1] (1 = near) or a .npz from `magicprop depth`; None = estimate it.
        work_dir: where finished work is kept so `resume=True` continues a killed run; the caller removes it.
        callback: progress, called as callback(frames_done, total) with the keyframe counted as done: after every
            PropDPM step (both chains), or per frame for flow/copy; it ends at (total, total). Raising from it stops
            the run (finished PropDPM steps stay in work_dir for `resume`); the web UI cancels this way.
        """
        # 1. Check inputs
        check_call_inputs(prompt, keyframe_image, mask, mask_points, strength)
        if output_type not in ("np", "pil"):
            raise UsageError(f"output_type must be 'np' or 'pil', got {output_type!r}")
        if propagation_steps < 1 or num_inference_steps < 1:
            raise UsageError("the numbers of sampling steps must be at least 1")
        if isinstance(video, (str, os.PathLike)):
            require_file(video, "video")
        if isinstance(depth, (str, os.PathLike)):
            require_file(depth, "depth file")
        seed = generator.initial_seed() if generator is not None else int(torch.randint(0, 2**31 - 1, (1,)))

        # 2. Load what this call needs, before any decoding
        self.prepare(prompt=prompt, depth=depth, mask_points=mask_points)
        several = isinstance(keyframe_image, Mapping)
        if several and (mask_points or (mask is not None and np.ndim(mask) == 2)):
            raise UsageError("a keyframe mask or mask points select a region of one keyframe; with several keyframes give per-frame masks (--masks)")
        user_images = {i: _load_keyframe(img) for i, img in keyframe_image.items()} if several else None
        user_image = None if several else _load_keyframe(keyframe_image)

        # 3. Read the clip; masks and working size
        frames, fps = read_video(video) if isinstance(video, (str, os.PathLike)) else (_check_video(video), None)
        num_frames, height, width = frames.shape[:3]
        key_mask, frame_masks = split_masks(mask, num_frames, (height, width))
        if several:
            user_images = _resolve_keyframes(user_images, num_frames)
        k = next(iter(user_images)) if several else choose_keyframe(num_frames, frame_masks, keyframe_index)
        if frame_masks is not None:
            key_mask = frame_masks[k]
        if mask_points:
            key_mask = self.segmenter(frames[k], mask_points)
        h, w = self.working_size(height, width, max_pixels)
        work = resize_frames(frames, (h, w))
        work_dir = Path(work_dir) if work_dir is not None else None

        # 4. Depth: the whole clip for PropDPM, only the keyframe when it is just the ControlNet's condition
        depth_map = self._depth(depth, work, k, bool(prompt), work_dir)

        # 5. Stage I: the edited keyframe (kept in the work folder, so a resumed run does not repaint it)
        if key_mask is not None:
            key_mask = resize_frames(key_mask.astype(np.uint8)[..., None], (h, w), interpolation="nearest")[..., 0] > 0
        edit_args = dict(prompt=prompt, negative_prompt=negative_prompt, num_inference_steps=num_inference_steps,
                         guidance_scale=guidance_scale, strength=strength, mask=key_mask,
                         feather=None if feather is None else round(feather * w / width))  # fmt: skip
        stamp = {**edit_args, "mask": _digest(key_mask), "seed": seed, "keyframe_index": k, "size": [h, w], "frame": _digest(work[k]),
                 "models": [self.model_ids["base_model"], self.model_ids["controlnet"]], "user_image": _digest(user_image)}  # fmt: skip
        keyframe = _cached_keyframe(work_dir, stamp, resume) if not several else None
        fitted = {} if not several else {i: UserKeyframe(img).edit_keyframe(work[i]) for i, img in user_images.items()}
        if several:
            keyframe = fitted[k]
        elif keyframe is None:
            editor = self.editor if prompt else UserKeyframe(user_image)
            key_depth = None if depth_map is None else depth_map[k if len(depth_map) > 1 else 0]
            generator = generator if generator is not None else torch.Generator().manual_seed(seed)
            keyframe = editor.edit_keyframe(work[k], key_depth, generator=generator, **edit_args)
            _store_keyframe(work_dir, stamp, keyframe)

        # 6. Stage II: propagate the keyframe to every other frame, at the working size
        edited = self._propagate(
            work, depth_map, fitted or {k: keyframe}, propagation_steps, propagation_guidance_scale, seed, work_dir, resume, callback
        )

        # 7. Back to the source's size; with per-frame masks, the source outside them
        radius = default_feather(height, width) if feather is None else feather
        out = np.empty_like(frames)
        for t, frame in enumerate(edited):
            frame = resize_frames(frame, (height, width))
            out[t] = frame if frame_masks is None else composite(frame, frames[t], feather_mask(frame_masks[t], radius))
            if callback is not None and self.propagator not in LEARNED:  # PropDPM reports while it samples
                callback(t + 1, num_frames)
        key_out = resize_frames(keyframe, (height, width))
        result = out if output_type == "np" else [Image.fromarray(f) for f in out]
        return MagicPropOutput(frames=result, keyframe=key_out, keyframe_index=k, depth=depth_map if self.propagator in LEARNED else None, fps=fps)

    # -----------------------------------------------------------------------------------------------------------------
    def _depth(self, depth, work: np.ndarray, k: int, for_edit: bool, work_dir: Path | None) -> np.ndarray | None:
        from .motion import estimate_clip_depth, load_depth, resize_depth

        num_frames, h, w = work.shape[:3]
        if depth is not None:
            if isinstance(depth, (str, os.PathLike)):
                return load_depth(depth, size=(h, w), frames=num_frames)
            depth = np.asarray(depth, dtype=np.float32)
            if depth.ndim != 3 or len(depth) != num_frames:
                raise UsageError(f"depth must be (T, H, W) with T = {num_frames} frames, got shape {depth.shape}")
            return resize_depth(depth, (h, w))
        if self.propagator not in LEARNED and not for_edit:
            return None
        clip = work if self.propagator in LEARNED else work[k : k + 1]
        cache = work_dir / "depth" if work_dir is not None else None
        estimator = self.depth_estimator
        with _on_device(estimator.model, self.device, self.cpu_offload):
            return estimate_clip_depth(clip, estimator, cache_dir=cache, size=(h, w))

    def _propagate(self, work, depth, keyframes: dict[int, np.ndarray], steps, guidance, seed, work_dir: Path | None, resume: bool, callback=None):
        """Yield the edited frames at the working size, in order, from one keyframe or several ({index: keyframe})."""
        from .propagation import blend_keyframes

        if self.propagator == "copy":
            from .baselines import propagate_copy

            render = lambda k, start, stop: propagate_copy(work[start:stop], keyframes[k], k - start)  # noqa: E731
        elif self.propagator == "flow":
            from .baselines import propagate_flow

            render = lambda k, start, stop: propagate_flow(work[start:stop], keyframes[k], k - start)  # noqa: E731
        else:
            render = self._propdpm_renderer(work, depth, keyframes, steps, guidance, seed, work_dir, resume, callback)
        yield from blend_keyframes(render, list(keyframes), len(work))

    def _propdpm_renderer(self, work, depth, keyframes, steps, guidance, seed, work_dir, resume, callback):
        from .propagation import PropagationSettings, decode_frames, keyframe_spans, propagate_latents

        models = self.propagation_models
        settings = PropagationSettings(num_inference_steps=steps, guidance_scale=guidance, seed=seed, flow_fusion=self.propagator == "hybrid")
        # progress counts frames rendered, the keyframes as done: T for one keyframe, more where spans overlap
        offsets, total = {}, len(keyframes)
        for k, start, stop in keyframe_spans(list(keyframes), len(work)):
            offsets[k], total = total, total + stop - start - 1

        def render(k: int, start: int, stop: int):
            # one keyframe keeps the single-keyframe work folder; several get a folder each, so each resumes alone
            sub = None if work_dir is None else work_dir / "propagation" / ("" if len(keyframes) == 1 else f"keyframe-{k:05d}")
            report = None if callback is None else (lambda done, _: callback(offsets[k] + done, total))
            with _on_device(models, self.device, self.cpu_offload):
                store, where = propagate_latents(
                    models, depth[start:stop], keyframes[k], k - start, settings, work_dir=sub, resume=resume,
                    callback=report, video=work[start:stop],
                )  # fmt: skip
                yield from decode_frames(models, store, where, keyframes[k], k - start)

        return render


# ---------------------------------------------------------------------------------------------------------------------
class _on_device:
    """With CPU offload, a model visits the GPU only for the block that uses it; otherwise a no-op."""

    def __init__(self, module, device: torch.device, offload: bool):
        self.module, self.device, self.active = module, device, offload and device.type != "cpu"

    def _to(self, device) -> None:
        move(self.module, device) if isinstance(self.module, PropagationModels) else self.module.to(device)

    def __enter__(self):
        if self.active:
            self._to(self.device)

    def __exit__(self, *exc):
        if self.active:
            self._to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def move(models: PropagationModels, device, dtype: torch.dtype | None = None) -> None:
    """PropagationModels.to without the dtype keyword when there is no cast (diffusers warns whenever it is present)."""
    kwargs = {"device": device} if dtype is None else {"device": device, "dtype": dtype}
    for module in (models.propdpm, models.vae, models.image_encoder):
        module.to(**kwargs)


def _changed(current: torch.dtype, wanted: torch.dtype) -> torch.dtype | None:
    """`wanted` if a cast is needed, else None (diffusers warns on every dtype cast, needed or not)."""
    return None if current == wanted else wanted


def _default_ids() -> dict[str, str | None]:
    return {"base_model": DEFAULT_IDS["sd15"], "controlnet": DEFAULT_IDS["controlnet_depth"], "depth_model": DEFAULT_IDS["depth"],
            "sam_model": DEFAULT_IDS["sam"], "propagation_model": None}  # fmt: skip


def _check_video(video: np.ndarray) -> np.ndarray:
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8 or len(video) == 0:
        raise UsageError(f"video must be a path or uint8 frames (T, H, W, 3), got {video.dtype} {video.shape}")
    return video


def _digest(array: np.ndarray | None) -> str | None:
    return None if array is None else hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _cached_keyframe(work_dir: Path | None, stamp: dict, resume: bool) -> np.ndarray | None:
    if work_dir is None or not resume or not (work_dir / "keyframe.json").is_file() or not (work_dir / "keyframe.png").is_file():
        return None
    saved, stamp = json.loads((work_dir / "keyframe.json").read_text()), json.loads(json.dumps(stamp, default=str))
    if saved != stamp:
        changed = sorted(key for key in set(saved) | set(stamp) if saved.get(key) != stamp.get(key))
        raise UsageError(f"the work folder {work_dir} belongs to a run with other settings ({', '.join(changed)}); run without --resume to start over")
    logger.info("resuming: reusing the edited keyframe in %s", work_dir)
    return load_image(work_dir / "keyframe.png")


def _store_keyframe(work_dir: Path | None, stamp: dict, keyframe: np.ndarray) -> None:
    if work_dir is None:
        return
    save_image(work_dir / "keyframe.png", keyframe)  # PNG is lossless: the resumed run reads back the same bytes
    atomic_write_json(work_dir / "keyframe.json", stamp)


def _load_keyframe(image):
    return load_image(image) if isinstance(image, (str, os.PathLike)) else image


def _resolve_keyframes(images: Mapping, num_frames: int) -> dict[int, np.ndarray]:
    """Several keyframes sorted by frame index (negative ones count from the end); out of range or repeated is an error."""
    if not images:
        raise UsageError("several keyframes were asked for but none was given; pass {frame index: image}")
    resolved: dict[int, int] = {}
    for i in images:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise UsageError(f"keyframe indices must be integers, got {i!r}")
        if not -num_frames <= i < num_frames:
            raise UsageError(f"keyframe index {i} is outside the clip (0..{num_frames - 1}); pick frames inside it")
        if int(i) % num_frames in resolved:
            raise UsageError(f"keyframes {resolved[int(i) % num_frames]} and {i} are the same frame; give each frame once")
        resolved[int(i) % num_frames] = int(i)
    return {t: images[resolved[t]] for t in sorted(resolved)}
