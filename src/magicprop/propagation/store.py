"""The step store: finished propagation work kept in a work folder, so a killed run resumes where it stopped.

A work folder holds `job.json` (the folder's format and the fingerprint of everything the run depends on: a resumed run
must match it) and `steps/00001.safetensors`, `steps/00002.safetensors`, ..., each written atomically and carrying the
size and digest of its contents (`integrity.write_piece`). A resumed run checks every piece before using it: one that is
cut short, empty, garbled or missing is reported in one line and redone, from the last good piece before it, so the
result is still the uninterrupted run's. Without a work folder the store keeps the steps in memory.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from ..errors import MagicPropError
from ..integrity import Damaged, check_fingerprint, open_work_folder, read_piece, write_piece

if TYPE_CHECKING:  # torch loads with PropDPM's steps, not on import (listing the propagators stays light)
    import torch

logger = logging.getLogger(__name__)

__all__ = ["FrameStore", "LatentStore", "check_fingerprint"]


class LatentStore:
    """Latents of finished propagation steps, in memory or in a work folder (`steps/00003.safetensors` = both chains'
    frames of step 3, written atomically so a step is either fully saved or absent). With a fusion step (the `hybrid`
    propagator) a step also holds its fused frames as uint8 pixels (`frame/<t>`), which are the output: decoding their
    latent again would blur them."""

    def __init__(self, work_dir: str | Path | None, fingerprint: dict, resume: bool):
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self._memory: dict[int, torch.Tensor] = {}
        self._frames: dict[int, torch.Tensor] = {}
        if self.work_dir is not None:
            open_work_folder(self.work_dir, fingerprint, resume, ("steps",))

    def _path(self, step: int) -> Path:
        return self.work_dir / "steps" / f"{step:05d}.safetensors"

    def completed_steps(self) -> int:
        """Number of consecutive steps 1, 2, ... saved and intact. The first damaged one, or a gap before later saved
        steps, is reported in one line; the run redoes from the last good step (later files are overwritten)."""
        if self.work_dir is None:
            return 0
        saved = sorted(int(p.stem) for p in (self.work_dir / "steps").glob("[0-9]*.safetensors") if p.stem.isdigit())
        n = 0
        while n + 1 in saved:
            try:
                read_piece(self._path(n + 1))
            except Damaged as exc:
                self._report(n + 1, str(exc), n)
                return n
            n += 1
        if any(s > n + 1 for s in saved):  # steps after a gap were saved: this one was, and is gone
            self._report(n + 1, "missing", n)
        return n

    def _report(self, step: int, why: str, good: int) -> None:
        since = f"step {good}" if good else "the keyframe"
        logger.warning("step %d of %s is damaged (%s); redoing from %s", step, self.work_dir, why, since)

    def save_step(self, step: int, latents: dict[int, torch.Tensor], frames: dict[int, np.ndarray] | None = None) -> None:
        import torch

        cpu = {t: z.detach().to("cpu", torch.float32).contiguous() for t, z in latents.items()}
        pixels = {t: torch.from_numpy(np.ascontiguousarray(f)) for t, f in (frames or {}).items()}
        if self.work_dir is None:
            self._memory.update(cpu)
            self._frames.update(pixels)
            return
        arrays = {**{str(t): z.numpy() for t, z in cpu.items()}, **{f"frame/{t}": f.numpy() for t, f in pixels.items()}}
        write_piece(self._path(step), arrays)

    def load_step(self, step: int) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """One read of a finished step: its latents and its fused frames (empty without fusion), by frame index."""
        import torch

        if self.work_dir is None:
            return self._memory, self._frames  # every step's, which is a superset of this one's
        try:
            tensors = {name: torch.from_numpy(a) for name, a in read_piece(self._path(step)).items()}
        except Damaged as exc:  # checked when the run began: something changed the folder while it ran
            raise MagicPropError(f"step {step} of {self.work_dir} was damaged while the run read it ({exc}); "
                                 "run again with --resume to redo it") from None  # fmt: skip
        latents = {int(name): z for name, z in tensors.items() if not name.startswith("frame/")}
        frames = {int(name[len("frame/") :]): f for name, f in tensors.items() if name.startswith("frame/")}
        return latents, frames


class FrameStore:
    """Finished frames of a propagator that works in pixels (the weight-free ones), one file per frame, plus, per chain,
    the state that chain needs to continue (for example the anchored coordinate map of its last frame).

    `frames/00012.safetensors` holds frame 12 (uint8 (H, W, 3), key "frame"); `state-<chain>.safetensors` holds the
    named arrays of a chain's state and "index", the frame it belongs to. Both are written atomically, a frame before
    the state that follows it, so a killed run resumes from the last state and redoes at most the frames after it. Each
    piece is checked when read: `has(t)` is False and `load_state` None for a damaged one (said in one line), so the
    caller redoes it. Without a work folder the frames go to a temporary folder removed by `close()`: memory stays flat
    in clip length.
    """

    def __init__(self, work_dir: str | Path | None, fingerprint: dict, resume: bool):
        self._temporary = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="magicprop-frames-")) if work_dir is None else Path(work_dir)
        self._checked: dict[int, np.ndarray] = {}  # the frame `has` just read, handed to the `load` that follows it
        self._reported: set[str] = set()
        if self._temporary:
            (self.work_dir / "frames").mkdir()
        else:
            open_work_folder(self.work_dir, fingerprint, resume, ("frames",))

    def _frame_path(self, t: int) -> Path:
        return self.work_dir / "frames" / f"{t:05d}.safetensors"

    def _read(self, path: Path, what: str, redo: str) -> dict[str, np.ndarray] | None:
        """The piece's arrays; None when absent, or damaged (said once, in one line)."""
        if not path.exists():
            return None
        try:
            return read_piece(path)
        except Damaged as exc:
            if what not in self._reported:
                self._reported.add(what)
                logger.warning("%s in %s is damaged (%s); %s", what, self.work_dir, exc, redo)
            return None

    def has(self, t: int) -> bool:
        """Whether frame t is saved and intact."""
        tensors = self._read(self._frame_path(t), f"frame {t}", "redoing it")
        if tensors is None or "frame" not in tensors:
            return False
        self._checked = {t: tensors["frame"]}
        return True

    def save(self, t: int, frame: np.ndarray) -> None:
        write_piece(self._frame_path(t), {"frame": np.ascontiguousarray(frame, dtype=np.uint8)})

    def load(self, t: int) -> np.ndarray:
        if t in self._checked:
            return self._checked.pop(t)
        if not self.has(t):
            raise MagicPropError(f"frame {t} of {self.work_dir} is missing or damaged; run again with --resume to redo it")
        return self._checked.pop(t)

    def save_state(self, chain: str, index: int, state: dict[str, np.ndarray]) -> None:
        arrays = {name: np.ascontiguousarray(a) for name, a in state.items()}
        write_piece(self.work_dir / f"state-{chain}.safetensors", {**arrays, "index": np.array([index], dtype=np.int64)})

    def load_state(self, chain: str) -> tuple[int, dict[str, np.ndarray]] | None:
        """(frame index, state) of the chain's last saved state, or None when it has none or it is damaged."""
        redo = f"redoing chain {chain} from its keyframe"
        tensors = self._read(self.work_dir / f"state-{chain}.safetensors", f"the state of chain {chain}", redo)
        if tensors is None or "index" not in tensors:
            return None
        return int(tensors.pop("index")[0]), tensors

    def close(self) -> None:
        """Remove a temporary folder (a work folder stays: the caller removes it once the output is written)."""
        if self._temporary:
            shutil.rmtree(self.work_dir, ignore_errors=True)
