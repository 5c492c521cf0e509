"""README pictures: real clips whose first frame was edited in an image editor, propagated by the weight-free methods.

For every `<clip>_<edit>_<index>.png` beside `<clip>.mp4` in ../shared/samples/edits (or `--edits-dir DIR`), the image
is the clip's frame `<index>` after the edit; there is no ground truth, so the pictures are for the eye and the numbers
need none: the warp error along the source's motion (flicker) and the sharpness of the propagated frames over the
keyframe's (how much detail survives; 1 = all). Writes one contact sheet per edit into `--out` (rows: frames 0, 5, 10,
15; columns: source and each method, labelled) and prints a markdown table.

    python benchmarks/real_edits_pictures.py --out docs/real
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from magicprop.evaluation import sharpness, warp_error
from magicprop.propagation import PROPAGATORS, PropagationRequest
from magicprop.video import fit_image, load_image, read_video, resize_frames, save_image, side_by_side

ROOT = Path(__file__).resolve().parents[1]
EDITS_DIR = ROOT.parent / "shared" / "samples" / "edits"
METHODS = ("flow", "chain", "lut")  # the columns of the sheets
REFERENCE = ("copy",)  # measured too, not pictured: the keyframe pasted on every frame
ROWS = (0, 5, 10, 15)
MAX_BYTES = 1_000_000  # a README picture stays under 1 MB


def find_edits(folder: Path) -> list[tuple[Path, Path, int]]:
    """(clip, edited keyframe image, its frame index) for every `<clip>_<edit>_<index>.png` with its `<clip>.mp4`."""
    clips = {p.stem: p for p in sorted(folder.glob("*.mp4"))}
    found = []
    for image in sorted(folder.glob("*.png")):
        match = re.fullmatch(r"(.+)_(\d+)", image.stem)  # <clip>_<edit>, <index>
        names = sorted(clips, key=len, reverse=True)  # the longest clip name first: "old_man" before "old"
        clip = None if match is None else next((c for c in names if match[1].startswith(c + "_")), None)
        if clip is None:
            print(f"skipping {image.name}: no <clip>.mp4 whose name it starts with")
            continue
        found.append((clips[clip], image, int(match[2])))
    return found


def propagate(method: str, source: np.ndarray, keyframe: np.ndarray, index: int) -> np.ndarray:
    request = PropagationRequest(source=source, keyframes={index: keyframe}, progress=False)
    return np.stack(list(PROPAGATORS[method](request)))


def contact_sheet(source: np.ndarray, outputs: dict[str, np.ndarray]) -> np.ndarray:
    """(H', W', 3) uint8: one row per frame of ROWS that the clip has, source then each method, each panel labelled."""
    rows = [side_by_side([source[t], *(o[t] for o in outputs.values())], [f"source {t}", *(f"{m} {t}" for m in outputs)])[0]
            for t in ROWS if t < len(source)]  # fmt: skip
    return np.concatenate(rows, axis=0)


def save_sheet(path: Path, sheet: np.ndarray) -> Path:
    """A PNG under MAX_BYTES: full colour when it fits, else 256 median-cut colours (a 4x4 sheet of 256 px photo
    panels is about 1.5 MB in full colour and under half that with a palette, which the eye barely tells apart)."""
    save_image(path, sheet)
    if path.stat().st_size > MAX_BYTES:
        from PIL import Image

        tmp = path.with_suffix(".tmp.png")
        Image.fromarray(sheet).quantize(256, method=Image.Quantize.MEDIANCUT).save(tmp, optimize=True)
        tmp.replace(path)  # atomic, like save_image
        if path.stat().st_size > MAX_BYTES:
            print(f"warning: {path} is {path.stat().st_size / 1e6:.2f} MB even with a palette; pass a smaller --size")
    return path


def measure(frames: np.ndarray, source: np.ndarray, keyframe: np.ndarray, index: int) -> dict:
    others = np.delete(frames, index, axis=0)
    return {"warp_error": float(np.nanmean(warp_error(frames, source))),
            "sharpness_ratio": float(np.median(sharpness(others) / max(sharpness(keyframe[None])[0], 1e-6)))}  # fmt: skip


def run(args) -> list[dict]:
    """Write each edit's sheet; return one row of numbers per edit and method."""
    methods = [m for m in (*METHODS, *REFERENCE) if m in PROPAGATORS]
    for m in (*METHODS, *REFERENCE):
        if m not in PROPAGATORS:
            print(f"skipping {m}: not registered (registered: {', '.join(PROPAGATORS)})")
    edits = find_edits(Path(args.edits_dir)) if Path(args.edits_dir).is_dir() else []
    if not edits:
        print(f"no edits: {args.edits_dir} holds no <clip>.mp4 with <clip>_<edit>_<index>.png beside it")
        return []
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for clip, image, index in edits:
        source, _ = read_video(clip, max_frames=args.max_frames)
        scale = args.size / max(source.shape[1:3])
        size = (round(source.shape[1] * scale / 8) * 8, round(source.shape[2] * scale / 8) * 8)
        source = resize_frames(source, size)
        keyframe = fit_image(load_image(image), size, what=image.name)
        outputs = {m: propagate(m, source, keyframe, index) for m in methods}
        sheet = contact_sheet(source, {m: outputs[m] for m in methods if m in METHODS})
        path = save_sheet(args.out / f"{image.stem.rsplit('_', 1)[0]}.png", sheet)
        for m in methods:
            results.append({"edit": image.stem, "method": m, **measure(outputs[m], source, keyframe, index)})
        print(f"{path} ({sheet.shape[1]}x{sheet.shape[0]}, {path.stat().st_size / 1e3:.0f} kB)", flush=True)
    return results


def markdown(results: list[dict]) -> str:
    lines = ["| edit | method | warp err | sharpness vs keyframe |", "|---|---|---|---|"]
    lines += [f"| {r['edit']} | {r['method']} | {r['warp_error']:.4f} | {r['sharpness_ratio']:.2f} |" for r in results]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edits-dir", type=Path, default=EDITS_DIR, help=f"clips and edited keyframes (default {EDITS_DIR})")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "real")
    p.add_argument("--size", type=int, default=256, help="long side of each panel, px")
    p.add_argument("--max-frames", type=int, default=16)
    args = p.parse_args(argv)
    results = run(args)
    if results:
        print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
