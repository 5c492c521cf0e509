"""`Frames`: a clip as a lazy, read-only (T, H, W, 3) uint8 array, decoded when a frame is asked for.

A 4K clip of 300 frames is 7.5 GB of pixels; nothing in magicprop holds it. `Frames.open("clip.mp4")` reads only the
header and counts the frames (a decode without colour conversion, as `probe` does); after that

    len(frames), frames.shape, frames.dtype, frames.ndim   # like an array: (T, H, W, 3), uint8, 4
    frames[t]                                              # (H, W, 3) uint8, read-only; negative t counts from the end
    frames[a:b], frames[::2]                               # another Frames over those frames (nothing decoded)
    frames.resized((h, w))                                 # another Frames, each frame resized when it is read
    for frame in frames: ...                               # in order, one decode pass
    frames.identity                                        # a stable digest for work-folder fingerprints

Reading forward decodes sequentially, each frame once; two decoders per file follow two readers that move forward
from different places (the propagation and the writer of the comparison video). Reading backward (the chains before a
keyframe) cannot run a decoder in reverse: a frame behind both decoders is found by decoding again from the start of
the file (exact, where seeking would land on keyframes whose decode can differ from a sequential one in open-GOP
files), keeping the frames just before it, so the next backward reads are free: a backward pass over k frames decodes
about k^2 / (2 (capacity - 3)) frames. Decoded frames live in one LRU cache per file, bounded in bytes (`cache_bytes`, at least
4 frames): memory does not grow with the clip's length. An image folder is read file by file, an array
(`Frames.from_array`) is indexed without copying. Frames are safe to read from several threads (the flow propagator
prefetches on a worker).

`np.asarray(frames)` is refused, so that code meant to stream cannot hold a whole clip by accident; `frames.numpy()`
does it on purpose (small clips, tests). `clip_digest` gives the same digest API for arrays and `Frames`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np

from ..errors import MagicPropError, UsageError
from ..fileio import PathLike, require_file
from .frames import resize_frames
from .images import image_size, load_image
from .reading import DEFAULT_FPS, _decode, _frame_to_rgb, _list_images, _open_container, _quarter_turns, _stream_fps

DEFAULT_CACHE_BYTES = 128 * 2**20  # decoded frames kept per file: five 4K frames, twenty 1080p ones
_MIN_CACHED = 4  # the frame being rendered, its neighbour, the keyframe and one prefetched frame
_MAX_DECODERS = 2  # open decoders per file: the propagation's and the writer's (a decoder holds a few frames)
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime): content digest, computed once per process


class _Source:
    """The frames of one file, folder or array at their own size, by index; shared by every view of it."""

    path: Path | None = None
    fps: float | None = None

    def __init__(self, cache_bytes: int) -> None:
        self.lock = threading.RLock()
        self.cache_bytes = cache_bytes
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._digest: str | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def frame_size(self) -> tuple[int, int]:
        raise NotImplementedError

    def capacity(self) -> int:
        """Frames the cache holds: `cache_bytes` worth, at least `_MIN_CACHED`."""
        h, w = self.frame_size()
        return max(_MIN_CACHED, self.cache_bytes // (h * w * 3))

    def frame(self, t: int) -> np.ndarray:
        with self.lock:
            if t in self.cache:
                self.cache.move_to_end(t)
                return self.cache[t]
            return self._read(t)

    def _keep(self, t: int, frame: np.ndarray) -> np.ndarray:
        frame.flags.writeable = False  # one array serves every reader: nobody may change it under the others
        self.cache[t] = frame
        self.cache.move_to_end(t)
        while len(self.cache) > self.capacity():
            self.cache.popitem(last=False)
        return frame

    def _read(self, t: int) -> np.ndarray:
        raise NotImplementedError

    def digest(self) -> str:
        with self.lock:
            if self._digest is None:
                self._digest = self._content_digest()
            return self._digest

    def _content_digest(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        with self.lock:
            self.cache.clear()


class _ArraySource(_Source):
    def __init__(self, array: np.ndarray, fps: float | None) -> None:
        super().__init__(0)
        self.array, self.fps = array, fps

    def __len__(self) -> int:
        return len(self.array)

    def frame_size(self) -> tuple[int, int]:
        return self.array.shape[1:3]

    def frame(self, t: int) -> np.ndarray:
        view = self.array[t]
        view.flags.writeable = False  # a read-only view: the caller's array itself stays writable
        return view

    def _content_digest(self) -> str:
        return clip_digest(self.array)


class _ReaderSource(_Source):
    """Frames made by a function of the index (`Frames.from_reader`): the last few kept, nothing else held."""

    def __init__(self, read: Callable[[int], np.ndarray], length: int, size: tuple[int, int],
                 digest: Callable[[], str] | None, fps: float | None) -> None:  # fmt: skip
        super().__init__(cache_bytes=0)  # the fewest frames the cache keeps: the propagator's working set
        self.read, self.length, self.size, self.digest_fn, self.fps = read, length, size, digest, fps

    def __len__(self) -> int:
        return self.length

    def frame_size(self) -> tuple[int, int]:
        return self.size

    def _read(self, t: int) -> np.ndarray:
        frame = np.ascontiguousarray(self.read(t))
        if frame.shape != (*self.size, 3) or frame.dtype != np.uint8:
            raise MagicPropError(f"frame {t} from the reader is {frame.dtype} {frame.shape}, expected uint8 {(*self.size, 3)}")
        return self._keep(t, frame)

    def _content_digest(self) -> str:
        if self.digest_fn is not None:
            return self.digest_fn()
        digest = hashlib.sha256()  # clip_digest's: the uint8 bytes, one frame at a time
        for t in range(self.length):
            digest.update(self._read(t).data)
        return digest.hexdigest()


class _FolderSource(_Source):
    def __init__(self, path: Path, fps: float | None, cache_bytes: int) -> None:
        super().__init__(cache_bytes)
        self.path, self.files = path, _list_images(path)  # checked to share one size (headers only)
        self.fps = float(fps or DEFAULT_FPS)
        self._size = image_size(self.files[0])

    def __len__(self) -> int:
        return len(self.files)

    def frame_size(self) -> tuple[int, int]:
        return self._size

    def _read(self, t: int) -> np.ndarray:
        frame = load_image(self.files[t])
        if frame.shape[:2] != self._size:  # headers said one size; a file replaced since says otherwise
            raise MagicPropError(f"{self.files[t]} is {frame.shape[1]}x{frame.shape[0]} now, not {self._size[1]}x{self._size[0]}; "
                                 "it changed while the clip was read")  # fmt: skip
        return self._keep(t, frame)

    def _content_digest(self) -> str:
        digest = hashlib.sha256()
        for f in self.files:
            digest.update(f.name.encode() + b"\0")
            digest.update(_file_digest(f).encode())
        return digest.hexdigest()


class _VideoSource(_Source):
    """A video file: up to two forward decoders (one may follow the propagation while the other feeds the writer); a
    frame behind both is found by a new decoder from the start of the file."""

    def __init__(self, path: Path, cache_bytes: int) -> None:
        super().__init__(cache_bytes)
        self.path = path
        container = _open_container(path)  # now: a file that is no video fails here, in one line
        try:
            self.fps = _stream_fps(path, container.streams.video[0])
        finally:
            container.close()
        self._count: int | None = None
        self._size: tuple[int, int] | None = None
        self._cursors: list[_Cursor] = []  # the least recently used first

    def _measure(self) -> None:
        """Count the frames by decoding them (not converted to RGB), as `probe` does: headers of cut files lie."""
        with self.lock:
            if self._count is not None:
                return
            count, size = 0, (0, 0)
            container = _open_container(self.path)
            try:
                for frame in _decode(self.path, container):  # the damage warnings are given here, once
                    if count == 0:
                        turned = _quarter_turns(self.path, frame) % 2
                        size = (frame.width, frame.height) if turned else (frame.height, frame.width)
                    count += 1
            finally:
                container.close()
            if count == 0:
                raise UsageError(f"{self.path} has no decodable video frames; re-export or re-download it")
            self._count, self._size = count, size

    def __len__(self) -> int:
        self._measure()
        return self._count

    def frame_size(self) -> tuple[int, int]:
        self._measure()
        return self._size

    def _read(self, t: int) -> np.ndarray:
        behind = [c for c in self._cursors if c.index <= t]
        if behind:  # the decoder nearest before t goes on to it
            cursor, keep_from = max(behind, key=lambda c: c.index), t
            self._cursors.remove(cursor)
        else:  # t is behind every decoder: a new one from the start, keeping the frames just before t for the reads that
            # walk backward from it (all the cache but the 3 most recently used: the keyframe, say, read every step)
            cursor, keep_from = _Cursor(self.path), max(0, t - max(1, self.capacity() - 3) + 1)
            if len(self._cursors) == _MAX_DECODERS:
                self._cursors.pop(0).close()
        self._cursors.append(cursor)
        while cursor.index <= t:
            frame = cursor.next()
            if frame is None:
                self.close()
                raise MagicPropError(f"{self.path} ended after {cursor.index} of its {len(self)} frames; it changed while it was read")
            if cursor.index - 1 >= keep_from:
                rgb = _frame_to_rgb(self.path, frame)
                if rgb.shape[:2] != self._size:  # a stream that changes resolution midway: every frame gets the first's
                    rgb = resize_frames(rgb, self._size)
                self._keep(cursor.index - 1, np.ascontiguousarray(rgb))
        return self.cache[t]

    def _content_digest(self) -> str:
        return _file_digest(self.path)

    def close(self) -> None:
        with self.lock:
            for cursor in self._cursors:
                cursor.close()
            self._cursors = []
            super().close()


class _Cursor:
    """One decoder over a file, and the index of the frame it gives next (decoded, not yet converted to RGB)."""

    def __init__(self, path: Path) -> None:
        self.container = _open_container(path)
        self.frames = _decode(path, self.container, quiet=True)  # the first count gave the warnings
        self.index = 0

    def next(self) -> av.VideoFrame | None:
        frame = next(self.frames, None)
        self.index += frame is not None
        return frame

    def close(self) -> None:
        self.frames.close()
        self.container.close()


class Frames:
    """A clip as a lazy read-only (T, H, W, 3) uint8 array (see the module docstring). Build it with `Frames.open` (a
    video file or an image folder) or `Frames.from_array`; slicing and `resized` give views that share its decoder."""

    def __init__(self, source: _Source, indices: range | None = None, size: tuple[int, int] | None = None,
                 interpolation: str = "area") -> None:  # fmt: skip
        self._source, self._indices = source, indices
        self._size, self._interpolation = size, interpolation
        self._resized: OrderedDict[int, np.ndarray] = OrderedDict()  # the last resized frames of this view

    @classmethod
    def open(cls, path: PathLike, *, fps: float | None = None, cache_bytes: int | None = None) -> "Frames":
        """A video file (mp4, mov, webm, mkv, avi, gif, ...) or a folder of numbered .jpg/.png frames, read lazily.

        fps: the frame rate of an image folder (default 24); video files carry their own. cache_bytes: decoded frames
        kept in memory for this file (at least 4 frames; default `DEFAULT_CACHE_BYTES`, 128 MB)."""
        path = require_file(path, "video")  # first: a name too long for the filesystem makes is_dir() raise
        if fps is not None and fps <= 0:
            raise UsageError(f"fps must be positive, got {fps}")
        cache_bytes = DEFAULT_CACHE_BYTES if cache_bytes is None else cache_bytes
        source = _FolderSource(path, fps, cache_bytes) if path.is_dir() else _VideoSource(path, cache_bytes)
        return cls(source)

    @classmethod
    def from_array(cls, array: np.ndarray, *, fps: float | None = None) -> "Frames":
        """A (T, H, W, 3) uint8 array behind the same interface (not copied; frames come back as read-only views)."""
        array = np.asarray(array)
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8 or len(array) == 0:
            raise UsageError(f"video must be a path or uint8 frames (T, H, W, 3), got {array.dtype} {array.shape}")
        return cls(_ArraySource(array, fps))

    @classmethod
    def from_reader(cls, read: Callable[[int], np.ndarray], length: int, size: tuple[int, int], *,
                    digest: Callable[[], str] | None = None, fps: float | None = None) -> "Frames":  # fmt: skip
        """Frames produced on demand by `read(t)` -> (H, W, 3) uint8 for t in range(length), size = (H, W): a host's
        own frame store (ComfyUI's IMAGE batch, a decoder you manage) without a copy of the clip. The last few frames
        are kept. `digest()` names the content for work-folder fingerprints; by default every frame is read once and
        hashed as `clip_digest` hashes an array of the same bytes."""
        if length <= 0:
            raise UsageError(f"a clip needs at least one frame, got length {length}")
        h, w = (int(v) for v in size)
        if h <= 0 or w <= 0:
            raise UsageError(f"frame size must be positive (height, width), got {tuple(size)}")
        return cls(_ReaderSource(read, int(length), (h, w), digest, fps))

    # --- what an array has ---------------------------------------------------------------------------------------
    @property
    def indices(self) -> range:
        """The source's frame numbers this view shows, in order."""
        return range(len(self._source)) if self._indices is None else self._indices

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        h, w = self._size or self._source.frame_size()
        return (len(self), int(h), int(w), 3)

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __getitem__(self, key) -> "np.ndarray | Frames":
        if isinstance(key, tuple) and key and isinstance(key[0], (int, np.integer)) and not isinstance(key[0], bool):
            return self[key[0]][key[1:]]  # frames[t, y0:y1] reads frame t only
        if isinstance(key, slice):
            return Frames(self._source, self.indices[key], self._size, self._interpolation)
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
            raise TypeError(f"Frames are indexed by a frame number or a slice, got {type(key).__name__}; read frames one at a time")
        return self._frame(self.indices[key])  # IndexError past the end, as for an array

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in self.indices:
            yield self._frame(i)

    def _frame(self, i: int) -> np.ndarray:
        if self._size is None:
            return self._source.frame(i)
        with self._source.lock:  # a prefetching worker may ask for the same frame
            if i not in self._resized:
                frame = resize_frames(self._source.frame(i), self._size, interpolation=self._interpolation)
                frame.flags.writeable = False
                self._resized[i] = frame
                while len(self._resized) > _MIN_CACHED:
                    self._resized.popitem(last=False)
            self._resized.move_to_end(i)
            return self._resized[i]

    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"{self!r} is a lazy clip: read it frame by frame (frames[t], a loop), or call .numpy() on purpose")

    def numpy(self) -> np.ndarray:
        """Every frame of this view in one (T, H, W, 3) uint8 array: only for clips that fit in memory."""
        out = np.empty(self.shape, np.uint8)
        for j, frame in enumerate(self):
            out[j] = frame
        return out

    # --- what a clip has ------------------------------------------------------------------------------------------
    @property
    def fps(self) -> float | None:
        """Frames per second of the source (None for an array given without one); a view with a step shows fewer."""
        if self._source.fps is None:
            return None
        return self._source.fps / abs(self.indices.step)

    @property
    def path(self) -> Path | None:
        return self._source.path

    def resized(self, size: tuple[int, int], *, interpolation: str = "area") -> "Frames":
        """This clip with every frame resized to `size` = (H, W) when read (`video.resize_frames`: area averaging when
        shrinking); itself when it already has that size."""
        size = (int(size[0]), int(size[1]))
        if min(size) < 1:
            raise ValueError(f"size must be positive (H, W), got {size}")
        if size == self.shape[1:3]:
            return self
        return Frames(self._source, self._indices, size, interpolation)

    @property
    def identity(self) -> str:
        """sha256 naming these frames: the source's content (a file's bytes, each folder image's bytes, an array's
        pixels, hashed once per process) and this view's frames and size. The same clip gives the same identity in
        another process; any change to it gives another."""
        r = self.indices
        view = {"source": self._source.digest(), "frames": [r.start, r.stop, r.step], "size": self._size,
                "interpolation": self._interpolation if self._size else None}  # fmt: skip
        return hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()

    def close(self) -> None:
        """Release the decoder and the cached frames (reading again reopens the file)."""
        self._source.close()
        self._resized.clear()

    def __enter__(self) -> "Frames":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        what = self.path.name if self.path is not None else "array"
        return f"<Frames {what} {'x'.join(map(str, self.shape))}>"


def clip_digest(clip: np.ndarray | Frames) -> str:
    """sha256 hex digest of a clip: a `Frames`' identity, or an array's bytes hashed one frame at a time (the digest of
    the whole array's bytes, without a contiguous copy of it)."""
    if isinstance(clip, Frames):
        return clip.identity
    clip = np.asarray(clip)
    digest = hashlib.sha256()
    for frame in clip if clip.ndim else [clip]:
        digest.update(np.ascontiguousarray(frame).data)
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in 8 MB blocks; remembered for the process while its size and mtime hold."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(8 * 2**20):
                digest.update(block)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]
