"""Triplets for training: (reference, previous, target) frames of one clip, with their depth.

Sampling follows the paper (3.3.3): at most `frames_per_clip` frames with a stride of `frame_stride` from the start of
each clip, centre-cropped to squares and resized to the recipe's resolution. A triplet is two consecutive sampled frames
(previous -> target, in either direction, since propagation runs both ways from the keyframe) and one other frame of the
same clip as the reference. Clips come from `sources.discover_clips`, or from a cache (precompute.py).

Beyond the paper, a sample can carry more: the optical flow target -> previous (`with_flow`, for `use_warped_previous`),
the reference frame warped to the target through its anchored map (`with_anchor`, for `use_anchored_reference`: the
maps are measured on the clip's *source* frames, as inference measures them on the source video, and the clip's own
reference frame is sampled through them), and the frame before the previous one in the chain's direction (`with_pp`,
for self-rollout training, which renders the previous frame with the model itself from that one).

Which sample a global index n gives is a pure function of (seed, n): epoch e = n // num_clips reads the clips in the
order of a permutation seeded by (seed, e), and the triplet is drawn from a generator seeded by (seed, n). A resumed run
needs only the number of steps done. A clip that cannot be used (unreadable, corrupt, too short) is skipped, counted
and remembered: the sample moves on to the next clip of the same permutation, and that clip is never decoded again.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import MagicPropError, UsageError
from ..motion.flow import optical_flow
from ..motion import estimate_clip_depth, load_depth, resize_depth
from ..propagation.flow.keyframe_warp import KeyframeWarp
from ..video import read_video
from .sources import ClipSource

logger = logging.getLogger(__name__)

TRIPLET_FRAMES = 3  # reference, previous and target must be three different sampled frames


class DepthModelError(MagicPropError):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code  # a usage error (bad --depth-model) stays one


@dataclass(frozen=True)
class FrameSampling:
    resolution: int = 256
    frames_per_clip: int = 30
    frame_stride: int = 4

    @classmethod
    def from_recipe(cls, recipe) -> "FrameSampling":
        return cls(recipe.resolution, recipe.frames_per_clip, recipe.frame_stride)


# ---------------------------------------------------------------------------------------------------------------------
# Decoding a clip
# ---------------------------------------------------------------------------------------------------------------------
def read_clip_frames(source: ClipSource, sampling: FrameSampling) -> np.ndarray:
    """Sampled frames (T, R, R, 3) uint8 of a clip; raises on anything unreadable."""
    kwargs = dict(start=0, max_frames=sampling.frames_per_clip, stride=sampling.frame_stride,
                  size=(sampling.resolution, sampling.resolution), center_crop=True)  # fmt: skip
    if source.member is None:
        path = Path(source.path) / source.video if source.synthetic else Path(source.path)
        frames, _ = read_video(path, **kwargs)
        return frames
    with open(source.path, "rb") as f:  # a tar member: its bytes go to a temporary file the decoder can seek in
        f.seek(source.offset)
        data = f.read(source.size)
    with tempfile.NamedTemporaryFile(suffix=Path(source.member).suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        frames, _ = read_video(tmp.name, **kwargs)
    return frames


def synthetic_depth(source: ClipSource, sampling: FrameSampling, num_frames: int) -> np.ndarray:
    """The exact depth of a synthetic clip at the sampled frames, cropped and resized like them: (T, R, R) in [0, 1]."""
    depth = np.asarray(load_depth(Path(source.path) / "depth.npz"), dtype=np.float32)  # (T0, H, W)
    depth = depth[0 : num_frames * sampling.frame_stride : sampling.frame_stride]
    if len(depth) != num_frames:
        raise ValueError(f"depth.npz has {len(depth)} sampled frames, source.mp4 {num_frames}")
    return square_resize(depth, sampling.resolution)


def square_resize(maps: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W) -> (T, size, size): the centred square crop read_video(center_crop=True) takes, then resized."""
    h, w = maps.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return resize_depth(maps[:, top : top + side, left : left + side], (size, size))


