"""Several keyframes: which frames each keyframe is propagated over, and the crossfade between two neighbours."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

import numpy as np


def keyframe_spans(keyframe_indices: Sequence[int], num_frames: int) -> list[tuple[int, int, int]]:
    """(keyframe, start, stop) for each keyframe, sorted: the frames it is propagated over, from just after the previous
    keyframe to just before the next one (or to the clip's ends). Neighbours share the frames between them."""
    ks = sorted(keyframe_indices)
    return [(k, ks[j - 1] + 1 if j else 0, ks[j + 1] if j + 1 < len(ks) else num_frames) for j, k in enumerate(ks)]


def blend_keyframes(
    render: Callable[[int, int, int], Iterable[np.ndarray]], keyframe_indices: Sequence[int], num_frames: int
) -> Iterator[np.ndarray]:
    """Several keyframes: yield every frame, in order, uint8 (H, W, 3).

    `render(k, start, stop)` yields frames start..stop-1 propagated from keyframe k (one call per keyframe, over its
    `keyframe_spans`). Between two keyframes both chains reach every frame; they are crossfaded linearly by distance,
    so each keyframe is kept exactly, a frame takes most from the keyframe nearest to it (whose chain has drifted
    least), and no seam appears where the ranges meet. The frames a keyframe's chain gives from the keyframe on wait on
    disk (a temporary `FrameStore`) for the next keyframe's to be crossfaded with: memory holds a frame or two.
    """
    from .store import FrameStore  # here: the store reads torch-free safetensors pieces, loaded only for several keyframes

    tail: FrameStore | None = None  # frames prev..k-1 propagated from the previous keyframe
    prev = None
    try:
        for k, start, stop in keyframe_spans(keyframe_indices, num_frames):
            if tail is not None:
                yield tail.load(prev)  # the previous keyframe itself
            kept, count = FrameStore(None, {}, False), 0
            for t, frame in zip(range(start, num_frames), render(k, start, stop)):
                count += 1
                if t >= k:
                    kept.save(t, frame)
                elif tail is None:
                    yield frame
                else:  # frame t between the two keyframes: the weight of this keyframe grows with t
                    w = (t - prev) / (k - prev)
                    yield np.round(tail.load(t).astype(np.float32) * (1 - w) + frame.astype(np.float32) * w).astype(np.uint8)
            if count != stop - start:
                kept.close()
                raise RuntimeError(f"rendering keyframe {k} gave {count} frames for {stop - start}")
            if tail is not None:
                tail.close()
            tail, prev = kept, k
        yield from (tail.load(t) for t in range(prev, num_frames))
    finally:
        if tail is not None:
            tail.close()
