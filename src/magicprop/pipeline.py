"""MagicPropPipeline: stage I (edit one keyframe) then stage II (propagate it along the clip), diffusers style.

    pipe = MagicPropPipeline.from_pretrained()  # SD 1.5 + depth ControlNet (loaded when a prompt needs them), tiny PropDPM
    out = pipe("clip.mp4", prompt="a bear walking through stars", generator=torch.Generator().manual_seed(0))
    write_video("edited.mp4", out.frames, out.fps)
    # a long or large clip: frames are made while they are written, never all held
    out = pipe("clip.mp4", keyframe_image="edit.png", output_type="iterator")
    write_video("edited.mp4", out.frames, out.fps)

The clip is read lazily (`video.Frames`). Each stage works at its own size (`inputs.plan_sizes`): the diffusion models
at the working size, the largest size within `max_pixels` (None: 512x512) with the clip's aspect ratio whose sides are
multiples of 8 (SD) and of twice the propagation VAE's factor (the appearance adaptor halves the latent grid); the
weight-free propagators (`full_resolution`) at the clip's own size, unless `max_pixels` is given. Frames come back at
the source's size. Models a call needs are loaded before the clip is decoded, so a missing one costs nothing: a run
from a user's keyframe image never loads Stable Diffusion.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Literal, Mapping, Sequence

import numpy as np

from .devices import cast_if_needed, move, on_device, resolve_device, resolve_dtype
from .editing import (
    KEYFRAME_STRENGTH, ControlNetDepthEditor, PointSegmenter, UserKeyframe, choose_keyframe, edit_keyframe_series,
)  # fmt: skip
from .errors import UsageError
from .fileio import require_file
from .hub import DEFAULT_IDS, PIPELINE_IDS
from .inputs import (  # noqa: F401 - check_call_inputs is also the pipeline's: the CLI runs it before loading
    DEFAULT_MAX_PIXELS, Sizes, check_call_inputs, check_max_pixels, fit_keyframe, keyframe_at, keyframe_to_source_size, load_keyframe, open_clip, plan_sizes, resize_mask,
    split_masks, to_source_size,
)  # fmt: skip
from .keyframes import find_keyframe
from .keyframes.series import carry_edit, check_series, series_order
from .kept_keyframe import keep_keyframe, keyframe_stamp, kept_keyframe
from .pipeline_output import MagicPropOutput, OutputType, check_output_type, collect_frames
from .propagation import AUTO, PropagationRequest, PropagationSettings, Propagator, get_propagator, resolve, resolve_keyframes
from .torch_state import draw_seed, frames_without_grad, seeded_generator, without_grad
from .video import Frames, resize_frames, working_size

if TYPE_CHECKING:  # the models load torch, diffusers and transformers (320 MB): a weight-free run never imports them
    import torch

    from .models.bundle import PropagationModels

logger = logging.getLogger(__name__)

ImageInput = str | os.PathLike | np.ndarray


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
        device: str | torch.device | None = "cpu",  # None: the best available (`devices.resolve_device`)
        dtype: str | torch.dtype | None = "float32",  # None: float16 on CUDA, else float32 (`devices.resolve_dtype`)
        load_editor: bool = True,
        cpu_offload: bool = False,
        allow_pickle: bool = False,
    ):
        self.propagation_models = propagation_models
        # the default of every call (a call may name another); "auto": PropDPM when models were given, else flow
        self.propagator = self._propagator(resolve(propagator, model_given=propagation_models is not None))
        self.editor, self.depth_estimator, self.segmenter = editor, depth_estimator, segmenter
        self.model_ids = {**PIPELINE_IDS, **(model_ids or {})}
        self._device, self._dtype = device, dtype  # resolved when a model first needs them: see `device`
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
        chosen = resolve(propagator, model_given=propagation_model is not None, announce=True)  # the run's one line
        # now (torch) for a model or a device or dtype named for checking; else when a model first asks (`device`)
        eager = chosen.needs_model or str(device or "cpu") != "cpu" or torch_dtype is not None
        dev = resolve_device(device) if eager else device
        dtype = resolve_dtype(torch_dtype, dev) if eager else None
        models = None
        if chosen.needs_model:
            from .models.bundle import PropagationModels

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

    @property
    def device(self) -> torch.device:  # resolved (torch imported) when a model first asks: a weight-free run never does
        self._device = resolve_device(self._device)
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        self._dtype = resolve_dtype(self._dtype, self.device)
        return self._dtype

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

    def working_size(self, height: int, width: int, max_pixels: int | None = None) -> tuple[int, int]:
        """(h, w) of the diffusion models within `max_pixels` (None: 512x512), sides multiples of 8 (SD) and of 2x the
        propagation VAE's factor."""
        multiple = 8
        if self.propagation_models is not None:
            from .models.encoders import vae_scale_factor

            multiple = math.lcm(8, 2 * vae_scale_factor(self.propagation_models.vae))
        check_max_pixels(max_pixels, multiple * multiple)
        return working_size(height, width, max_pixels=max_pixels or DEFAULT_MAX_PIXELS, multiple_of=multiple)

    def sizes(self, height: int, width: int, max_pixels: int | None = None, propagator: str | Propagator | None = None) -> Sizes:
        """The sizes a call on (height, width) frames works at (`inputs.plan_sizes`): the models' working size, and
        the propagator's (the frames' own size for a `full_resolution` one unless `max_pixels` caps it)."""
        chosen = self._propagator(propagator)
        return plan_sizes((height, width), self.working_size, max_pixels=max_pixels, full_resolution=chosen.full_resolution)

    # -----------------------------------------------------------------------------------------------------------------
    @without_grad
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
        max_pixels: int | None = None,
    ) -> np.ndarray:
        """Stage I alone: `image` ((H, W, 3) uint8, one frame) edited from `prompt` by SD 1.5 + depth ControlNet, at the
        working size, returned at the image's size (`inputs.keyframe_to_source_size`). mask: (H, W) bool, repaint only
        inside it. depth: (h, w) in [0, 1] (1 = near); None = estimate it from the frame."""
        from .motion import resize_depth

        check_call_inputs(prompt, None, mask, None, strength)
        h, w = self.working_size(*image.shape[:2], max_pixels)
        self.prepare(prompt=prompt, depth=depth)
        frame = resize_frames(image, (h, w))
        if depth is None:
            key_depth = self._depth(None, Frames.from_array(frame[None]), 0, None, whole_clip=False, for_edit=True)[0]
        else:
            key_depth = resize_depth(np.asarray(depth, np.float32)[None], (h, w))[0]
        edited = self.editor.edit_keyframe(
            frame, key_depth, prompt=prompt, negative_prompt=negative_prompt, mask=resize_mask(mask, (h, w)),
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, strength=strength, generator=generator,
        )  # fmt: skip
        return keyframe_at(edited, image, mask, None)

    @without_grad
    def propagate(
        self,
        video: str | os.PathLike | np.ndarray | Frames,
        keyframes: Mapping[int, ImageInput],
        *,
        depth: np.ndarray | None = None,
        settings: PropagationSettings | None = None,
        propagator: str | Propagator | None = None,
        max_pixels: int | None = None,
        work_dir: str | os.PathLike | None = None,
        resume: bool = False,
        callback: Callable[[int, int], None] | None = None,
        output_type: OutputType = "np",
    ) -> np.ndarray | list | Iterator[np.ndarray]:
        """Stage II alone: `video` ((T, H, W, 3) uint8, a path or `Frames`) with its keyframes ({frame index: edited
        image}, one or several) propagated by `propagator` (a registry name; default the pipeline's) at its size (see
        `sizes`); frames come back at the video's size, in the form `output_type` names (as in `__call__`).
        depth: (T, h, w) in [0, 1]; None = estimate it when the propagator needs it."""
        check_output_type(output_type)
        clip = open_clip(video)
        chosen = self._propagator(propagator)
        sizes = self.sizes(*clip.shape[1:3], max_pixels, chosen)
        keys = resolve_keyframes(dict(keyframes), len(clip))
        self.prepare(depth=depth, propagator=chosen)
        source = clip.resized(sizes.propagation)
        fitted = {i: fit_keyframe(load_keyframe(img), source[i], what=f"keyframe {i}") for i, img in keys.items()}
        work = clip.resized(sizes.working)
        depth_map = self._depth(depth, work, next(iter(fitted)), _path(work_dir), whole_clip=chosen.needs_depth, for_edit=False)
        edited = self._stage_two(source, fitted, depth_map, settings or PropagationSettings(), chosen, sizes,
                                 _path(work_dir), resume, callback)  # fmt: skip
        return collect_frames(to_source_size(edited, clip, sizes), clip.shape, output_type)

    def _stage_two(self, source: Frames, keyframes: dict[int, np.ndarray], depth, settings: PropagationSettings,
                   propagator: Propagator, sizes: Sizes, work_dir: Path | None, resume: bool, callback) -> Iterator[np.ndarray]:  # fmt: skip
        """The edited frames at the propagation size, in order, each made when it is taken. The request is checked now."""
        request = PropagationRequest(
            source=source, keyframes=keyframes, depth=depth, models=self.propagation_models, settings=settings,
            work_dir=None if work_dir is None else work_dir / "propagation", resume=resume, callback=callback,
            working_size=sizes.working,
        )  # fmt: skip
        models = self.propagation_models if propagator.needs_model else None
        return frames_without_grad(propagator(request), models, self.device if models is not None else None, self.cpu_offload)

    # -----------------------------------------------------------------------------------------------------------------
    @without_grad
    def __call__(
        self,
        video: str | os.PathLike | np.ndarray | Frames,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        mask: np.ndarray | Sequence[np.ndarray] | None = None,
        keyframe_index: int | str = "auto",
        keyframe_image: ImageInput | Mapping[int, ImageInput] | None = None,
        num_inference_steps: int = 30,
        guidance_scale: float = 7.5,
        strength: float | None = None,
        propagation_steps: int = 25,
        propagation_guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        depth: str | os.PathLike | np.ndarray | None = None,
        max_pixels: int | None = None,
        output_type: OutputType = "np",
        work_dir: str | os.PathLike | None = None,
        resume: bool = False,
        callback: Callable[[int, int], None] | None = None,
        *,
        mask_points: Sequence[tuple[float, float]] | None = None,
        feather: int | None = None,
        propagator: str | Propagator | None = None,
        keyframe_indices: Sequence[int] | Literal["auto"] | None = None,
        keyframe_strength: float = KEYFRAME_STRENGTH,
        temporal_blend: float | None = None,
    ) -> MagicPropOutput:
        """Edit `video` ((T, H, W, 3) uint8, a path or `Frames`) and return it edited, at its own size: `edit_keyframe`
        (stage I, unless keyframes are given) then `propagate` (stage II).

        prompt: the edit, for stage I (SD 1.5 + depth ControlNet); or `keyframe_image`, a keyframe edited elsewhere.
        mask: (H, W) keyframe mask: SD repaints only inside it. (T, H, W) per-frame masks (an array, or any sequence of
            T masks read one at a time, e.g. `inputs.MaskFiles`): also composites every output frame over the source
            outside its mask, with a `feather`-pixel soft edge (default 1% of the longer side).
        mask_points: (x, y) clicks on the keyframe (source pixels): the keyframe mask from Segment Anything.
        keyframe_index: int (negative from the end) or "auto": with a `keyframe_image`, the frame it was edited from,
            found by its structure (`keyframes.find_keyframe`; frame 0 when nothing matches confidently, said in one
            line); else `editing.choose_keyframe` (the largest mask, or the middle frame).
        keyframe_image: a keyframe edited elsewhere (stage I is skipped); or several, {frame index: image}, each kept
            exactly and propagated to its neighbours; `keyframe_index` is then unused and `output.keyframe` is the
            first of them. One at the size the propagator works at is used as it is; see `inputs.fit_keyframe`.
        strength: None = paint the keyframe from noise; in (0, 1] = start from the frame (img2img / inpaint).
        generator: seeds stage I; its initial seed also seeds stage II. None draws a seed (`torch_state.draw_seed`).
        depth: (T, h, w) in [0, 1] (1 = near) or a .npz from `magicprop depth`; None = estimate it.
        max_pixels: None = the diffusion models work within 512x512 and the weight-free propagators (`flow`, `chain`,
            `lut`, `copy`) at the clip's own size; a number is the models' budget and caps the weight-free ones too.
        output_type: "np" (one array), "pil" (a list of images) or "iterator" (frames made as they are taken: the
            clip is never held, for long or large clips; the work runs while the caller iterates).
        work_dir: where finished work is kept so `resume=True` continues a killed run; the caller removes it.
        callback: progress, called as callback(frames_done, total) with the keyframes counted as done, as the
            propagator finishes frames; it ends at (total, total). Raising from it stops the run (finished work stays
            in work_dir for `resume`); the web UI cancels this way.
        propagator: a registry name (`magicprop.propagation.PROPAGATORS`) or a Propagator; default the pipeline's.
        keyframe_indices: several keyframes for stage I, frame indices in the order to edit them, or "auto" (the
            suggested ones, `keyframes.suggest_keyframes`): the first is edited from `prompt`, each later one starts
            from the edits so far carried to it by `flow` and is refined image-to-image at `keyframe_strength`.
        temporal_blend: `flow`'s steadiness, in [0, 1): how much of its neighbouring output frames (the previous,
            then the next) each frame keeps where the edit re-draws detail (None: 0.65; 0.9 flickers less than
            EbSynth, see the README).
        """
        # 1. Check inputs
        check_series(keyframe_indices, prompt=prompt, keyframe_image=keyframe_image, strength=keyframe_strength)
        check_call_inputs(prompt, keyframe_image, mask, mask_points, strength)
        check_output_type(output_type)
        if propagation_steps < 1 or num_inference_steps < 1:
            raise UsageError("the numbers of sampling steps must be at least 1")
        check_max_pixels(max_pixels)
        settings = PropagationSettings(num_inference_steps=propagation_steps, guidance_scale=propagation_guidance_scale,
                                       temporal_blend=temporal_blend)  # fmt: skip
        for what, path in (("video", video), ("depth file", depth)):
            if isinstance(path, (str, os.PathLike)):
                require_file(path, what)
        chosen = self._propagator(propagator)
        seed = generator.initial_seed() if generator is not None else draw_seed(bool(prompt) or chosen.needs_model)
        settings.seed = seed
        # one keyframe and several share one path: {index: image} (an index of None is resolved from the masks below)
        given = dict(keyframe_image) if isinstance(keyframe_image, Mapping) else None
        if given is not None and (mask_points or (mask is not None and np.ndim(mask) == 2)):
            raise UsageError("a keyframe mask or mask points select a region of one keyframe; with several keyframes give per-frame masks (--masks)")

        # 2. Load what this call needs, before any decoding
        self.prepare(prompt=prompt, depth=depth, mask_points=mask_points, propagator=chosen)
        user_images = {i: load_keyframe(img) for i, img in given.items()} if given is not None else None
        user_image = None if given is not None or keyframe_image is None else load_keyframe(keyframe_image)

        # 3. Open the clip (read lazily); sizes; masks
        clip = open_clip(video)
        num_frames = len(clip)
        sizes = self.sizes(*clip.shape[1:3], max_pixels, chosen)
        key_mask, frame_masks = split_masks(mask, num_frames, sizes.source)
        if user_images is not None:
            user_images = resolve_keyframes(user_images, num_frames)
        areas = None if frame_masks is None else frame_masks.areas()[:, None]
        k = next(iter(user_images)) if user_images is not None else choose_keyframe(num_frames, areas, keyframe_index)
        match = None
        if user_image is not None and keyframe_index == "auto":  # the frame the image was edited from (issue 24)
            match = find_keyframe(clip, user_image, progress=True)
            logger.info(match.describe())
            k = match.index
        order = series_order(keyframe_indices, clip) if keyframe_indices is not None else [k]
        k = order[0]
        if frame_masks is not None:
            key_mask = frame_masks[k]
        if mask_points:
            key_mask = self.segmenter(clip[k], mask_points)
        work, source = clip.resized(sizes.working), clip.resized(sizes.propagation)
        work_dir = _path(work_dir)

        # 4. Depth: the whole clip when the propagator reads it, only the keyframe when it is just the ControlNet's
        depth_map = self._depth(depth, work, k, work_dir, whole_clip=chosen.needs_depth, for_edit=bool(prompt))

        # 5. Stage I: the edited keyframe(s) at the propagation size (kept in the work folder: a resumed run does not
        # repaint). A prompt paints at the working size, brought to the propagation size after.
        if user_images is not None:
            keyframes = {i: fit_keyframe(img, source[i], what=f"keyframe {i}") for i, img in user_images.items()}
        else:
            edit_size = sizes.working if prompt else sizes.propagation
            edit_args = dict(prompt=prompt, negative_prompt=negative_prompt, num_inference_steps=num_inference_steps,
                             guidance_scale=guidance_scale, strength=strength, mask=resize_mask(key_mask, edit_size),
                             feather=None if feather is None else round(feather * edit_size[1] / sizes.source[1]))  # fmt: skip
            edit_frames = work if prompt else source
            image = None if prompt else fit_keyframe(user_image, source[k])
            edit = functools.partial(self._edit_in_series, edit_frames, depth_map, frame_masks, order, image, edit_args,
                                     keyframe_strength, seed, generator, work_dir, resume)  # fmt: skip
            painted = edit_keyframe_series(order, edit, lambda done, i: carry_edit(edit_frames, done, i))
            masks = {i: key_mask if frame_masks is None else frame_masks[i] for i in painted}
            keyframes = {i: keyframe_at(e, source[i], masks[i], feather) for i, e in painted.items()}

        # 6. Stage II: propagate the keyframes to every other frame
        edited = self._stage_two(source, keyframes, depth_map, settings, chosen, sizes, work_dir, resume, callback)

        # 7. Back to the source's size; with per-frame masks, the source outside them
        frames = collect_frames(to_source_size(edited, clip, sizes, frame_masks, feather), clip.shape, output_type)
        key_out = keyframe_to_source_size(keyframes[k], clip[k])  # as it is at the source's size
        return MagicPropOutput(frames=frames, keyframe=key_out, keyframe_index=k, depth=depth_map if chosen.needs_depth else None,
                               fps=clip.fps, sizes=sizes, keyframe_indices=tuple(keyframes if len(keyframes) > 1 else [k]),
                               keyframe_match=match)  # fmt: skip

    def _edit_in_series(self, frames, depth_map, frame_masks, order: list[int], user_image, edit_args: dict, strength: float,
                        seed: int, generator, work_dir, resume, k: int, start: np.ndarray | None) -> np.ndarray:  # fmt: skip
        """Keyframe k of `order` (`editing.edit_keyframe_series`): the first from its frame, as a single keyframe is
        made; a later one image-to-image from `start`, the edit carried to it, at `strength`, with its own mask, depth
        and seed, and kept in its own folder of the work folder."""
        if start is None:
            return self._stage_one(frames[k], depth_map, k, user_image, edit_args, seed, generator, work_dir, resume)
        args = {**edit_args, "strength": strength}
        if frame_masks is not None:
            args["mask"] = resize_mask(frame_masks[k], frames.shape[1:3])
        depth = depth_map[k : k + 1] if len(depth_map) == len(frames) else self._depth(None, frames, k, work_dir, whole_clip=False, for_edit=True)
        later = None if work_dir is None else work_dir / "keyframes" / f"{k:05d}"
        return self._stage_one(start, depth, k, None, args, seed + order.index(k), None, later, resume)

    def _stage_one(self, frame, depth_map, k: int, user_image, edit_args: dict, seed: int, generator, work_dir, resume) -> np.ndarray:
        """The keyframe edited by SD (a prompt) or fitted from the user's image; cached in the work folder."""
        models = [self.model_ids["base_model"], self.model_ids["controlnet"]]
        stamp = keyframe_stamp(edit_args, seed, k, frame, models, user_image)
        keyframe = kept_keyframe(work_dir, stamp, resume)
        if keyframe is None:
            editor = self.editor if edit_args["prompt"] else UserKeyframe(user_image)
            key_depth = None if depth_map is None else depth_map[k if len(depth_map) > 1 else 0]
            generator = generator if generator is not None or not edit_args["prompt"] else seeded_generator(seed)
            keyframe = editor.edit_keyframe(frame, key_depth, generator=generator, **edit_args)
            keep_keyframe(work_dir, stamp, keyframe)
        return keyframe

    # -----------------------------------------------------------------------------------------------------------------
    def _depth(self, depth, work: Frames, k: int, work_dir: Path | None, *, whole_clip: bool, for_edit: bool) -> np.ndarray | None:
        """The depth a call needs at the working size: given, or estimated for the whole clip (a propagator reads it) or
        for the keyframe alone (the ControlNet's condition); None when nothing reads it. Frames are read one batch at
        a time; the depth itself, (T, h, w) float32 at the working size, is held."""
        from .motion import estimate_clip_depth, given_depth

        num_frames, h, w = work.shape[:3]
        if depth is not None:
            return given_depth(depth, num_frames, (h, w))
        if not whole_clip and not for_edit:
            return None
        clip = work if whole_clip else work[k : k + 1]
        cache = work_dir / "depth" if work_dir is not None else None
        estimator = self.depth_estimator
        with on_device(estimator.model, self.device, self.cpu_offload):
            return estimate_clip_depth(clip, estimator, cache_dir=cache, size=(h, w))


def _path(work_dir: str | os.PathLike | None) -> Path | None:
    return Path(work_dir) if work_dir is not None else None
