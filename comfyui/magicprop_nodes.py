"""The MagicProp nodes. One node is one class here with the `@node("Display Name")` decorator; `__init__` hands
`NODES` to ComfyUI. A node follows ComfyUI's classic (V1) interface: `INPUT_TYPES`, `RETURN_TYPES`, `FUNCTION`,
`CATEGORY`, and runs its body inside `host.user_errors()` so a magicprop error reaches the panel as one line.

The nodes call the library exactly where the CLI does (`MagicPropPipeline.__call__` for `magicprop propagate`,
through `jobs.run_job`; `keyframes.plan_keyframes` for `magicprop keyframes`), with the same arguments, so they follow
whatever the CLI does and give its results on the same inputs; only the conversion of ComfyUI's tensors (`tensors`) and
its hooks (`host`) are the pack's own.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from magicprop.jobs import EditJob
from magicprop.propagation import PROPAGATORS, choices, resolve
from magicprop.propagation.flow.temporal import TemporalBlend

from . import host
from .tensors import (
    check_batch, check_keyframe_shape, check_masks, collect_image, frame_uint8, from_image, in_clip, parse_index_list, parse_indices, to_clip,
    to_depth, to_frames, to_masks,
)  # fmt: skip

logger = logging.getLogger(__name__)

CATEGORY = "MagicProp"
MODEL = "MAGICPROP_MODEL"  # a MagicPropPipeline holding a propagation model (our own type: only our nodes take it)
DEFAULT_PROPAGATOR = "flow"  # weight-free; what `magicprop propagate` runs when no model is given
MAX_SEED = 0xFFFFFFFFFFFFFFFF  # as ComfyUI's KSampler; torch.Generator takes any 64-bit seed
# Widget values that mean "as `magicprop propagate` without the flag": the setting is left out of the call, so the
# pipeline's default applies, which is the CLI's, also when that default changes (e.g. full resolution for flow)
AS_CLI = {"max_pixels": 0, "feather": -1}

NODES: dict[str, type] = {}  # node id (the class name, prefixed MagicProp) -> class
DISPLAY_NAMES: dict[str, str] = {}


def node(display_name: str) -> Callable[[type], type]:
    """Register a node class under its class name. The prefix keeps it apart from core nodes: ComfyUI silently
    drops a custom node whose id equals a core node's."""

    def register(cls: type) -> type:
        if not cls.__name__.startswith("MagicProp"):
            raise ValueError(f"node class {cls.__name__} must start with MagicProp")
        NODES[cls.__name__], DISPLAY_NAMES[cls.__name__] = cls, display_name
        return cls

    return register


# Pipelines for runs without a connected model, one per propagator choice and device, loaded once per server (the
# embedded tiny model for `propdpm`/`hybrid`, nothing for the weight-free propagators), as the CLI's PipelineCache.
_PIPELINES: dict[tuple[str, str | None], object] = {}


def _pipeline(propagator: str, model):
    from magicprop.pipeline import MagicPropPipeline

    if model is not None:
        return model
    key = (propagator, host.device())
    if key not in _PIPELINES:
        _PIPELINES[key] = MagicPropPipeline.from_pretrained(propagator=propagator, device=key[1], load_editor=False)
    return _PIPELINES[key]


