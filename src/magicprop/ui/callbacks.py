"""What the web UI does, as plain functions: each takes the values the page holds and returns the values to show.

`app.py` only lays out components and wires them to these functions, so every behaviour here is tested without a browser
(tests/test_ui_callbacks.py). Errors a person can act on reach the page as a `gr.Error` carrying our one-line
`MagicPropError` text; anything unforeseen is logged with its traceback on the server and shown as one line, never as a
traceback in the page.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import gradio as gr
import numpy as np

from .. import __version__
from ..errors import MagicPropError, UsageError, first_line
from ..propagation import get_propagator
from ..fileio import atomic_write_json
from .models import ActiveModels
from .session import Cancelled, Clip, Examples, Session

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# Every key settings.json holds; the test checks a real run writes all of them.
SETTINGS_KEYS = (
    "magicprop_version", "clip", "frames", "fps", "width", "height", "keyframe_index", "keyframe_indices", "keyframe_source",
    "prompt", "negative_prompt", "mask_pixels", "seed", "num_inference_steps", "guidance_scale", "propagator",
    "propagation_steps", "propagation_seed", "temporal_blend", "models", "seconds",
)  # fmt: skip
MAX_SEED = 2**31 - 1
SUGGESTED = 3  # the most keyframes the page suggests


def readable_errors(fn: F) -> F:
    """Turn our errors into gr.Error (one line, shown in the page); log anything else and show one line for it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except MagicPropError as exc:
            raise gr.Error(first_line(exc), print_exception=False) from None
        except Exception as exc:  # a bug, not the user's doing: the traceback goes to the server log only
            logger.exception("unexpected error in %s", fn.__name__)
            first = first_line(exc, 200) if str(exc).strip() else ""
            message = f"unexpected error ({type(exc).__name__}: {first}); the server log has the details"
            raise gr.Error(message, print_exception=False) from None

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------------------------
# 1. Clip
# --------------------------------------------------------------------------------------------------------------------
@readable_errors
def load_clip(path: str | None, session: Session, examples: Examples | None = None) -> tuple[str, dict, Any, Any]:
    """Read an uploaded (or example) clip. Returns (info markdown, slider update, cleared keyframe, editor value)."""
    from ..video import Frames

    session.clip, session.keyframe, session.keyframe_source, session.kept, session.coverage = None, None, None, {}, None
    if not path:
        return "Upload a clip or pick an example.", gr.update(value=0, maximum=1, interactive=False), None, None
    with _shown_as_name(path):
        frames = Frames.open(path)  # read lazily: a long 4K upload is not held in memory
        fps = frames.fps
    if len(frames) == 0:
        raise UsageError(f"{Path(path).name} has no video frames; upload another clip")
    if len(frames) < 2:
        raise UsageError(f"{Path(path).name} has a single frame; propagation needs a clip of at least 2 frames")
    depth = examples.depth_for(path) if examples is not None else None
    if depth is not None and depth.shape != frames.shape[:3]:
        depth = None  # same bytes but decoded differently: do not trust a depth of another shape
    session.clip = Clip(Path(path).name, frames, float(fps), depth)
    num, height, width = frames.shape[:3]
    info = f"**{session.clip.name}**: {num} frames, {width}×{height} px, {fps:g} fps ({num / fps:.1f} s)"
    if depth is not None:
        info += "; bundled example (ground-truth depth included)"
    slider = gr.update(value=0, minimum=0, maximum=num - 1, step=1, interactive=True)
    return info, slider, None, editor_value(frames[0])


def editor_value(frame: np.ndarray) -> dict:
    """The ImageEditor value that shows `frame` with nothing painted on it."""
    return {"background": frame, "layers": [], "composite": frame}


@readable_errors
def show_frame(index: float | int | None, session: Session) -> dict | None:
    """The slider moved: the editor value showing frame `index` (nothing before a clip is loaded)."""
    if session.clip is None:
        return None
    frames = session.clip.frames
    return editor_value(frames[int(np.clip(int(index or 0), 0, len(frames) - 1))])