def choose_triplet(num_frames: int, rng: np.random.Generator, references=None, with_pp: bool = False) -> tuple[int, int, int]:
    """(reference, previous, target) sampled-frame indices: previous and target adjacent, the reference any other
    (of `references` when given: the frames a cache holds CLIP tokens for).

    `with_pp`: the frame before the previous one in the chain's direction, pp = 2 * previous - target, exists too (a
    run of three frames instead of two, drawn the same way, so without it the draws are those of old). The reference
    may be pp: at inference the second frame of each chain is rendered from a previous frame rendered from the keyframe.
    """
    run = 3 if with_pp else 2  # consecutive frames: [pp,] previous, target
    first = int(rng.integers(0, num_frames - run + 1))
    frames = list(range(first, first + run))
    if rng.random() < 0.5:  # the backward chain renders frame k-1 from frame k
        frames.reverse()
    previous, target = frames[-2], frames[-1]
    others = [i for i in (range(num_frames) if references is None else references) if i not in (previous, target)]
    return int(others[rng.integers(0, len(others))]), previous, target


# ---------------------------------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------------------------------
class TripletIndex(torch.utils.data.Dataset):
    """Global sample index -> (clip, triplet), a pure function of (seed, index); subclasses load what a clip holds.

    Subclasses implement `load(i) -> payload` (raising on an unusable clip), `num_frames(payload)` and
    `make_sample(payload, triplet) -> dict`.
    """

    def __init__(self, num_clips: int, seed: int, missing: list[str] | None = None, with_pp: bool = False):
        self.num_clips = num_clips
        self.seed = seed
        self.with_pp = with_pp  # every triplet also has the frame before the previous one (self-rollout training)
        self.missing = list(missing or [])
        self.bad: dict[int, str] = {}  # clip index -> why it was skipped (this process / worker only)
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:  # one epoch; the sampler below runs past it into later epochs
        return self.num_clips

    @property
    def skipped(self) -> int:
        return len(self.missing) + len(self.bad)

    def permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_clips))
        return self._perm[1]

    def describe(self, i: int) -> str:
        return str(i)

    def reference_frames(self, payload) -> list[int] | None:
        return None  # any frame may be the reference

    def __getitem__(self, n: int) -> dict:
        epoch, position = divmod(int(n), self.num_clips)
        order = self.permutation(epoch)
        newly_bad = []
        for k in range(self.num_clips):  # at most one pass over the clips: never retried forever
            i = int(order[(position + k) % self.num_clips])
            if i in self.bad:
                continue
            try:
                payload = self.load(i)
                if self.num_frames(payload) < TRIPLET_FRAMES:
                    raise ValueError(f"only {self.num_frames(payload)} sampled frames, a triplet needs {TRIPLET_FRAMES}")
            except DepthModelError:
                raise
            except Exception as exc:  # any decode failure: skip the clip, count it, say which and why
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                self.bad[i] = reason
                newly_bad.append(i)
                logger.warning("skipped video %s: %s", self.describe(i), reason)
                continue
            rng = np.random.default_rng([self.seed, int(n), 1])
            triplet = choose_triplet(self.num_frames(payload), rng, self.reference_frames(payload), self.with_pp)
            sample = self.make_sample(payload, triplet)
            sample["frames"] = torch.tensor(triplet)  # (3,): reference, previous, target sampled-frame indices
            sample["clip"] = torch.tensor(i)
            sample["skipped"] = newly_bad
            return sample
        first = next(iter(self.bad.items()), (None, "?"))
        raise UsageError(f"no usable clip: all {self.num_clips} were skipped (e.g. {self.describe(first[0])}: {first[1]})")

    def check_usable(self, limit: int = 64) -> int | None:
        """Fail early, in the main process, with one line when no clip can be used: probe clips until one works and
        return its index (None when the first `limit` were all bad: the rest are left to the data workers)."""
        for i in range(self.num_clips):
            if i >= limit:
                return None
            try:
                payload = self.load(i, probe=True)
                if self.num_frames(payload) >= TRIPLET_FRAMES:
                    return i
                self.bad[i] = f"only {self.num_frames(payload)} sampled frames, a triplet needs {TRIPLET_FRAMES}"
            except Exception as exc:
                self.bad[i] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            logger.warning("skipped video %s: %s", self.describe(i), self.bad[i])
        i, reason = next(iter(self.bad.items()))
        raise UsageError(f"no usable clip among {self.num_clips} (first: {self.describe(i)}: {reason})")