@node("MagicProp Propagate")
class MagicPropPropagate:
    DESCRIPTION = ("Carry edited keyframes through a clip along its motion (stage II of MagicProp): the same frames as "
                   "`magicprop propagate` on the same inputs. Edit the keyframe with your own checkpoint first.")  # fmt: skip
    CATEGORY = CATEGORY
    FUNCTION = "propagate"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The edited clip: one frame per source frame, at the source's size; every keyframe exact.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        cli = EditJob("", "")  # the CLI's defaults
        described = "; ".join(f"{name}: {p.summary}" for name, p in PROPAGATORS.items())
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The source clip as one IMAGE batch (e.g. Get Video Components' images)."}),
                "keyframes": ("IMAGE", {"tooltip": "The edited keyframe, or several as one batch (Batch Images), in the order of keyframe_indices. "
                                                   "Another size of the same shape is resized; another shape is refused."}),  # fmt: skip
                "keyframe_indices": ("STRING", {"default": "0", "tooltip": "The source frame each keyframe image replaces, comma-separated "
                                                "(0, 40, -1; negative counts from the end). auto (one keyframe): as magicprop propagate without --keyframe-index."}),  # fmt: skip
                "propagator": (choices(), {"default": DEFAULT_PROPAGATOR, "tooltip": f"auto: propdpm when a model is connected, else flow; {described}"}),
                # no "control after generate" widget: a re-run with the same inputs gives the same frames (and ComfyUI's cache)
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": False,
                                 "tooltip": "Seeds PropDPM's sampling (the weight-free propagators need none)."}),  # fmt: skip
            },
            "optional": {
                "masks": ("MASK", {"tooltip": "One mask per frame: the output keeps the source outside them, with a feathered edge."}),
                "propagation_model": (MODEL, {"tooltip": "From MagicProp Load Propagation Model; propdpm and hybrid without one use the embedded tiny model."}),
                "depth": ("IMAGE", {"tooltip": "The clip's depth, one grey frame per frame, white = near (propdpm, hybrid); without it Depth Anything estimates it."}),
                "propagation_steps": ("INT", {"default": cli.propagation_steps, "min": 1, "max": 1000, "tooltip": "PropDPM sampling steps per frame."}),
                "propagation_guidance_scale": ("FLOAT", {"default": cli.propagation_guidance_scale, "min": 0.0, "max": 30.0, "step": 0.1,
                                                         "tooltip": "Guidance on the reference; 1 = none (one forward per step)."}),  # fmt: skip
                "max_pixels": ("INT", {"default": AS_CLI["max_pixels"], "min": 0, "max": 2**31 - 1,
                                       "tooltip": "Working-size budget in pixels; 0: as magicprop propagate without --max-pixels."}),  # fmt: skip
                "feather": ("INT", {"default": AS_CLI["feather"], "min": -1, "max": 4096,
                                    "tooltip": "Soft edge of the masks in pixels; -1: as magicprop propagate without --feather (1% of the longer side)."}),  # fmt: skip
                "temporal_blend": ("FLOAT", {"default": TemporalBlend.strength, "min": 0.0, "max": 0.99, "step": 0.05,
                                             "tooltip": "flow, clips up to 0.35 Mpx: how much of its neighbouring output frames (the previous, then the next) each frame keeps along the motion where the edit re-draws detail. "
                                                        "Higher is steadier (0.9 flickers less than EbSynth) and slower to follow a detail that changes."}),  # fmt: skip
            },
        }

    def propagate(self, images: torch.Tensor, keyframes: torch.Tensor, keyframe_indices: str, propagator: str, seed: int,
                  masks: torch.Tensor | None = None, propagation_model=None, depth: torch.Tensor | None = None,
                  propagation_steps: int | None = None, propagation_guidance_scale: float | None = None,
                  max_pixels: int | None = None, feather: int | None = None,
                  temporal_blend: float | None = None) -> tuple[torch.Tensor]:  # fmt: skip
        with host.user_errors():
            # 1. Check inputs (each bad one is one line in ComfyUI's error panel)
            frames = to_clip(images, "images")  # read a frame at a time: no copy of ComfyUI's batch
            keys = to_frames(keyframes, "keyframes")
            indices = parse_indices(keyframe_indices, len(keys))
            check_keyframe_shape(keys, frames)
            mask = None
            if masks is not None:
                mask = to_masks(masks)
                check_masks(mask, frames)
            depth_map = None if depth is None else to_depth(depth)
            chosen = resolve(propagator, model_given=propagation_model is not None)

            # 2. What `magicprop propagate` passes: one keyframe with its index ("auto" when none), or {index: image};
            # settings left at "as the CLI" are not passed, so the pipeline's defaults (the CLI's) apply
            if indices is None or len(indices) == 1:
                keyframe_image, keyframe_index = keys[0], "auto" if indices is None else indices[0]
            else:
                keyframe_image, keyframe_index = dict(zip(indices, keys)), "auto"
            settings = {"propagation_steps": propagation_steps, "propagation_guidance_scale": propagation_guidance_scale,
                        "max_pixels": max_pixels, "feather": feather, "temporal_blend": temporal_blend}  # fmt: skip
            options = {k: v for k, v in settings.items() if v is not None and v != AS_CLI.get(k)}

            # 3. Propagate; ComfyUI's progress bar follows, and its Cancel stops the run at the next frame. The frames
            # come one at a time (output_type="iterator") and go straight into the IMAGE batch ComfyUI keeps
            out = _pipeline(chosen.name, propagation_model)(
                frames, keyframe_image=keyframe_image, keyframe_index=keyframe_index, mask=mask,
                generator=torch.Generator().manual_seed(seed), depth=depth_map, propagator=chosen,
                callback=host.progress("MagicProp Propagate"), output_type="iterator", **options,
            )  # fmt: skip
            return (collect_image(out.frames, (*frames.shape[:3], 3)),)


