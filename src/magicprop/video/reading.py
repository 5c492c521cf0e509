"""Reading clips: sampling, resizing and cropping while streaming, with one-line errors for bad inputs.

Inputs are video files decoded by PyAV (mp4, mov, webm, mkv, avi, gif, ...) or a folder of numbered images (.jpg, .jpeg,
.png, in natural order: 2.png before 10.png). An image folder carries no frame rate: it is the `fps` argument, default
24. Frames are always uint8 RGB (H, W, 3): grayscale sources are expanded, alpha is dropped (not composited), and
rotation metadata (phone videos) is applied in quarter turns. A damaged or truncated file yields the frames that decode,
with a warning; a file with none raises `UsageError`.

`VideoReader` streams frames in order; `clip.Frames` is the same source as a lazy array (random access, views).
Images and masks are read by `video.images`, written (with clips) by `video.writing`; callers import all of them from
`magicprop.video`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np

from ..errors import UsageError
from ..fileio import PathLike, natural_key, require_file
from .frames import resize_frames
from .images import image_size, load_image

logger = logging.getLogger(__name__)

DEFAULT_FPS = 24.0  # frame rate of an image folder when none is given
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class VideoInfo:
    frames: int  # counted by decoding, not read from the header (headers of cut or re-muxed files are often wrong)
    fps: float  # average frame rate (frames / duration), also for variable-frame-rate clips
    width: int  # upright: after rotation metadata is applied
    height: int


# ---------------------------------------------------------------------------------------------------------------------
# Sources: a folder of images or a video file decoded by PyAV
# ---------------------------------------------------------------------------------------------------------------------
def _list_images(folder: Path) -> list[Path]:
    """The folder's images in natural order, checked to share one size."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    if not files:
        raise UsageError(f"folder {folder} has no .jpg/.jpeg/.png images; put numbered frames in it or pass a video file")
    files.sort(key=natural_key)
    first = image_size(files[0])
    for f in files[1:]:
        if (size := image_size(f)) != first:
            raise UsageError(
                f"images in {folder} have different sizes: {files[0].name} is {first[1]}x{first[0]} but {f.name} is "
                f"{size[1]}x{size[0]}; resize them to one size"
            )
    return files


