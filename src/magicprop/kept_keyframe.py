"""Stage I's keyframe kept in the work folder (`keyframe.png` and its record `keyframe.json`), so that a killed run
resumed with `resume=True` does not paint it again: the record holds everything the edit depends on (prompt, seed,
mask, frame, models), and a resumed run reuses the image only when its record matches."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from .errors import UsageError, first_line
from .fileio import atomic_write_json
from .integrity import check_fingerprint
from .video import load_image, save_image

logger = logging.getLogger(__name__)


def digest(array: np.ndarray | None) -> str | None:
    """16 hex digits naming an array's bytes (None for None): what the record compares."""
    return None if array is None else hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def keyframe_stamp(edit_args: dict, seed: int, k: int, frame: np.ndarray, models: list[str],
                   user_image: np.ndarray | None) -> dict:  # fmt: skip
    """The record of one stage I edit: its arguments (the mask as a digest), the seed only where a prompt paints (a
    resumed run of the user's own keyframe may draw another seed), the frame, its index and size, the models, the
    user's image."""
    return {**edit_args, "mask": digest(edit_args["mask"]), "seed": seed if edit_args["prompt"] else None,
            "keyframe_index": k, "size": list(frame.shape[:2]), "frame": digest(frame), "models": models,
            "user_image": digest(user_image)}  # fmt: skip


def kept_keyframe(work_dir: Path | None, stamp: dict, resume: bool) -> np.ndarray | None:
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


def keep_keyframe(work_dir: Path | None, stamp: dict, keyframe: np.ndarray) -> None:
    """Keep the edited keyframe and its record (the image first: a record is only ever beside its image)."""
    if work_dir is None:
        return
    save_image(work_dir / "keyframe.png", keyframe)  # PNG is lossless: the resumed run reads back the same bytes
    atomic_write_json(work_dir / "keyframe.json", stamp)