# --------------------------------------------------------------------------------------------------------------------
# 2. Keyframe: generate (stage I) or upload
# --------------------------------------------------------------------------------------------------------------------
def mask_from_editor(value: dict | None, shape: tuple[int, int]) -> np.ndarray | None:
    """(H, W) bool: every pixel painted on any layer of the ImageEditor; None when nothing was painted."""
    from ..video import resize_frames

    if not value or not value.get("layers"):
        return None
    mask = np.zeros(shape, dtype=bool)
    for layer in value["layers"]:
        if layer is None:
            continue
        layer = np.asarray(layer)
        if layer.ndim != 3 or layer.shape[-1] != 4:
            continue  # a layer without alpha carries no strokes
        alpha = layer[..., 3:]  # (h, w, 1): strokes are whatever is not transparent
        if alpha.shape[:2] != shape:  # the editor may have been resized or cropped by the person
            alpha = resize_frames(alpha, shape, interpolation="nearest")
        mask |= alpha[..., 0] > 0
    return mask if mask.any() else None


def new_seed() -> int:
    return random.randint(0, MAX_SEED)


@readable_errors
def generate_keyframe(
    editor: dict | None,
    prompt: str,
    negative_prompt: str,
    seed: float | int,
    steps: float | int,
    guidance_scale: float,
    index: float | int,
    session: Session,
    models: ActiveModels,
    progress: gr.Progress = gr.Progress(track_tqdm=True),
) -> tuple[np.ndarray, str]:
    """Stage I: edit frame `index` from the prompt (inpainting only the painted mask, if any). Returns (keyframe, note)."""
    clip = _require_clip(session)
    if not (prompt or "").strip():
        raise UsageError("type a prompt describing the edit first (or upload an edited keyframe instead)")
    k = int(np.clip(int(index or 0), 0, len(clip.frames) - 1))
    mask = mask_from_editor(editor, clip.frames.shape[1:3])
    settings = {
        "prompt": prompt.strip(), "negative_prompt": (negative_prompt or "").strip(), "seed": int(seed),
        "num_inference_steps": int(steps), "guidance_scale": float(guidance_scale),
        "mask_pixels": int(mask.sum()) if mask is not None else 0,
    }  # fmt: skip
    with session.job("keyframe edit"):
        keyframe = models.edit_keyframe(clip, k, mask=mask, on_step=_progress_hook(session, progress, "editing keyframe"), **settings)
    session.keyframe, session.keyframe_index, session.keyframe_source, session.edit = keyframe, k, "generated", settings
    where = "inside the painted mask" if mask is not None else "whole frame"
    return keyframe, f"Edited keyframe for frame {k} (seed {int(seed)}, {where}). Not right? Try another seed."


@readable_errors
def upload_keyframe(path: str | None, index: float | int, session: Session) -> tuple[Any, str]:
    """A keyframe edited elsewhere, resized to the clip's frame size (the pipeline's own rule: `video.fit_image`), for
    the frame it was edited from when its structure matches one confidently (`keyframes.find_keyframe`), else for the
    slider's frame (`keyframe_slider` then moves the slider there)."""
    from ..keyframes import find_keyframe
    from ..video import fit_image, load_image

    clip = _require_clip(session)
    session.keyframe, session.keyframe_source = None, None  # a failed upload must not leave an older keyframe active
    if not path:
        return None, ""
    with _shown_as_name(path):
        image = load_image(path)
    height, width = clip.frames.shape[1:3]
    fitted = fit_image(image, (height, width))
    k = int(np.clip(int(index or 0), 0, len(clip.frames) - 1))
    match = find_keyframe(clip.frames, image)
    found = match.confident and match.index != k
    k = match.index if match.confident else k
    session.keyframe, session.keyframe_index, session.keyframe_source, session.edit = fitted, k, "uploaded", {}
    note = f"Uploaded keyframe for frame {k}"
    if found:
        note += f" (the frame it was edited from, found by its structure: confidence {match.confidence:.2f})"
    elif not match.confident:
        note += " (the slider's frame: no frame matched its structure confidently)"
    if image.shape[:2] != (height, width):
        stretched = abs(image.shape[1] / image.shape[0] - width / height) > 0.01 * width / height
        note += f" (resized from {image.shape[1]}×{image.shape[0]} to {width}×{height} px{', stretched' if stretched else ''})"
    return fitted, note + "."


