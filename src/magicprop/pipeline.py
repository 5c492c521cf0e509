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
from typing import Callable, Iterator, Literal, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from .devices import cast_if_needed, move, on_device, resolve_device, resolve_dtype
from .editing import (
    ControlNetDepthEditor, PointSegmenter, UserKeyframe, choose_keyframe, composite, default_feather, feather_mask, split_masks,
)  # fmt: skip
from .errors import UsageError, first_line
from .fileio import atomic_write_json, require_file
from .models.bundle import PropagationModels
from .models.configs import DEFAULT_IDS
from .models.encoders import vae_scale_factor
from .propagation import AUTO, PropagationRequest, PropagationSettings, Propagator, get_propagator, resolve, resolve_keyframes
from .propagation.store import check_fingerprint
from .video import load_image, read_video, resize_frames, save_image, working_size

logger = logging.getLogger(__name__)

ImageInput = str | os.PathLike | np.ndarray


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
    """Stage I editor + stage II propagator. Build it with `from_pretrained`; call it on a clip, or call its two stages
    yourself: `edit_keyframe` (stage I) and `propagate` (stage II)."""

    def __init__(
        self,
        propagation_models: PropagationModels | None = None,
        *,
        propagator: str | Propagator = AUTO,
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
        self.propagation_models = propagation_models
        # the default of every call (a call may name another); "auto": PropDPM when models were given, else flow
        self.propagator = self._propagator(resolve(propagator, model_given=propagation_models is not None))
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
        propagator: str | Propagator = AUTO,
        device: str | torch.device | None = None,
        torch_dtype: str | torch.dtype | None = None,
        enable_model_cpu_offload: bool = False,
        load_editor: bool = True,
        allow_pickle: bool = False,
    ) -> "MagicPropPipeline":
        """Load the propagation model now when the propagator needs one (None = the tiny model embedded in the package);
        SD, the ControlNet, the depth model and SAM are only named here and loaded by the first call that needs them.

        propagator: a name in `magicprop.propagation.PROPAGATORS`, or "auto": PropDPM when `propagation_model` is
            given, else the weight-free `flow` (the embedded tiny model is for the demo and synthetic clips).

        enable_model_cpu_offload: for GPUs with little memory: SD's parts visit the GPU one at a time (diffusers'
            hooks) and PropDPM is moved there only while it propagates.
        load_editor: False never loads stage I (a prompt is then refused): for propagation-only services.
        """
        chosen = resolve(propagator, model_given=propagation_model is not None)
        dev = resolve_device(device)
        dtype = resolve_dtype(torch_dtype, dev)
        models = None
        if chosen.needs_model:
            models = PropagationModels.from_pretrained(propagation_model, allow_pickle=allow_pickle)
            move(models, "cpu" if enable_model_cpu_offload else dev, cast_if_needed(models.dtype, dtype))
        ids = {"base_model": str(base_model), "controlnet": str(controlnet), "depth_model": str(depth_model), "sam_model": str(sam_model),
               "propagation_model": models.source if models is not None else None}  # fmt: skip
        return cls(models, propagator=chosen, model_ids=ids, device=dev, dtype=dtype, load_editor=load_editor,
                   cpu_offload=enable_model_cpu_offload, allow_pickle=allow_pickle)  # fmt: skip

    def _propagator(self, propagator: str | Propagator | None) -> Propagator:
        """The propagator a call uses (its name resolved in the registry), refused when it needs absent models."""
        if propagator is None:
            return self.propagator
        chosen = get_propagator(propagator) if isinstance(propagator, str) else propagator
        if chosen.needs_model and self.propagation_models is None:
            raise UsageError(f"the {chosen.name} propagator needs propagation models; load them with MagicPropPipeline.from_pretrained")
        return chosen

    # -----------------------------------------------------------------------------------------------------------------
    def prepare(self, *, prompt: str | None = None, depth=None, mask_points: Sequence | None = None,
                propagator: str | Propagator | None = None) -> None:  # fmt: skip
        """Load every model a call with these inputs will need, so that a missing one fails before any work."""
        if prompt and self.editor is None:
            if not self.load_editor_allowed:
                raise UsageError("this pipeline was built with load_editor=False; pass an edited keyframe image instead of a prompt")
            self.editor = ControlNetDepthEditor.from_pretrained(self.model_ids["base_model"], self.model_ids["controlnet"], allow_pickle=self.allow_pickle)
            if self.cpu_offload and self.device.type != "cpu":
                self.editor.to(dtype=cast_if_needed(self.editor.dtype, self.dtype)).enable_model_cpu_offload(self.device)
            else:
                self.editor.to(self.device, cast_if_needed(self.editor.dtype, self.dtype))
        needs_depth = depth is None and (self._propagator(propagator).needs_depth or bool(prompt))
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
            multiple = math.lcm(8, 2 * vae_scale_factor(self.propagation_models.vae))
        return working_size(height, width, max_pixels=max_pixels, multiple_of=multiple)

    # -----------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def edit_keyframe(
        self,
        image: np.ndarray,
        prompt: str,
        negative_prompt: str | None = None,
        mask: np.ndarray | None = None,
        num_inference_steps: int = 30,
        guidance_scale: float = 7.5,
        strength: float | None = None,
        generator: torch.Generator | None = None,
        depth: np.ndarray | None = None,
        max_pixels: int = 512 * 512,
    ) -> np.ndarray:
        """Stage I alone: `image` ((H, W, 3) uint8, one frame) edited from `prompt` by SD 1.5 + depth ControlNet, at the
        working size, returned at the image's size. mask: (H, W) bool, repaint only inside it. depth: (h, w) in
        [0, 1] (1 = near); None = estimate it from the frame."""
        from .motion import resize_depth

        check_call_inputs(prompt, None, mask, None, strength)
        self.prepare(prompt=prompt, depth=depth)
        height, width = image.shape[:2]
        h, w = self.working_size(height, width, max_pixels)
        frame = resize_frames(image, (h, w))
        if depth is None:
            key_depth = self._depth(None, frame[None], 0, None, whole_clip=False, for_edit=True)[0]
        else:
            key_depth = resize_depth(np.asarray(depth, np.float32)[None], (h, w))[0]
        edited = self.editor.edit_keyframe(
            frame, key_depth, prompt=prompt, negative_prompt=negative_prompt, mask=_resize_mask(mask, (h, w)),
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, strength=strength, generator=generator,
        )  # fmt: skip
        return resize_frames(edited, (height, width))

    @torch.no_grad()
    def propagate(
        self,
        video: np.ndarray,
        keyframes: Mapping[int, ImageInput],
        *,
        depth: np.ndarray | None = None,
        settings: PropagationSettings | None = None,
        propagator: str | Propagator | None = None,
        max_pixels: int = 512 * 512,
        work_dir: str | os.PathLike | None = None,
        resume: bool = False,
        callback: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Stage II alone: `video` ((T, H, W, 3) uint8) with its keyframes ({frame index: edited image}, one or several)
        propagated by `propagator` (a registry name; default the pipeline's), at the working size; frames come back
        at the video's size. depth: (T, h, w) in [0, 1]; None = estimate it when the propagator needs it."""
        frames = _check_video(video)
        num_frames, height, width = frames.shape[:3]
        keys = {i: _load_keyframe(img) for i, img in resolve_keyframes(dict(keyframes), num_frames).items()}
        chosen = self._propagator(propagator)
        self.prepare(depth=depth, propagator=chosen)
        h, w = self.working_size(height, width, max_pixels)
        work = resize_frames(frames, (h, w))
        fitted = {i: UserKeyframe(img).edit_keyframe(work[i]) for i, img in keys.items()}
        depth_map = self._depth(depth, work, next(iter(fitted)), _path(work_dir), whole_clip=chosen.needs_depth, for_edit=False)
        out = np.empty_like(frames)
        for t, frame in enumerate(self._propagate_at_working_size(work, fitted, depth_map, settings or PropagationSettings(),
                                                                  chosen, _path(work_dir), resume, callback)):  # fmt: skip
            out[t] = resize_frames(frame, (height, width))
        return out

    def _propagate_at_working_size(self, work, keyframes: dict[int, np.ndarray], depth, settings: PropagationSettings,
                                   propagator: Propagator, work_dir: Path | None, resume: bool, callback) -> Iterator[np.ndarray]:  # fmt: skip
        """Yield the edited frames at the working size, in order."""
        request = PropagationRequest(
            source=work, keyframes=keyframes, depth=depth, models=self.propagation_models, settings=settings,
            work_dir=None if work_dir is None else work_dir / "propagation", resume=resume, callback=callback,
        )  # fmt: skip
        with on_device(self.propagation_models if propagator.needs_model else None, self.device, self.cpu_offload):
            yield from propagator(request)

    # -----------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        video: str | os.PathLike | np.ndarray,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        mask: np.ndarray | None = None,
        keyframe_index: int | str = "auto",
        keyframe_image: ImageInput | Mapping[int, ImageInput] | None = None,
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
        propagator: str | Propagator | None = None,
    ) -> MagicPropOutput:
        """Edit `video` ((T, H, W, 3) uint8 or a path) and return it edited, at its own size: `edit_keyframe` (stage I,
        unless keyframes are given) then `propagate` (stage II), both at the working size.

        prompt: the edit, for stage I (SD 1.5 + depth ControlNet); or `keyframe_image`, a keyframe edited elsewhere.
        mask: (H, W) keyframe mask: SD repaints only inside it. (T, H, W) per-frame masks: also composites every output
            frame over the source outside its mask, with a `feather`-pixel soft edge (default 1% of the longer side).
        mask_points: (x, y) clicks on the keyframe (source pixels): the keyframe mask from Segment Anything.
        keyframe_index: int (negative from the end) or "auto" (see `editing.choose_keyframe`).
        keyframe_image: a keyframe edited elsewhere (stage I is skipped); or several, {frame index: image}, each kept
            exactly and propagated to its neighbours; `keyframe_index` is then unused and `output.keyframe` is the
            first of them.
        strength: None = paint the keyframe from noise; in (0, 1] = start from the frame (img2img / inpaint).
        generator: seeds stage I; its initial seed also seeds stage II. None draws a seed from torch's global RNG.
        depth: (T, h, w) in [0, 1] (1 = near) or a .npz from `magicprop depth`; None = estimate it.
        work_dir: where finished work is kept so `resume=True` continues a killed run; the caller removes it.
        callback: progress, called as callback(frames_done, total) with the keyframes counted as done, as the
            propagator finishes frames; it ends at (total, total). Raising from it stops the run (finished work stays
            in work_dir for `resume`); the web UI cancels this way.
        propagator: a registry name (`magicprop.propagation.PROPAGATORS`) or a Propagator; default the pipeline's.
        """
        # 1. Check inputs
        check_call_inputs(prompt, keyframe_image, mask, mask_points, strength)
        if output_type not in ("np", "pil"):
            raise UsageError(f"output_type must be 'np' or 'pil', got {output_type!r}")
        if propagation_steps < 1 or num_inference_steps < 1:
            raise UsageError("the numbers of sampling steps must be at least 1")
        for what, path in (("video", video), ("depth file", depth)):
            if isinstance(path, (str, os.PathLike)):
                require_file(path, what)
        seed = generator.initial_seed() if generator is not None else int(torch.randint(0, 2**31 - 1, (1,)))
        chosen = self._propagator(propagator)
        # one keyframe and several share one path: {index: image} (an index of None is resolved from the masks below)
        given = dict(keyframe_image) if isinstance(keyframe_image, Mapping) else None
        if given is not None and (mask_points or (mask is not None and np.ndim(mask) == 2)):
            raise UsageError("a keyframe mask or mask points select a region of one keyframe; with several keyframes give per-frame masks (--masks)")

        # 2. Load what this call needs, before any decoding
        self.prepare(prompt=prompt, depth=depth, mask_points=mask_points, propagator=chosen)
        user_images = {i: _load_keyframe(img) for i, img in given.items()} if given is not None else None
        user_image = None if given is not None else _load_keyframe(keyframe_image)

        # 3. Read the clip; masks and working size
        frames, fps = read_video(video) if isinstance(video, (str, os.PathLike)) else (_check_video(video), None)
        num_frames, height, width = frames.shape[:3]
        key_mask, frame_masks = split_masks(mask, num_frames, (height, width))
        if user_images is not None:
            user_images = resolve_keyframes(user_images, num_frames)
        k = next(iter(user_images)) if user_images is not None else choose_keyframe(num_frames, frame_masks, keyframe_index)
        if frame_masks is not None:
            key_mask = frame_masks[k]
        if mask_points:
            key_mask = self.segmenter(frames[k], mask_points)
        h, w = self.working_size(height, width, max_pixels)
        work = resize_frames(frames, (h, w))
        work_dir = _path(work_dir)

        # 4. Depth: the whole clip when the propagator reads it, only the keyframe when it is just the ControlNet's
        depth_map = self._depth(depth, work, k, work_dir, whole_clip=chosen.needs_depth, for_edit=bool(prompt))

        # 5. Stage I: the edited keyframe(s) at the working size (kept in the work folder: a resumed run does not repaint)
        if user_images is not None:
            keyframes = {i: UserKeyframe(img).edit_keyframe(work[i]) for i, img in user_images.items()}
        else:
            edit_args = dict(prompt=prompt, negative_prompt=negative_prompt, num_inference_steps=num_inference_steps,
                             guidance_scale=guidance_scale, strength=strength, mask=_resize_mask(key_mask, (h, w)),
                             feather=None if feather is None else round(feather * w / width))  # fmt: skip
            keyframes = {k: self._stage_one(work[k], depth_map, k, user_image, edit_args, seed, generator, work_dir, resume)}

        # 6. Stage II: propagate the keyframes to every other frame, at the working size
        settings = PropagationSettings(num_inference_steps=propagation_steps, guidance_scale=propagation_guidance_scale, seed=seed)
        edited = self._propagate_at_working_size(work, keyframes, depth_map, settings, chosen, work_dir, resume, callback)

        # 7. Back to the source's size; with per-frame masks, the source outside them
        radius = default_feather(height, width) if feather is None else feather
        out = np.empty_like(frames)
        for t, frame in enumerate(edited):
            frame = resize_frames(frame, (height, width))
            out[t] = frame if frame_masks is None else composite(frame, frames[t], feather_mask(frame_masks[t], radius))
        key_out = resize_frames(keyframes[k], (height, width))
        result = out if output_type == "np" else [Image.fromarray(f) for f in out]
        return MagicPropOutput(frames=result, keyframe=key_out, keyframe_index=k, depth=depth_map if chosen.needs_depth else None, fps=fps)

    def _stage_one(self, frame, depth_map, k: int, user_image, edit_args: dict, seed: int, generator, work_dir, resume) -> np.ndarray:
        """The keyframe edited by SD (a prompt) or fitted from the user's image; cached in the work folder."""
        # the seed only where it paints the keyframe: a resumed run of your own keyframe may draw another seed
        stamp = {**edit_args, "mask": _digest(edit_args["mask"]), "seed": seed if edit_args["prompt"] else None,
                 "keyframe_index": k, "size": list(frame.shape[:2]),
                 "frame": _digest(frame), "models": [self.model_ids["base_model"], self.model_ids["controlnet"]],
                 "user_image": _digest(user_image)}  # fmt: skip
        keyframe = _cached_keyframe(work_dir, stamp, resume)
        if keyframe is None:
            editor = self.editor if edit_args["prompt"] else UserKeyframe(user_image)
            key_depth = None if depth_map is None else depth_map[k if len(depth_map) > 1 else 0]
            generator = generator if generator is not None else torch.Generator().manual_seed(seed)
            keyframe = editor.edit_keyframe(frame, key_depth, generator=generator, **edit_args)
            _store_keyframe(work_dir, stamp, keyframe)
        return keyframe

    # -----------------------------------------------------------------------------------------------------------------
    def _depth(self, depth, work: np.ndarray, k: int, work_dir: Path | None, *, whole_clip: bool, for_edit: bool) -> np.ndarray | None:
        """The depth a call needs at the working size: given, or estimated for the whole clip (a propagator reads it) or
        for the keyframe alone (the ControlNet's condition); None when nothing reads it."""
        from .motion import estimate_clip_depth, load_depth, resize_depth

        num_frames, h, w = work.shape[:3]
        if depth is not None:
            if isinstance(depth, (str, os.PathLike)):
                return load_depth(depth, size=(h, w), frames=num_frames)
            depth = np.asarray(depth, dtype=np.float32)
            if depth.ndim != 3 or len(depth) != num_frames:
                raise UsageError(f"depth must be (T, H, W) with T = {num_frames} frames, got shape {depth.shape}")
            return resize_depth(depth, (h, w))
        if not whole_clip and not for_edit:
            return None
        clip = work if whole_clip else work[k : k + 1]
        cache = work_dir / "depth" if work_dir is not None else None
        estimator = self.depth_estimator
        with on_device(estimator.model, self.device, self.cpu_offload):
            return estimate_clip_depth(clip, estimator, cache_dir=cache, size=(h, w))


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
    """The edited keyframe a killed run kept, or None (then stage I runs again). A damaged record or image is not
    trusted: it is said in one line and redone, like a damaged propagation step."""
    if work_dir is None or not resume or not (work_dir / "keyframe.json").is_file() or not (work_dir / "keyframe.png").is_file():
        return None
    try:
        saved = json.loads((work_dir / "keyframe.json").read_text())
    except (ValueError, UnicodeDecodeError):
        logger.warning("the kept keyframe of %s is damaged (keyframe.json unreadable); editing it again", work_dir)
        return None
    check_fingerprint(saved, json.loads(json.dumps(stamp, default=str)), work_dir)
    try:
        keyframe = load_image(work_dir / "keyframe.png")
    except UsageError as exc:
        logger.warning("the kept keyframe of %s is damaged (%s); editing it again", work_dir, first_line(exc, 120))
        return None
    logger.info("resuming: reusing the edited keyframe in %s", work_dir)
    return keyframe


def _store_keyframe(work_dir: Path | None, stamp: dict, keyframe: np.ndarray) -> None:
    if work_dir is None:
        return
    save_image(work_dir / "keyframe.png", keyframe)  # PNG is lossless: the resumed run reads back the same bytes
    atomic_write_json(work_dir / "keyframe.json", stamp)


def _load_keyframe(image):
    return load_image(image) if isinstance(image, (str, os.PathLike)) else image


def _resize_mask(mask: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    """A bool (H, W) mask at another size (nearest neighbour: a mask stays a mask)."""
    if mask is None:
        return None
    return resize_frames(np.asarray(mask).astype(np.uint8)[..., None], size, interpolation="nearest")[..., 0] > 0


def _path(work_dir: str | os.PathLike | None) -> Path | None:
    return Path(work_dir) if work_dir is not None else None
