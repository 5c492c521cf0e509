"""Which source frame an edited keyframe image was made from, by its structure rather than its colours.

An edit (a restyle, a recolour, a pencil sketch, a dog's head on a kitten) changes colours, textures and even which
side of an edge is brighter, but rarely where the edges and shapes are. So every frame and the image are compared
through the orientation of their local structure: the structure tensor J = G * (grad I grad I^T) of the grey image,
written in the doubled-angle form (Jxx - Jyy, 2 Jxy) / (Jxx + Jyy + eps). That vector has the edge's orientation as its
angle and its coherence as its length; it is blind to contrast and to edge polarity (a dark line on white and a white
line on dark give the same vector), and near zero in flat regions. Similarity is the cosine between the two vector
fields, averaged over three scales (64, 128 and 256 px on the long side): the coarse scale carries the layout that a
strong restyle keeps, the fine one separates neighbouring frames of slow motion.

How sure is a match? A similarity of 0.4 can be chance for images dominated by straight lines and a strong match for a
heavy restyle. So the best frame's similarity is compared with what the same image scores against that frame when it
is misaligned on purpose (mirrored left-right and up-down, shifted by a quarter of the frame each way): generic
structure (a horizon, verticals, blur) survives misalignment, a real match does not. The confidence is
(s - s_null) / (1 - s_null), s_null the best misaligned score: 0 when the match is no better than misalignment, 1 for
an exact structural copy. On the benchmark (`benchmarks/keyframes.py`) true matches score >= 0.45 and images from other
clips <= 0.11; `CONFIDENT` sits between.

Frames are read one at a time (a lazy clip works) and reduced to a 256 px grey image at once; nothing of the clip is
held but one grey frame's descriptors and one similarity per frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np
from tqdm.auto import tqdm

from ..errors import UsageError

logger = logging.getLogger(__name__)

# (long side in px, sigma of the structure tensor's window in px at that size), coarse to fine
SCALES: tuple[tuple[int, float], ...] = ((64, 1.5), (128, 1.0), (256, 1.0))
CONFIDENT = 0.25  # the confidence above which a match is used (true matches >= 0.45, other clips <= 0.11)
TIE = 5e-4  # frames whose similarities differ by less show the same picture, as far as structure goes
SHIFT = 0.25  # the misalignment of the null: a quarter of the frame


@dataclass(frozen=True)
class KeyframeMatch:
    """Where an edited image belongs in a clip. `index` is the frame to use; the rest says why."""

    index: int  # the frame to use: the best match when confident and unambiguous, else the fallback (see `reason`)
    best: int  # the frame whose structure matches best
    similarity: float  # cosine similarity of the structure fields at `best`, in [-1, 1]
    confidence: float  # in [0, 1]: how far the match rises above the same image misaligned (see the module docstring)
    runner_up: int | None  # the best frame at least 2 frames away from `best` (None for clips under 3 frames)
    runner_up_similarity: float | None
    reason: str  # "matched", "ambiguous" (frames far apart match equally) or "no match" (confidence too low)
    tied: tuple[int, ...] = field(default=())  # with "ambiguous": every frame matching as well as the best

    @property
    def confident(self) -> bool:
        return self.reason == "matched"

    def describe(self) -> str:
        """One line for the log: the frame used, the confidence and the runner-up."""
        runner = "" if self.runner_up is None else f"; runner-up frame {self.runner_up} ({self.runner_up_similarity:.3f})"
        if self.reason == "matched":
            return (f"keyframe image matches frame {self.index} (confidence {self.confidence:.2f}, similarity "
                    f"{self.similarity:.3f}{runner}); --keyframe-index overrides it")  # fmt: skip
        if self.reason == "ambiguous":
            return (f"keyframe image matches frames {_ranges(self.tied)} equally well (similarity {self.similarity:.3f}: "
                    f"the clip hardly changes there); using frame {self.index}, the first of them; give "
                    f"--keyframe-index to choose another")  # fmt: skip
        return (f"keyframe image matches no frame of the clip confidently (best frame {self.best}, confidence "
                f"{self.confidence:.2f}{runner}): is it from another clip? using frame {self.index}, the usual "
                f"convention for an edited first frame; give --keyframe-index if it belongs elsewhere")  # fmt: skip

    def as_dict(self) -> dict:
        return {"index": self.index, "best": self.best, "similarity": round(self.similarity, 4),
                "confidence": round(self.confidence, 4), "runner_up": self.runner_up,
                "runner_up_similarity": None if self.runner_up_similarity is None else round(self.runner_up_similarity, 4),
                "reason": self.reason, "tied": list(self.tied)}  # fmt: skip


def structure_field(grey: np.ndarray, sigma: float) -> np.ndarray:
    """(h, w, 2) float32: the doubled-angle structure tensor of a grey image, scaled to unit norm over the image.

    eps (5% of the mean tensor trace) keeps flat regions, whose orientation is noise, near zero."""
    g = cv2.GaussianBlur(grey, (0, 0), 0.7)  # the gradient of a little blurred image: no aliasing from the resize
    ix, iy = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    jxx, jyy, jxy = (cv2.GaussianBlur(p, (0, 0), sigma) for p in (ix * ix, iy * iy, ix * iy))
    trace = jxx + jyy
    v = np.stack([jxx - jyy, 2 * jxy], axis=-1) / (trace + 0.05 * float(trace.mean()) + 1e-8)[..., None]
    return (v / (np.sqrt(float((v * v).sum())) + 1e-8)).astype(np.float32)


class StructureDescriptor:
    """The structure fields of one picture at every scale of `SCALES`, for a clip of frame size (H, W)."""

    def __init__(self, image: np.ndarray, frame_size: tuple[int, int]):
        h, w = frame_size
        sizes = [_scaled(h, w, side) for side, _ in SCALES]
        # to the finest scale's size first (uint8, one pass over a full-size frame), the coarser ones from there
        small = _resize(np.ascontiguousarray(image), sizes[-1])
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        self.fields = [structure_field(_resize(grey, size), sigma) for size, (_, sigma) in zip(sizes, SCALES)]

    def similarity(self, other: "StructureDescriptor") -> float:
        """Mean cosine similarity over the scales, in [-1, 1]."""
        return float(np.mean([(a * b).sum() for a, b in zip(self.fields, other.fields)]))

    def null_similarity(self, other: "StructureDescriptor") -> float:
        """The best similarity of this picture misaligned against `other`: mirrored either way, or shifted by
        `SHIFT` of the frame up, down, left or right (cosine over the overlap)."""
        scores = []
        for axis in (0, 1):  # mirroring flips the orientation's sign about that axis: negate the 2 Jxy component
            mirrored = [np.flip(f, axis=axis) * np.array([1.0, -1.0], np.float32) for f in self.fields]
            scores.append(float(np.mean([(a * b).sum() for a, b in zip(mirrored, other.fields)])))
        for dy, dx in ((SHIFT, 0), (-SHIFT, 0), (0, SHIFT), (0, -SHIFT)):
            scores.append(float(np.mean([_shifted_cosine(a, b, dy, dx) for a, b in zip(self.fields, other.fields)])))
        return max(scores)


def find_keyframe(source, image: np.ndarray, *, fallback: int = 0, progress: bool = False) -> KeyframeMatch:
    """The source frame `image` was edited from.

    source: (T, H, W, 3) uint8 frames, or a lazy clip (`len`, `source[t]`); read one frame at a time.
    image: (h, w, 3) uint8, any size (compared stretched to the frames' size, as `video.fit_image` fits it).
    fallback: the frame used when nothing matches confidently (0: an edited first frame is the usual case).

    Returns the best match when its confidence reaches `CONFIDENT`; frames that match equally well far apart (a static
    clip, or one that returns to where it was) give the first of them; otherwise `fallback`. `KeyframeMatch.describe()` is the line to show.
    """
    num_frames = len(source)
    if num_frames < 1:
        raise UsageError("the clip has no frames")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UsageError(f"the keyframe image must be uint8 RGB (H, W, 3), got {image.dtype} {image.shape}")
    if not 0 <= fallback < num_frames:
        raise UsageError(f"fallback frame {fallback} is outside the clip (0..{num_frames - 1})")
    first = np.asarray(source[0])
    size = first.shape[:2]
    target = StructureDescriptor(image, size)
    scores = np.empty(num_frames, np.float64)
    best, best_descriptor = 0, None
    for t in tqdm(range(num_frames), desc="finding the keyframe's frame", unit="frame", disable=not progress):
        descriptor = StructureDescriptor(first if t == 0 else np.asarray(source[t]), size)
        scores[t] = target.similarity(descriptor)
        if best_descriptor is None or scores[t] > scores[best]:  # the best frame's fields are kept for the null
            best, best_descriptor = t, descriptor
    return judge(scores, target.null_similarity(best_descriptor), fallback=fallback)


def judge(scores: Sequence[float], null: float, *, fallback: int = 0) -> KeyframeMatch:
    """The decision of `find_keyframe` from the per-frame similarities and the best frame's misaligned similarity."""
    scores = np.asarray(scores, np.float64)
    best = int(np.argmax(scores))
    s = float(scores[best])
    confidence = float(np.clip((s - null) / max(1.0 - null, 1e-6), 0.0, 1.0))
    far = np.abs(np.arange(len(scores)) - best) >= 2  # neighbours of slow motion always score alike
    runner = int(np.argmax(np.where(far, scores, -np.inf))) if far.any() else None
    runner_s = None if runner is None else float(scores[runner])
    common = dict(best=best, similarity=s, confidence=confidence, runner_up=runner, runner_up_similarity=runner_s)
    if confidence < CONFIDENT:
        return KeyframeMatch(index=fallback, reason="no match", **common)
    tied = np.flatnonzero(scores >= s - TIE)
    if np.abs(tied - best).max() > 2:  # the same picture a few frames on is slow motion; farther, a still clip
        return KeyframeMatch(index=int(tied[0]), reason="ambiguous", tied=tuple(int(t) for t in tied), **common)
    return KeyframeMatch(index=best, reason="matched", **common)


def _scaled(h: int, w: int, long_side: int) -> tuple[int, int]:
    """(h, w) with the long side at most `long_side` (never enlarged), aspect kept, at least 8 px a side."""
    scale = min(1.0, long_side / max(h, w))
    return max(8, round(h * scale)), max(8, round(w * scale))


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An image at (h, w): averaged when shrinking, bilinear when enlarging."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrink = h <= image.shape[0] and w <= image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _shifted_cosine(a: np.ndarray, b: np.ndarray, fy: float, fx: float) -> float:
    """Cosine similarity of a shifted by (fy, fx) of its size against b, over the part where they overlap."""
    h, w = a.shape[:2]
    dy, dx = round(fy * h), round(fx * w)
    x = a[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
    y = b[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    return float((x * y).sum() / (np.sqrt(float((x * x).sum()) * float((y * y).sum())) + 1e-8))


def _ranges(indices: Sequence[int]) -> str:
    """"0-3, 7, 9-15" from sorted frame indices."""
    parts, start = [], None
    for i, t in enumerate(indices):
        if start is None:
            start = t
        if i + 1 == len(indices) or indices[i + 1] != t + 1:
            parts.append(str(start) if start == t else f"{start}-{t}")
            start = None
    return ", ".join(parts)
