"""Several keyframes edited by stage I so that they agree: which frames, in which order, and the edit carried to each.

Stage I painting each keyframe on its own gives keyframes that disagree (another dog, another coat), and `flow` would
crossfade between them. So the first keyframe is edited from its frame, and every later one starts from the edits made
so far carried to its frame by `flow` (`carry_edit`), which stage I then refines image-to-image at a strength that
keeps what was carried (`editing.edit_keyframe_series`). The order is the order of the list, or for "auto" the order
of the suggestions (`suggest_keyframes`: the first is the frame that explains most of the clip alone).
"""

from __future__ import annotations

import itertools
import re
from typing import Mapping, Sequence

import numpy as np

from ..errors import UsageError
from .suggestions import plan_keyframes

AUTO = "auto"
AUTO_MAX_KEYFRAMES = 4  # "auto" suggests at most this many: each costs a stage I run
_FRAME_LIST = re.compile(r"^\s*-?\d+\s*(,\s*-?\d+\s*)*$")


def is_frame_list(value: object) -> bool:
    """Whether a --keyframes value names frames for stage I ("auto", "0,40,-1") rather than a folder of edited ones."""
    return isinstance(value, str) and (value.strip() == AUTO or bool(_FRAME_LIST.match(value)))


def parse_frame_list(value: str | Sequence[int] | None) -> list[int] | str | None:
    """"auto" -> "auto"; "0, 40,-1" or [0, 40, -1] -> [0, 40, -1]; None -> None."""
    if value is None or (isinstance(value, str) and value.strip() == AUTO):
        return None if value is None else AUTO
    if isinstance(value, str):
        if not _FRAME_LIST.match(value):
            raise UsageError(f"--keyframes for stage I takes 'auto' or frame indices like 0,40,79; got {value!r}")
        return [int(v) for v in value.split(",")]
    return [int(v) for v in value]


def series_order(keyframes: str | Sequence[int], source, *, progress: bool = True) -> list[int]:
    """The keyframes stage I edits, in the order it edits them (non-negative indices). "auto": the suggestions from
    scratch (`plan_keyframes`, at most `AUTO_MAX_KEYFRAMES`, target 95%); a list: its frames, in its order."""
    num_frames = len(source)
    if keyframes == AUTO:
        if num_frames < 2:
            return [0]
        plan, _ = plan_keyframes(source, max_keyframes=AUTO_MAX_KEYFRAMES, progress=progress)
        return list(plan.suggested)
    order: list[int] = []
    for k in keyframes:
        if not -num_frames <= k < num_frames:
            raise UsageError(f"keyframe index {k} is outside the clip (0..{num_frames - 1}); pick frames inside it")
        if k % num_frames in order:
            raise UsageError(f"frame {k % num_frames} is named twice in --keyframes; give each frame once")
        order.append(k % num_frames)
    if not order:
        raise UsageError("--keyframes names no frame; give 'auto' or frame indices like 0,40,79")
    return order


def carry_edit(source, edited: Mapping[int, np.ndarray], t: int) -> np.ndarray:
    """(H, W, 3) uint8: the edited keyframes propagated to frame t by `flow`, from its neighbouring keyframes only (the
    frames between them are all `flow` reads). With no keyframe after t the clip is read up to t, not to its end: the
    blend's second pass (`flow.temporal.settle`) then starts at t, which the final propagation would reach from the
    clip's end, but t becomes a keyframe there and this frame is only stage I's starting picture."""
    from ..propagation import PROPAGATORS, PropagationRequest

    if t in edited:
        return edited[t]
    before = [k for k in edited if k < t]
    after = [k for k in edited if k > t]
    lo, hi = (max(before) if before else t), (min(after) if after else t)
    keys = {k - lo: edited[k] for k in (lo, hi) if k in edited}
    request = PropagationRequest(source=source[lo : hi + 1], keyframes=keys, progress=False)
    return next(itertools.islice(PROPAGATORS["flow"](request), t - lo, None))


def check_series(keyframes, *, prompt: str | None, keyframe_image, keyframes_folder=None, strength: float = 0.5) -> None:
    """One line when several keyframes for stage I are asked for without what they need."""
    if keyframes is None:
        return
    if not 0 < strength <= 1:
        raise UsageError(f"--keyframe-strength must be in (0, 1] (how freely stage I repaints a later keyframe), got {strength}")
    if keyframe_image is not None or keyframes_folder:
        raise UsageError("--keyframes auto|I,J,K asks stage I to edit those frames from --prompt; it takes no keyframe "
                         "image (give --keyframes DIR for keyframes you edited yourself)")  # fmt: skip
    if not (prompt and str(prompt).strip()):
        raise UsageError("--keyframes auto|I,J,K picks frames for stage I to edit and needs --prompt; for keyframes you "
                         "edited yourself give --keyframes DIR (magicprop propagate)")  # fmt: skip