def _open_container(path: Path) -> av.container.InputContainer:
    """Open a video file its caller has already checked with `require_file` (VideoReader, probe)."""
    try:
        container = av.open(str(path), metadata_errors="replace")  # damaged tags must not stop the frames
    except (av.error.FFmpegError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        fix = "use an mp4/mov/webm/mkv/avi/gif file or an image folder"
        raise UsageError(f"{path} is not a readable video ({reason}); {fix}") from None
    if not container.streams.video:
        container.close()
        raise UsageError(f"{path} has no video stream; pass a video file or a folder of images")
    return container


def _stream_fps(path: Path, stream: av.video.stream.VideoStream) -> float:
    # average_rate is frames / duration: the rate to replay a variable-frame-rate clip at without changing its length.
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate and float(rate) > 0:
            return float(rate)
    logger.warning(f"{path} does not state its frame rate; assuming {DEFAULT_FPS:g} fps")
    return DEFAULT_FPS


def _decode(path: Path, container: av.container.InputContainer, *, quiet: bool = False) -> Iterator[av.VideoFrame]:
    """Every decodable frame in presentation order; damage thins or ends the stream with a warning instead of a crash
    (quiet: without the warnings, for a file read again after they were given once)."""
    stream = container.streams.video[0]
    # slice threads, not frame threads: each frame thread holds its own decoded frames (a 4K decoder 156 MB against 108
    # MB measured), and decoding is a small part of any run; the frames are the same either way
    stream.thread_type = "SLICE"
    decoded = bad_packets = 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                bad_packets += 1  # a damaged packet: skip it, a later keyframe may decode again
                continue
            for frame in frames:
                decoded += 1
                yield frame
    except av.error.FFmpegError as exc:  # the demuxer gave up: the file is cut short or damaged from here on
        if not quiet:
            reason = exc.strerror or type(exc).__name__
            logger.warning(f"{path}: stopped after {decoded} frames ({reason}); the file may be truncated")
        return
    if quiet:
        return
    if bad_packets:
        logger.warning(f"{path}: skipped {bad_packets} damaged packets")
    if stream.frames and decoded < stream.frames:
        logger.warning(f"{path}: decoded {decoded} of the {stream.frames} frames its header lists; the file may be truncated")


def _quarter_turns(path: Path, frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that show the frame upright (PyAV's `rotation` is counter-clockwise degrees)."""
    rotation = frame.rotation
    if rotation % 90:
        logger.warning(f"{path}: ignoring a rotation of {rotation} degrees (only multiples of 90 are applied)")
        return 0
    return (rotation // 90) % 4


def _frame_to_rgb(path: Path, frame: av.VideoFrame) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")  # swscale converts yuv, gray, rgba and pal8 alike
    turns = _quarter_turns(path, frame)
    return np.rot90(rgb, k=turns) if turns else rgb


# ---------------------------------------------------------------------------------------------------------------------
# Sampling and output geometry
# ---------------------------------------------------------------------------------------------------------------------
def _round_to_multiple(h: float, w: float, m: int) -> tuple[int, int]:
    """Both sides to multiples of m: the short side to its nearest multiple, the long side to follow the aspect ratio."""
    if m == 1:
        return max(1, math.floor(h + 0.5)), max(1, math.floor(w + 0.5))
    short, long_ = (h, w) if h <= w else (w, h)
    s = max(m, math.floor(short / m + 0.5) * m)
    l = max(m, math.floor(s * long_ / short / m + 0.5) * m)
    return (s, l) if h <= w else (l, s)


@dataclass(frozen=True)
class _Sampling:
    """The options of `open_video`, checked once."""

    start: int = 0
    max_frames: int | None = None
    stride: int = 1
    size: tuple[int, int] | None = None
    short_side: int | None = None
    multiple_of: int = 1
    center_crop: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.start >= 0, f"start must be >= 0, got {self.start}"),
            (self.stride >= 1, f"stride must be >= 1, got {self.stride}"),
            (self.max_frames is None or self.max_frames >= 1, f"max_frames must be >= 1 or None, got {self.max_frames}"),
            (self.size is None or (len(self.size) == 2 and min(self.size) >= 1), f"size must be positive (H, W), got {self.size}"),
            (self.short_side is None or self.short_side >= 1, f"short_side must be positive, got {self.short_side}"),
            (self.size is None or self.short_side is None, "give size or short_side, not both"),
            (self.multiple_of >= 1, f"multiple_of must be >= 1, got {self.multiple_of}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        if self.size is not None:
            th, tw = float(self.size[0]), float(self.size[1])
        elif self.short_side is not None:
            th, tw = h * self.short_side / min(h, w), w * self.short_side / min(h, w)
        else:
            th, tw = float(h), float(w)
        return _round_to_multiple(th, tw, self.multiple_of)

    def apply(self, frame: np.ndarray, out: tuple[int, int]) -> np.ndarray:
        """Crop (with center_crop) to the output's aspect ratio, then resize to `out` = (H, W)."""
        h, w = frame.shape[:2]
        oh, ow = out
        if self.center_crop:  # to the final, rounded aspect ratio: nothing is stretched even after rounding
            if w * oh > ow * h:
                cw = max(1, round(h * ow / oh))
                frame = frame[:, (w - cw) // 2 : (w - cw) // 2 + cw]
            else:
                ch = max(1, round(w * oh / ow))
                frame = frame[(h - ch) // 2 : (h - ch) // 2 + ch]
        return np.ascontiguousarray(resize_frames(frame, out))


# ---------------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------------
class VideoReader:
    """Streams the sampled, resized frames of a video file or image folder, decoding one frame at a time.

    `fps` is the rate of the frames it yields: the source's average rate divided by `stride`, so writing them at `fps`
    keeps the clip's duration. Iterating again decodes again from the first frame (frames before `start` are decoded
    and skipped, which is exact where seeking would land on a keyframe).
    """

    def __init__(self, path: PathLike, sampling: _Sampling, fps: float | None = None) -> None:
        self.path = require_file(path, "video")
        self._sampling = sampling
        self._container: av.container.InputContainer | None = None
        self._images: list[Path] | None = None
        if fps is not None and fps <= 0:
            raise UsageError(f"fps must be positive, got {fps}")
        if self.path.is_dir():
            self._images = _list_images(self.path)
            self._to_rgb: Callable[[object], np.ndarray] = load_image
            source_fps = float(fps or DEFAULT_FPS)
        else:
            self._container = _open_container(self.path)  # now, so that a bad file fails here rather than mid-loop
            self._to_rgb = partial(_frame_to_rgb, self.path)
            source_fps = _stream_fps(self.path, self._container.streams.video[0])
        self.fps = source_fps / sampling.stride

    def _items(self) -> Iterator[object]:
        """Image paths or undecoded-to-RGB PyAV frames, so that skipped frames are never converted."""
        if self._images is not None:
            yield from self._images
            return
        container, self._container = self._container or _open_container(self.path), None
        try:
            with contextlib.closing(_decode(self.path, container)) as frames:
                yield from frames
        finally:
            container.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        s = self._sampling
        seen = produced = 0
        out: tuple[int, int] | None = None
        with contextlib.closing(self._items()) as items:
            for index, item in enumerate(items):
                seen = index + 1
                if index < s.start or (index - s.start) % s.stride:
                    continue
                frame = self._to_rgb(item)
                out = out or s.output_size(*frame.shape[:2])  # fixed by the first frame: every frame gets one size
                yield s.apply(frame, out)
                produced += 1
                if s.max_frames is not None and produced >= s.max_frames:
                    return
        if seen == 0:
            raise UsageError(f"{self.path} has no decodable video frames; re-export or re-download it")
        if produced == 0:
            raise UsageError(f"start={s.start} is past the end of {self.path} ({seen} frames); choose a smaller start")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_video(
    path: PathLike,
    *,
    start: int = 0,
    max_frames: int | None = None,
    stride: int = 1,
    size: tuple[int, int] | None = None,
    short_side: int | None = None,
    multiple_of: int = 1,
    center_crop: bool = False,
    fps: float | None = None,
) -> VideoReader:
    """A streaming reader over frames start, start + stride, ... (at most max_frames of them).

    size: (height, width) of the output; with center_crop the source is first cropped to that aspect ratio, otherwise it
    is stretched. short_side: scale so the shorter side has this length, keeping the aspect ratio. multiple_of: round
    both sides to a multiple (8 for latents), the long side following the aspect ratio. fps: the frame rate of an image
    folder (default 24); video files carry their own and ignore it.
    """
    size = (int(size[0]), int(size[1])) if size is not None else None
    return VideoReader(path, _Sampling(start, max_frames, stride, size, short_side, multiple_of, center_crop), fps)


def read_video(
    path: PathLike,
    *,
    start: int = 0,
    max_frames: int | None = None,
    stride: int = 1,
    size: tuple[int, int] | None = None,
    short_side: int | None = None,
    multiple_of: int = 1,
    center_crop: bool = False,
    fps: float | None = None,
) -> tuple[np.ndarray, float]:
    """All sampled frames as (T, H, W, 3) uint8, and the fps they play at; the options are those of `open_video`."""
    options = dict(start=start, max_frames=max_frames, stride=stride, size=size, short_side=short_side)
    with open_video(path, **options, multiple_of=multiple_of, center_crop=center_crop, fps=fps) as reader:
        return np.stack(list(reader)), reader.fps


def probe(path: PathLike, *, fps: float | None = None) -> VideoInfo:
    """Frame count (by decoding every frame), fps, and upright width and height; `fps` is for image folders."""
    path = require_file(path, "video")  # first: a name too long for the filesystem makes is_dir() raise
    if path.is_dir():
        files = _list_images(path)
        h, w = image_size(files[0])
        return VideoInfo(frames=len(files), fps=float(fps or DEFAULT_FPS), width=w, height=h)
    container = _open_container(path)
    try:
        rate = _stream_fps(path, container.streams.video[0])
        count, (h, w) = 0, (0, 0)
        for frame in _decode(path, container):  # decoded but never converted to RGB: cheap even for long clips
            if count == 0:
                h, w = (frame.width, frame.height) if _quarter_turns(path, frame) % 2 else (frame.height, frame.width)
            count += 1
    finally:
        container.close()
    if count == 0:
        raise UsageError(f"{path} has no decodable video frames; re-export or re-download it")
    return VideoInfo(frames=count, fps=rate, width=w, height=h)
