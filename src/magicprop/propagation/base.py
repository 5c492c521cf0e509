"""What every propagator shares: one request type, one call signature, and what each declares it needs.

In the manner of k-diffusion's samplers, every propagator is called the same way,

    frames = PROPAGATORS["flow"](PropagationRequest(source=clip, keyframes={0: edited}))  # iterator of (H, W, 3) uint8

and yields every frame of the clip, in order, at the request's size, each given keyframe exactly at its index. A
propagator implements `render` for one keyframe; `__call__` checks the request against what the propagator declares
it needs (`needs_model`, `needs_depth`, `needs_source`), and for several keyframes propagates each over the frames up
to its neighbours and crossfades between them (`blend.blend_keyframes`), unless the propagator combines keyframes its
own way (`combines_keyframes = True`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Iterable, Iterator

import numpy as np

from ..errors import UsageError
from .blend import blend_keyframes, keyframe_spans

if TYPE_CHECKING:
    from ..models.bundle import PropagationModels
    from ..video import Frames

ProgressCallback = Callable[[int, int], None]


@dataclass
class PropagationSettings:
    """Sampling settings of the learned propagators (the weight-free ones ignore them), and the one setting a user
    turns for `flow`: how steady it holds re-drawn detail."""

    num_inference_steps: int = 25
    guidance_scale: float = 1.0  # on the reference; 1 = no classifier-free guidance (one forward per step)
    scheduler: str = "ddim"
    seed: int = 0
    # flow: how much of its neighbouring output frames (the previous, then in a second pass the next), carried along
    # the motion, each frame keeps where the edit re-draws detail (`flow.temporal.TemporalBlend.strength`, in [0, 1)):
    # higher is steadier and slower to follow a detail that changes. None: the propagator's own (0.65)
    temporal_blend: float | None = None

    def __post_init__(self) -> None:
        if self.temporal_blend is not None and not 0 <= self.temporal_blend < 1:
            raise UsageError(f"--temporal-blend must be in [0, 1) (0: no blend, 0.65: flow's default, 0.9: steadier), "
                             f"got {self.temporal_blend}")  # fmt: skip


@dataclass
class PropagationRequest:
    """Everything a propagator may read. Keyframes are {frame index: (H, W, 3) uint8} at the source frames' size."""

    # (T, H, W, 3) uint8 source frames, read by propagators with needs_source: an array or a lazy `video.Frames`. Read
    # them one frame (or a small window) at a time; never make the whole clip one array (np.asarray, copy, hashing it
    # at once: `video.clip_digest` hashes either kind for fingerprints)
    source: np.ndarray | Frames | None
    keyframes: dict[int, np.ndarray]  # edited keyframes by frame index (negative counts from the end)
    depth: np.ndarray | None = None  # (T, h, w) float32 in [0, 1], 1 = nearest; read by propagators with needs_depth
    models: PropagationModels | None = None  # read by propagators with needs_model
    settings: PropagationSettings = field(default_factory=PropagationSettings)
    num_frames: int | None = None  # T; taken from source or depth when None
    work_dir: Path | None = None  # where finished work is kept, so that `resume=True` continues a killed run
    resume: bool = False
    progress: bool = True  # a tqdm bar
    # callback(frames_done, total), the keyframes counted as done; raising from it stops the run (the UI's Cancel)
    callback: ProgressCallback | None = None
    # (h, w) at which diffusion models run (multiples the model needs); None means the source's size. A full-resolution
    # propagator that runs a diffusion model inside renders the model at this size and brings the result up itself.
    working_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.num_frames is None:
            known = self.source if self.source is not None else self.depth
            if known is None:
                raise UsageError("a propagation request needs the source frames or the depth to know the clip's length")
            self.num_frames = len(known)
        if self.work_dir is not None:
            self.work_dir = Path(self.work_dir)
        self.keyframes = resolve_keyframes(self.keyframes, self.num_frames)

    def span(self, k: int, start: int, stop: int, work_dir: Path | None, callback: ProgressCallback | None) -> "PropagationRequest":
        """The request restricted to frames start..stop-1, with keyframe k alone (re-indexed from start)."""
        cut = lambda a: None if a is None else a[start:stop]  # noqa: E731
        return replace(self, source=cut(self.source), depth=cut(self.depth), keyframes={k - start: self.keyframes[k]},
                       num_frames=stop - start, work_dir=work_dir, callback=callback)  # fmt: skip

    @property
    def keyframe_index(self) -> int:
        """The keyframe of a one-keyframe request."""
        if len(self.keyframes) != 1:
            raise ValueError(f"this request holds {len(self.keyframes)} keyframes, not one")
        return next(iter(self.keyframes))

    @property
    def keyframe(self) -> np.ndarray:
        return self.keyframes[self.keyframe_index]