@dataclass
class DecodedClip:
    """A raw clip as the triplets read it; kept whole in the clip cache, with the keyframe warps computed so far."""

    frames: np.ndarray  # (T, R, R, 3) uint8 sampled frames
    depth: np.ndarray | None  # (T, R, R) in [0, 1]; None when only probed
    motion: np.ndarray | None = None  # (T, R, R, 3) uint8 the anchored maps are measured on: the source's frames
    warps: dict[int, KeyframeWarp] = field(default_factory=dict)  # reference frame -> its frames warped to others

    def anchored(self, reference: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference frame sampled through frame t's anchored map, (3, R, R) in [0, 1], and its validity (1, R, R)."""
        if reference not in self.warps:  # `keep`: a 64x64 frame costs 16 kB, walking to it again a few ms per frame
            self.warps[reference] = KeyframeWarp(self.motion, self.frames[reference], reference, keep=True)
        warped, valid = self.warps[reference].warp(t)
        return image_tensor(warped), torch.from_numpy(valid)[None].float()


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1], as `models.encoders.images_to_tensor` converts at inference."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255


class RawTripletDataset(TripletIndex):
    """Triplets decoded from videos: images (3, R, R) in [0, 1] and depth (1, R, R) in [0, 1] (1 = nearest).

    Raw clips get depth from `depth_model`, run over the clip's sampled frames and normalised over the clip, as at
    inference; synthetic clips use their depth.npz. The depth model is loaded once (`load_depth_model`) and inherited by
    the data workers.
    """

    def __init__(self, clips: list[ClipSource], sampling: FrameSampling, seed: int, depth_model: str | None = None,
                 missing: list[str] | None = None, depth_device: str = "cpu", clip_cache: int = 0,
                 with_flow: bool = False, with_anchor: bool = False, with_pp: bool = False):  # fmt: skip
        super().__init__(len(clips), seed, missing, with_pp)
        self.with_flow = with_flow  # add the optical flow target -> previous (for use_warped_previous models)
        # add the reference warped to the target through its anchored map, and the map's validity (for
        # use_anchored_reference models); with clip_cache, the warps stay with the clip: at most T * (T - 1) frames of
        # R * R * 4 bytes (3.9 MB for 16 frames at 64x64), filled only as triplets ask for them, plus the state of the
        # chains still walking (R * R * 9 bytes each)
        self.with_anchor = with_anchor
        self.clips, self.sampling = clips, sampling
        self.depth_model, self.depth_device = depth_model, depth_device
        self.clip_cache = clip_cache  # decoded clips kept in memory (per worker); helps small datasets, 0 for benchmarks
        self._cache: dict[int, tuple] = {}
        self._estimator = None

    def describe(self, i) -> str:
        return str(self.clips[i]) if i is not None else "?"

    def load(self, i: int, probe: bool = False):
        if i in self._cache:
            return self._cache[i]
        source = self.clips[i]
        frames = read_clip_frames(source, self.sampling)
        if probe or len(frames) < TRIPLET_FRAMES:
            return DecodedClip(frames, None)
        depth = synthetic_depth(source, self.sampling, len(frames)) if source.synthetic else self.estimate_depth(frames)
        motion = None
        if self.with_anchor:  # an edited synth clip moves like its folder's source.mp4, whose frames the maps follow
            edited = source.synthetic and source.video != "source.mp4"
            motion = read_clip_frames(dataclasses.replace(source, video="source.mp4"), self.sampling) if edited else frames
            if motion.shape != frames.shape:
                raise ValueError(f"source.mp4 has {len(motion)} sampled frames of {motion.shape[1:3]}, {source.video} "
                                 f"{len(frames)} of {frames.shape[1:3]}")  # fmt: skip
        payload = DecodedClip(frames, depth, motion)
        if self.clip_cache:
            if len(self._cache) >= self.clip_cache:
                self._cache.pop(next(iter(self._cache)))
            self._cache[i] = payload
        return payload

    def load_depth_model(self) -> None:
        """Load the depth model (once; data workers inherit it). A model that cannot be loaded is a DepthModelError, a
        problem of the run that stops it, never a video counted as skipped."""
        if self._estimator is not None:
            return
        if self.depth_model is None:
            raise DepthModelError("raw (non-synthetic) clips need a depth model; pass --depth-model", exit_code=2)
        from .components import load_depth_estimator

        try:
            self._estimator = load_depth_estimator(self.depth_model, self.depth_device)
        except MagicPropError as exc:
            raise DepthModelError(str(exc), exit_code=exc.exit_code) from None

    def estimate_depth(self, frames: np.ndarray) -> np.ndarray:
        self.load_depth_model()
        return estimate_clip_depth(frames, self._estimator, progress=False)  # (T, R, R) in [0, 1], normalised over the clip

    @staticmethod
    def num_frames(payload: DecodedClip) -> int:
        return len(payload.frames)

    def make_sample(self, payload: DecodedClip, triplet) -> dict:
        frames, depth = payload.frames, payload.depth
        ref, prev, target = triplet
        depth_of = lambda t: torch.from_numpy(np.ascontiguousarray(depth[t]))[None].float()  # noqa: E731  (1, R, R)
        # computed on the clip being read: an edited synth clip moves exactly like its source
        flow = lambda a, b: torch.from_numpy(optical_flow(frames[a], frames[b])).permute(2, 0, 1)  # noqa: E731  (2, R, R)
        sample = {
            "reference": image_tensor(frames[ref]),  # (3, R, R)
            "previous": image_tensor(frames[prev]),
            "target": image_tensor(frames[target]),
            "previous_depth": depth_of(prev),
            "target_depth": depth_of(target),
        }
        if self.with_flow:
            sample["previous_flow"] = flow(target, prev)
        if self.with_anchor:  # (3, R, R) in [0, 1] and (1, R, R) in {0, 1}
            sample["target_anchored"], sample["target_anchored_valid"] = payload.anchored(ref, target)
        if self.with_pp:  # what the model needs to render the previous frame itself, from the one before it
            pp = 2 * prev - target
            sample["pp"], sample["pp_depth"] = image_tensor(frames[pp]), depth_of(pp)
            if self.with_flow:
                sample["pp_flow"] = flow(prev, pp)
            if self.with_anchor:
                sample["previous_anchored"], sample["previous_anchored_valid"] = payload.anchored(ref, prev)
        return sample


