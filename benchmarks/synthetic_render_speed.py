"""How long `magicprop.synthetic.render_clip` takes (the demo, the tests and every benchmark render clips with it).

Prints seconds per clip for the default 16-frame 64x64 clip and for a 256x256 local-edit clip, measured in one run
after a warm-up render, and frames per second for each:

    python benchmarks/synthetic_render_speed.py
"""

from __future__ import annotations

import json
import time

from magicprop.synthetic import render_clip


def timed(**kwargs) -> float:
    start = time.perf_counter()
    render_clip(1, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    render_clip(0)  # warm the imports and caches
    small, big = timed(), timed(size=(256, 256), edit="local")
    print(json.dumps({"seconds_64x64_16_frames": round(small, 3), "seconds_256x256_local_16_frames": round(big, 3),
                      "frames_per_second_64": round(16 / small, 1), "frames_per_second_256": round(16 / big, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
