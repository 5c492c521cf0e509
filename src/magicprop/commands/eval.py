"""Score an edited clip: temporal consistency along the source's motion, fidelity to a ground truth, CLIP metrics.

Writes a JSON file with keys psnr, ssim (null without --reference), warp_error (mean |difference| in [0, 1] after warping
each frame along the source's optical flow; lower is steadier), clip_consistency (mean CLIP cosine of consecutive
frames), clip_text (CLIP-T, 100 x cosine to --prompt) and per_frame (the lists behind each mean); prints a short table.
CLIP metrics are null when no CLIP model can be loaded (offline, no cache) or with --no-clip. A reference or source of
another frame size is resized to the edited clip's; frame counts must match.

Example:
  magicprop eval outputs/demo/edited.mp4 --source outputs/demo/source.mp4 --reference outputs/demo/ground_truth.mp4 \\
      --prompt "a watercolor painting of a dog" --json outputs/demo/eval.json
"""

from __future__ import annotations

import argparse
import logging

NAME = "eval"
HELP = "score an edited clip (warp error, PSNR/SSIM against a reference, CLIP-T and CLIP consistency); write JSON"

logger = logging.getLogger(__name__)

# The keys of the JSON file, in this order; each is present, null when it could not be computed.
JSON_KEYS = ("psnr", "ssim", "warp_error", "clip_consistency", "clip_text", "per_frame")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..evaluation.clip_score import DEFAULT_CLIP_MODEL

    p.add_argument("edited", metavar="OUT.mp4", help="the edited clip to score")
    p.add_argument("--source", required=True, metavar="SRC.mp4", help="the source clip whose motion the edit should follow")
    p.add_argument("--reference", metavar="GT.mp4", help="ground-truth edited clip, for PSNR, SSIM and colour shift")
    p.add_argument("--prompt", help="text the edit should match, for CLIP-T")
    p.add_argument(
        "--clip-model", default=DEFAULT_CLIP_MODEL, metavar="ID|PATH", help="CLIP hub id or folder (default: %(default)s)"
    )
    p.add_argument("--no-clip", action="store_true", help="skip the CLIP metrics (they are written as null)")
    p.add_argument("--json", required=True, metavar="PATH", help="where to write the metrics")


def run(args: argparse.Namespace) -> int:
    from ..errors import MagicPropError
    from ..evaluation import ClipScorer, evaluate_clip, format_metrics
    from ..fileio import atomic_write_json, check_output_path, require_file
    from ..video import read_video

    # 1. Check every path before the slow work, so a typo costs nothing
    paths = {"edited clip": args.edited, "source clip": args.source, "reference clip": args.reference}
    for what, path in paths.items():
        if path is not None:
            require_file(path, what)
    check_output_path(args.json, args.edited, args.source, args.reference)

    # 2. Read the clips
    edited, _ = read_video(args.edited)
    source, _ = read_video(args.source)
    reference = read_video(args.reference)[0] if args.reference else None

    # 3. CLIP is optional: a missing model costs two metrics, not the whole evaluation
    scorer = None
    if not args.no_clip:
        try:
            scorer = ClipScorer.from_pretrained(args.clip_model)
        except MagicPropError as exc:
            logger.warning("CLIP metrics skipped (null): %s", exc)

    # 4. Score and write
    metrics = evaluate_clip(edited, source, reference, prompt=args.prompt, clip_scorer=scorer)
    atomic_write_json(args.json, {key: metrics[key] for key in JSON_KEYS})
    print(format_metrics({k: metrics[k] for k in JSON_KEYS if k != "per_frame"}))
    print(f"wrote {args.json} ({metrics['frames']} frames)")
    return 0