class Propagator:
    """Base class: subclasses set `name`, the `needs_*` flags and a docstring saying what they implement, and define
    `render` for one keyframe."""

    name: ClassVar[str] = ""
    needs_model: ClassVar[bool] = False  # runs PropDPM: request.models must be set
    needs_depth: ClassVar[bool] = False  # reads the clip's depth (request.depth)
    needs_source: ClassVar[bool] = True  # reads the source frames (request.source)
    combines_keyframes: ClassVar[bool] = False  # render() takes several keyframes itself (no crossfade around it)
    # True: given the source at its own size (no shrink-and-enlarge round trip); the pipeline then caps the size only
    # when the user gives max_pixels. False: given the diffusion models' working size.
    full_resolution: ClassVar[bool] = False
    summary: ClassVar[str] = ""  # one line for --help and the UI

    def __call__(self, request: PropagationRequest) -> Iterator[np.ndarray]:
        """Yield every frame of the clip in order, (H, W, 3) uint8, each keyframe exactly at its index."""
        self.check(request)
        if len(request.keyframes) == 1 or self.combines_keyframes:
            callback, given = request.callback, len(request.keyframes)
            if callback is not None:
                callback(given, request.num_frames)  # the keyframes are done before anything runs
            report = None if callback is None else (lambda done, _: callback(given + done, request.num_frames))
            return iter(self.render(replace(request, callback=report)))
        return self._render_each_keyframe(request)

    def render(self, request: PropagationRequest) -> Iterable[np.ndarray]:
        """Yield the request's frames in order. Progress: request.callback(frames done, frames to do), keyframes not
        counted (the caller maps it onto the whole clip)."""
        raise NotImplementedError

    def check(self, request: PropagationRequest) -> None:
        """One line naming what the request lacks for this propagator."""
        if self.needs_model and request.models is None:
            raise UsageError(f"the {self.name} propagator needs propagation models; load them with PropagationModels.from_pretrained")
        if self.needs_depth and request.depth is None:
            raise UsageError(f"the {self.name} propagator needs the clip's depth; estimate it with `magicprop depth`")
        if self.needs_source and request.source is None:
            raise UsageError(f"the {self.name} propagator reads the source frames; pass them as the request's source")
        if request.source is not None:
            check_frames(request.source, request.keyframes)

    def _render_each_keyframe(self, request: PropagationRequest) -> Iterator[np.ndarray]:
        spans = keyframe_spans(list(request.keyframes), request.num_frames)
        # progress counts frames rendered, the keyframes as done: T for one keyframe, more where spans overlap
        offsets, total = {}, len(spans)
        for k, start, stop in spans:
            offsets[k], total = total, total + stop - start - 1
        if request.callback is not None:
            request.callback(len(spans), total)  # the keyframes are done before anything runs

        def render(k: int, start: int, stop: int) -> Iterable[np.ndarray]:
            report = None if request.callback is None else (lambda done, _, k=k: request.callback(offsets[k] + done, total))
            sub = None if request.work_dir is None else request.work_dir / f"keyframe-{k:05d}"  # each resumes alone
            return self.render(request.span(k, start, stop, sub, report))

        return blend_keyframes(render, list(request.keyframes), request.num_frames)

    def __repr__(self) -> str:
        needs = [n for n in ("model", "depth", "source") if getattr(self, f"needs_{n}")]
        return f"<{type(self).__name__} {self.name!r} needs={needs}>"


def resolve_keyframes(keyframes, num_frames: int) -> dict[int, np.ndarray]:
    """{index: image} sorted by frame index, negative indices counted from the end; out of range or repeated is an error."""
    if not isinstance(keyframes, dict) or not keyframes:
        raise UsageError("keyframes were asked for but none was given; pass {frame index: edited image}")
    resolved: dict[int, int] = {}
    for i in keyframes:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise UsageError(f"keyframe indices must be integers, got {i!r}")
        if not -num_frames <= i < num_frames:
            raise UsageError(f"keyframe index {i} is outside the clip (0..{num_frames - 1}); pick frames inside it")
        if int(i) % num_frames in resolved:
            raise UsageError(f"keyframes {resolved[int(i) % num_frames]} and {i} are the same frame; give each frame once")
        resolved[int(i) % num_frames] = int(i)
    return {t: keyframes[resolved[t]] for t in sorted(resolved)}


def check_frames(source: np.ndarray | Frames, keyframes: dict[int, np.ndarray]) -> None:
    """The source is a (T, H, W, 3) uint8 clip and every keyframe a uint8 image of its frames' size."""
    if source.ndim != 4 or source.shape[-1] != 3:
        raise UsageError(f"source must be a (T, H, W, 3) clip, got shape {source.shape}; read it with magicprop.video.read_video")
    for k, key in keyframes.items():
        if key.shape != source.shape[1:]:
            raise UsageError(f"keyframe {k} has shape {key.shape} but the source frames are {source.shape[1:]}; resize the keyframe to match")
        if source.dtype != np.uint8 or key.dtype != np.uint8:
            raise UsageError(f"source and keyframe must be uint8 (0..255), got {source.dtype} and {key.dtype}; convert them first")