@readable_errors
def keep_keyframe(session: Session) -> str:
    """Keep the current keyframe and make another: propagation then uses every kept keyframe and the current one, each
    kept exactly and crossfaded between (the pipeline's several-keyframe mode). Keeping a frame again replaces it."""
    _require_clip(session)
    if session.keyframe is None:
        raise UsageError("no edited keyframe to keep yet: generate one from a prompt or upload one first")
    session.kept[session.keyframe_index] = session.keyframe
    return (f"Kept keyframes: {', '.join(map(str, sorted(session.kept)))}. Move the slider to another frame and generate or "
            "upload its edit; Propagate uses them all.")


def keyframe_slider(session: Session) -> dict:
    """The slider moved to the current keyframe's frame (after an upload found it elsewhere)."""
    return gr.update() if session.clip is None else gr.update(value=session.keyframe_index)


@readable_errors
def suggest_keyframes(session: Session) -> tuple[str | None, str]:
    """The clip's keyframe coverage and the frames to edit next (`keyframes.plan_keyframes`, from the kept keyframes):
    (the coverage plot's path, a note). Measured once per clip; the plan is redone when keyframes are kept."""
    from ..keyframes import measure_coverage, plot_plan, suggest_keyframes as suggest

    if session.clip is None:
        return None, ""
    given = sorted(session.kept)
    if session.coverage is None or any(k not in session.coverage.candidates for k in given):
        session.coverage = measure_coverage(session.clip.frames, extra=given, progress=False)
    plan = suggest(session.coverage, given, max_keyframes=SUGGESTED, target=0.95)
    path = plot_plan(plan, session.new_run_dir("coverage") / "coverage.png", title="keyframe coverage (orange: suggestions, in order)")
    if not plan.suggested:
        return str(path), "The kept keyframes explain at least 95% of every frame: no other keyframe is needed."
    order = ", ".join(map(str, plan.suggested))
    after = "every frame is then at least 95% explained" if plan.reached else f"{len(plan.below_target)} frames stay below 95%"
    start = "With the kept keyframes, edit" if given else "Suggested keyframes: edit"
    return str(path), f"{start} frame{'s' if len(plan.suggested) > 1 else ''} **{order}**, in this order ({after})."


def clear_kept(session: Session) -> str:
    session.kept = {}
    return "Kept keyframes cleared: Propagate uses the current keyframe only."


def _keyframes(session: Session) -> dict[int, np.ndarray]:
    """What Propagate uses: the kept keyframes and the current one (which wins on the same frame)."""
    keys = dict(session.kept)
    if session.keyframe is not None:
        keys[session.keyframe_index] = session.keyframe
    return dict(sorted(keys.items()))