# ---------------------------------------------------------------------------------------------------------------------
# Order and batches
# ---------------------------------------------------------------------------------------------------------------------
class RankSampler(torch.utils.data.Sampler):
    """This process's global sample indices, from optimizer step `start_step` on, forever.

    Micro-batch m of step s on process r holds indices ((s * accum + m) * world + r) * batch + j, j < batch: the same
    global stream whatever the number of data workers, and a resumed run continues it exactly.
    """

    def __init__(self, batch_size: int, grad_accum: int, world_size: int, rank: int, start_step: int = 0):
        self.batch_size, self.grad_accum, self.world_size, self.rank = batch_size, grad_accum, world_size, rank
        self.start_step = start_step

    def __iter__(self) -> Iterator[int]:
        micro = self.start_step * self.grad_accum
        while True:
            base = (micro * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)
            micro += 1


def collate(samples: list[dict]) -> dict:
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0] if k != "skipped"}
    batch["skipped"] = [i for s in samples for i in s["skipped"]]  # clips found unusable while drawing this batch
    return batch


def make_dataloader(dataset, recipe, world_size: int, rank: int, start_step: int = 0, num_workers: int | None = None):
    workers = recipe.num_workers if num_workers is None else num_workers
    sampler = RankSampler(recipe.batch_size, recipe.grad_accum, world_size, rank, start_step)
    return torch.utils.data.DataLoader(
        dataset, batch_size=recipe.batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0, prefetch_factor=2 if workers else None,
    )  # fmt: skip
