"""What one browser tab holds between clicks, and the bundled example clips.

A `Session` lives in a `gr.State`: gradio builds one per tab (the state's value is a factory) and deletes it, with its
temporary folder, when the tab has been closed for a while. Examples are synthetic clips rendered at start-up; their
ground-truth depth is kept so that PropDPM can run on them even when no depth estimator can be loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import MagicPropError
from ..video import Frames

logger = logging.getLogger(__name__)


@dataclass
class Clip:
    name: str  # file name shown in the page and written to settings.json
    frames: Frames | np.ndarray  # (T, H, W, 3) uint8, read lazily from the upload (`video.Frames`) or given
    fps: float
    depth: np.ndarray | None = None  # (T, H, W) ground truth for bundled examples; None = estimate it (or not needed)


class Cancelled(MagicPropError):
    """Raised inside a running job (from the pipeline's callback) when its tab pressed Cancel."""

    def __init__(self, message: str = "cancelled"):
        super().__init__(message)


class Session:
    """One tab: its temp folder, the loaded clip, the current edited keyframe, and the flag that cancels its job."""

    def __init__(self, root: str | Path):
        self.dir = Path(tempfile.mkdtemp(prefix="session-", dir=root))
        self.cancel = threading.Event()
        self.clip: Clip | None = None
        self.keyframe: np.ndarray | None = None  # (H, W, 3) uint8, already fitted to the clip's frame size
        self.keyframe_index = 0  # the frame the keyframe was made for (generated from, or uploaded while showing)
        self.keyframe_source: str | None = None  # "generated" or "uploaded"
        self.edit: dict = {}  # the stage I settings that made a generated keyframe, for settings.json
        self.kept: dict[int, np.ndarray] = {}  # earlier keyframes kept for a several-keyframe run, by frame index
        self.coverage = None  # the clip's keyframe coverage (keyframes.CoverageTable), measured once per clip
        self.runs = 0  # numbers each job's output folder, so a new run never overwrites a file the page still shows
        self.busy: str | None = None  # the running job of this tab ("propagation"), for Cancel's answer

    def __deepcopy__(self, memo: dict) -> "Session":
        # gradio deep-copies state values when it creates them; a session holds a threading.Event, and the Cancel
        # handler must see the very object the running job polls, so a copy is the same session.
        return self

    def new_run_dir(self, kind: str) -> Path:
        self.runs += 1
        folder = self.dir / f"{self.runs:03d}-{kind}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @contextlib.contextmanager
    def job(self, what: str) -> Iterator[None]:
        """Mark this tab busy for the block; a Cancel pressed before the job started does not cancel it."""
        self.cancel.clear()
        self.busy = what
        try:
            yield
        finally:
            self.busy = None

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def close_session(session: "Session | None") -> None:
    """gr.State's delete_callback: runs when gradio forgets a closed tab."""
    if session is not None:
        session.close()


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Example:
    path: Path  # the source clip, as the page offers it
    depth: np.ndarray  # (T, H, W) float32 ground truth


class Examples:
    """Synthetic clips rendered once at start-up.

    Gradio copies an example into its own cache before a callback sees it, so we recognise an example by the digest of
    its bytes, not by its path (this also recognises the same file uploaded by hand).
    """

    def __init__(self, examples: list[Example]):
        self.items = examples
        self._depth = {file_digest(e.path): e.depth for e in examples}
        self._sizes = {e.path.stat().st_size for e in examples}  # most uploads are ruled out without reading them

    @property
    def paths(self) -> list[str]:
        return [str(e.path) for e in self.items]

    def depth_for(self, path: str | Path) -> np.ndarray | None:
        if Path(path).stat().st_size not in self._sizes:
            return None
        return self._depth.get(file_digest(path))

    @classmethod
    def render(
        cls, folder: str | Path, *, count: int = 2, frames: int = 24, size: tuple[int, int] = (64, 64), fps: float = 8.0
    ) -> "Examples":
        """Render `count` clips (alternating a global and a local edit) into `folder` as mp4 files."""
        from ..demo import HELD_OUT_SEED
        from ..synthetic import render_clip
        from ..video import write_video

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        items = []
        for i in range(count):
            edit = ("global", "local")[i % 2]
            seed = HELD_OUT_SEED + i  # seeds the embedded tiny model never trained on, as in `magicprop demo`
            clip = render_clip(seed, frames=frames, size=size, edit=edit)
            path = folder / f"synthetic-{edit}-{seed}.mp4"
            write_video(path, clip.source, fps)
            items.append(Example(path, np.asarray(clip.depth, dtype=np.float32)))
        return cls(items)