# --------------------------------------------------------------------------------------------------------------------
# 3. Propagate, cancel, download
# --------------------------------------------------------------------------------------------------------------------
@readable_errors
def propagate(
    propagator: str,
    steps: float | int,
    seed: float | int,
    temporal_blend: float,
    session: Session,
    models: ActiveModels,
    progress: gr.Progress = gr.Progress(track_tqdm=True),
) -> tuple[str, list[str], str]:
    """Stage II. Returns (side-by-side video path, [edited video, keyframe png, settings json], note). temporal_blend:
    `flow`'s steadiness (`PropagationSettings.temporal_blend`)."""
    from ..video import VideoWriter, save_image, side_by_side

    clip = _require_clip(session)
    keys = _keyframes(session)
    if not keys:
        raise UsageError("no edited keyframe yet: generate one from a prompt or upload one first")
    start = time.perf_counter()
    out = session.new_run_dir(propagator)
    stem = Path(clip.name).stem
    edited = out / f"{stem}-edited.mp4"
    comparison = out / f"{stem}-comparison.mp4"
    labels, count = ["source", f"edited ({propagator})"], 0
    with session.job("propagation"), VideoWriter(edited, clip.fps) as edited_writer, VideoWriter(comparison, clip.fps) as side:
        frames = models.propagate(
            clip, keys, propagator=propagator, steps=int(steps), seed=int(seed), temporal_blend=float(temporal_blend),
            on_step=_progress_hook(session, progress, f"propagating ({propagator})"),
        )  # fmt: skip
        for t, frame in enumerate(frames):  # written as they come: the clip is never held
            edited_writer.write(frame)
            side.write(side_by_side([clip.frames[t][None], frame[None]], labels)[0])
            count += 1
    seconds = time.perf_counter() - start

    pngs = [str(save_image(out / f"{stem}-keyframe-{k:04d}.png", image)) for k, image in keys.items()]
    settings = settings_dict(session, models, propagator=propagator, steps=int(steps), seed=int(seed), seconds=seconds,
                             temporal_blend=float(temporal_blend))  # fmt: skip
    atomic_write_json(out / f"{stem}-settings.json", settings)
    which = f"frame {next(iter(keys))}" if len(keys) == 1 else f"keyframes {', '.join(map(str, keys))}"
    note = f"Propagated {which} to {count} frames with `{propagator}` in {seconds:.1f} s."
    return str(comparison), [str(edited), *pngs, str(out / f"{stem}-settings.json")], note


def cancel(session: Session) -> str:
    """Ask the running job of this tab to stop at its next step (the pipeline callback checks the flag)."""
    if session.busy is None:
        return "Nothing is running."  # a queued job is dropped by gradio itself (`cancels=`)
    session.cancel.set()
    return f"Stopping the {session.busy}…"


def settings_dict(session: Session, models: ActiveModels, *, propagator: str, steps: int, seed: int, seconds: float,
                  temporal_blend: float | None = None) -> dict:  # fmt: skip
    """Everything needed to redo a result: written as settings.json beside it."""
    clip = _require_clip(session)
    num, height, width = clip.frames.shape[:3]
    edit = session.edit
    learned = get_propagator(propagator).needs_model  # steps and seed only mean something to a sampler
    return {
        "magicprop_version": __version__,
        "clip": clip.name, "frames": num, "fps": clip.fps, "width": width, "height": height,
        "keyframe_index": session.keyframe_index, "keyframe_source": session.keyframe_source,
        "keyframe_indices": list(_keyframes(session)),
        "prompt": edit.get("prompt"), "negative_prompt": edit.get("negative_prompt"), "mask_pixels": edit.get("mask_pixels"),
        "seed": edit.get("seed"), "num_inference_steps": edit.get("num_inference_steps"),
        "guidance_scale": edit.get("guidance_scale"),
        "propagator": propagator, "propagation_steps": steps if learned else None,
        "propagation_seed": seed if learned else None,
        "temporal_blend": temporal_blend if propagator == "flow" else None,
        "models": models.describe(),
        "seconds": round(seconds, 2),
    }  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------
def _require_clip(session: Session) -> Clip:
    if session.clip is None:
        raise UsageError("upload a clip (or pick an example) first")
    return session.clip


@contextlib.contextmanager
def _shown_as_name(path: str | Path) -> Iterator[None]:
    """Errors about an upload name the file the person chose, not gradio's cache path for it."""
    try:
        yield
    except MagicPropError as exc:
        raise type(exc)(str(exc).replace(str(path), Path(path).name)) from None


def _progress_hook(session: Session, progress: gr.Progress | None, desc: str) -> Callable[[int, int], None]:
    """The pipeline's per-step callback: move the page's progress bar, and stop the job when Cancel was pressed."""

    def on_step(done: int, total: int) -> None:
        if session.cancel.is_set():
            raise Cancelled()
        if progress is not None:
            progress((done, total), desc=desc, unit="frames" if "propagat" in desc else "steps")

    return on_step