@node("MagicProp Load Propagation Model")
class MagicPropLoadPropagationModel:
    DESCRIPTION = ("A PropDPM propagation model for the propdpm and hybrid propagators: tiny (embedded in magicprop, "
                   "trained on 64x64 synthetic clips: a demo, not for real footage), a folder exported by `magicprop "
                   "train` (or its name under ComfyUI/models/magicprop/), or a hub id. Weights load from safetensors only.")  # fmt: skip
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("propagation_model",)
    OUTPUT_TOOLTIPS = ("Connect to MagicProp Propagate's propagation_model.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"model": ("STRING", {"default": host.TINY, "tooltip": "tiny, a model folder (absolute, or a name under "
                                                  "ComfyUI/models/magicprop/), or a hub id owner/name."})}}  # fmt: skip

    def load(self, model: str) -> tuple[object]:
        from magicprop.pipeline import MagicPropPipeline

        with host.user_errors():
            # as `magicprop propagate --model PATH` builds its pipeline; Stable Diffusion is never loaded
            pipe = MagicPropPipeline.from_pretrained(propagation_model=host.resolve_model(model), propagator="propdpm",
                                                     device=host.device(), load_editor=False)  # fmt: skip
            return (pipe,)


@node("MagicProp Suggest Keyframes")
class MagicPropSuggestKeyframes:
    DESCRIPTION = ("How much of every frame your keyframes explain, and the frames to edit next (as `magicprop keyframes`): "
                   "the given frames plus the suggestions, in the order to edit them, as indices for MagicProp Propagate "
                   "and as the source frames to edit with your checkpoint.")  # fmt: skip
    CATEGORY = CATEGORY
    FUNCTION = "suggest"
    RETURN_TYPES = ("STRING", "IMAGE", "IMAGE")
    RETURN_NAMES = ("keyframe_indices", "keyframe_frames", "coverage")
    OUTPUT_TOOLTIPS = (
        "The given frames then the suggested ones, comma-separated, in the order to edit them: connect it to MagicProp "
        "Propagate's keyframe_indices, with the edited frames batched in the same order.",
        "The source frames at keyframe_indices, in the same order: edit them (one batch), then connect the edits to "
        "MagicProp Propagate's keyframes.",
        "The coverage curve: the fraction of each frame explained, with the given keyframes and with the suggestions.",
    )  # fmt: skip

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        from magicprop.keyframes import CoverageSettings

        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The source clip as one IMAGE batch (e.g. Get Video Components' images)."}),
                "keyframe_indices": ("STRING", {"default": "", "tooltip": "Frames you already edited or chose, comma-separated (0, 40; negative "
                                                "counts from the end); empty: none, suggest them all."}),  # fmt: skip
                "max_keyframes": ("INT", {"default": 5, "min": 1, "max": 1000, "tooltip": "Suggest at most this many keyframes (magicprop keyframes --max)."}),
                "target": ("FLOAT", {"default": 0.95, "min": 0.01, "max": 1.0, "step": 0.01,
                                     "tooltip": "Fraction of every frame the keyframes should explain; suggestions stop when every frame reaches it (--target)."}),  # fmt: skip
            },
            "optional": {
                "coverage_size": ("INT", {"default": CoverageSettings.long_side, "min": 16, "max": 8192,
                                          "tooltip": "Long side in pixels at which coverage is measured (--size)."}),  # fmt: skip
                "candidates_every": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "Candidate keyframes every N frames; 0: as magicprop "
                                             "keyframes without --every (every frame up to 32 frames, else about 32 candidates)."}),  # fmt: skip
            },
        }

    def suggest(self, images: torch.Tensor, keyframe_indices: str, max_keyframes: int, target: float,
                coverage_size: int | None = None, candidates_every: int | None = None) -> tuple[str, torch.Tensor, torch.Tensor]:  # fmt: skip
        from magicprop.keyframes import CoverageSettings, format_plan, plan_keyframes, plot_plan
        from magicprop.keyframes.coverage import shrink_frame
        from magicprop.video import load_image

        with host.user_errors():
            # 1. Check inputs; the clip shrunk one frame at a time, as `magicprop keyframes` reads a file
            check_batch(images, "images", channels=3)
            given = in_clip(parse_index_list(keyframe_indices), len(images))
            settings = CoverageSettings(long_side=coverage_size or CoverageSettings.long_side, every=candidates_every or None)
            small = np.stack([shrink_frame(frame_uint8(images, t), settings.long_side) for t in range(len(images))])

            # 2. Measure and suggest (the CLI's call); the given frames first, in the user's order, then the suggestions
            plan, table = plan_keyframes(small, given, max_keyframes=max_keyframes, target=target, settings=settings)
            order = given + list(plan.suggested)
            logger.info("MagicProp Suggest Keyframes:\n%s", format_plan(plan, table))

            # 3. The outputs: indices, the frames to edit (the source's own values), the curve as a picture
            with tempfile.TemporaryDirectory(prefix="magicprop-coverage-") as tmp:
                path = plot_plan(plan, Path(tmp) / "coverage.png", frames=small)
                picture = load_image(path)
            return ", ".join(map(str, order)), images[order], from_image(picture)  # indexing copies: a batch of its own
