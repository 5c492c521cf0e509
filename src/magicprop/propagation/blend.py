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
    least), and no seam appears where the ranges meet. At most two keyframes' frames are held at once.
    """
    tail: list[np.ndarray] = []  # frames k_prev..next_start-1 propagated from the previous keyframe
    prev = None
    for k, start, stop in keyframe_spans(keyframe_indices, num_frames):
        frames = list(render(k, start, stop))
        if len(frames) != stop - start:
            raise RuntimeError(f"rendering keyframe {k} gave {len(frames)} frames for {stop - start}")
        head = frames[: k - start]  # start..k-1, the backward chain of this keyframe
        if prev is None:
            yield from head
        else:
            gap = k - prev
            yield tail[0]  # the previous keyframe itself
            for i, (a, b) in enumerate(zip(tail[1:], head)):  # frame prev+1+i: weight of this keyframe grows with t
                w = (i + 1) / gap
                yield np.round(a.astype(np.float32) * (1 - w) + b.astype(np.float32) * w).astype(np.uint8)
        tail, prev = frames[k - start :], k
    yield from tail
