"""What a clip costs in ComfyUI (its IMAGE batches, float32) and what MagicProp Propagate adds beside them, measured.

Each size runs in its own process: the first N frames of a real clip become an IMAGE batch as ComfyUI's loaders make
it; the node runs once on two frames (imports and compiled kernels, as in a server that has run it), the process's
peak resident memory is reset, the node runs (flow, the default), and the peak above the memory held before the call, less the output IMAGE batch the node hands back, is magicprop's own working memory. Printed beside
the IMAGE batch's N*H*W*3*4 bytes, per frame, so that a second N shows how each grows with the clip.

    .venv/bin/python tests/comfyui_memory.py ../shared/samples/real/koolshooters.mp4 32 96
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

MIB = 2**20


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(clip: str, frames: int) -> dict:
    """One run of the node on the clip's first `frames` frames, in this process."""
    import torch

    from magicprop.video import read_video

    sys.path.insert(0, str(Path(__file__).parent))
    from test_comfyui_pack import import_pack

    node = import_pack().NODE_CLASS_MAPPINGS["MagicPropPropagate"]()
    source = read_video(clip, max_frames=frames)[0]
    images = torch.from_numpy(source) / 255.0  # as ComfyUI's loaders make it
    keyframe = images[:1].flip(-1).contiguous()  # an edit of frame 0 (channels swapped): what is carried does not matter here
    del source
    node.propagate(images[:2], keyframe, "0", "flow", 0)  # warm: imports and numba's compiled kernels, as in a running server
    image_bytes = images.numel() * images.element_size()
    before = _kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    start = time.process_time()
    (out,) = node.propagate(images, keyframe, "0", "flow", 0)
    cpu = time.process_time() - start
    peak = _kib("VmHWM")
    own = peak * 1024 - before * 1024 - out.numel() * out.element_size()
    n, h, w = images.shape[:3]
    return {"frames": n, "width": w, "height": h, "image_batch_mib": round(image_bytes / MIB, 1),
            "magicprop_own_mib": round(own / MIB, 1), "own_per_frame_mib": round(own / MIB / n, 2),
            "image_per_frame_mib": round(image_bytes / MIB / n, 2), "cpu_s_per_frame": round(cpu / n, 2)}  # fmt: skip


def main(clip: str, sizes: list[int]) -> None:
    print("| frames | size | IMAGE batch (MiB) | magicprop's own peak (MiB) | per frame: IMAGE / own (MiB) | CPU s/frame |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        run = subprocess.run([sys.executable, __file__, "--one", clip, str(n)], capture_output=True, text=True, check=True)
        r = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"| {r['frames']} | {r['width']}x{r['height']} | {r['image_batch_mib']} | {r['magicprop_own_mib']} | "
              f"{r['image_per_frame_mib']} / {r['own_per_frame_mib']} | {r['cpu_s_per_frame']} |")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]))))
    else:
        main(sys.argv[1], [int(n) for n in sys.argv[2:]])
