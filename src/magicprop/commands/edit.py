"""Edit one frame of a video with a text prompt (SD 1.5 + depth ControlNet), then propagate the edit to every frame
along the video's depth with PropDPM.

Writes OUT.mp4 (source size and frame rate), OUT.keyframe.png, OUT.comparison.mp4 (source | edited) and OUT.json
(every setting, seed and model id). `--config OUT.json` runs the same edit again; flags given beside it win.
The keyframe ("auto") is the frame whose mask is largest, else the middle frame; with --keyframe-image, the frame the
image was edited from, found by its structure (frame 0 when none matches confidently). With --keyframes auto (or a list
of frames), stage I edits several keyframes that agree: the first from the prompt, each later one image-to-image from
the edit carried to its frame by flow. --masks keeps the source outside the per-frame masks (with a soft edge), so a
local edit leaves the background untouched. A killed run continues with --resume. Models are hub ids or local folders;
offline, a model missing from the cache fails at once.

Examples:
  magicprop edit clip.mp4 --prompt "a bear walking through stars" --seed 0 -o bear.mp4
  magicprop edit clip.mp4 --prompt "a red toy car" --masks car_masks/ --strength 0.8 -o red_car.mp4
  magicprop edit clip.mp4 --prompt "a golden car" --mask-point 320,240 --keyframe-index 12 -o golden.mp4
  magicprop edit clip.mp4 --keyframe-image my_edit.png --propagator flow -o flow.mp4
  magicprop edit clip.mp4 --prompt "a dog" --keyframes auto -o dog.mp4      # stage I on the suggested keyframes
  magicprop edit clip.mp4 --prompt "a dog" --keyframes 0,12 --keyframe-strength 0.4 -o dog.mp4
  magicprop edit clip.mp4 --config bear.json -o bear_again.mp4
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

NAME = "edit"
HELP = "edit one keyframe with a prompt (or your own image) and propagate it through the video"

logger = logging.getLogger(__name__)
S = argparse.SUPPRESS  # options left out are absent from the namespace, so --config values are not overridden by defaults


def keyframe_index(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {value!r}") from None


def point(value: str) -> list[float]:
    try:
        x, y = (float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y in pixels, got {value!r}") from None
    return [x, y]


def add_io_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", metavar="VIDEO", help="the source clip (video file or folder of numbered frames); never modified")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mp4",
                   help="the edited clip (.mp4/.mov/.mkv/.webm/.gif, or DIR/ for numbered PNGs 00000.png, 00001.png, ...); "
                        "OUT.keyframe.png, OUT.comparison.mp4 and OUT.json go beside it")
    p.add_argument("--config", metavar="FILE", help="JSON/YAML settings (an OUT.json of an earlier run reproduces it); flags override it")


def add_stage2_arguments(p: argparse.ArgumentParser, *, aliases: bool = False) -> None:
    """Stage II's flags. aliases: also accept `--steps` and `--guidance-scale` for them (`magicprop propagate`, which
    has no stage I, spelled them so before; scripts may still do)."""
    from ..jobs import EditJob
    from ..propagation import PROPAGATORS, choices
    from ..propagation.flow.temporal import TemporalBlend

    d = EditJob("", "")
    g = p.add_argument_group("stage II (propagation)")
    g.add_argument("--keyframe-index", type=keyframe_index, default=S, metavar="I|auto", help="frame to edit; negative counts from the end (default: auto)")
    g.add_argument("--keyframe-image", default=S, metavar="K.png", help="a keyframe you edited in any tool (fitted to the video's size)")
    g.add_argument("--keyframes", default=S, metavar="DIR|auto|I,J,K",
                   help="DIR: several edited keyframes, each named by its frame index (0.png, 31.png): each kept exactly; between two, flow takes each pixel from the nearer valid one, the others crossfade. "
                        "With `edit --prompt`: auto or I,J,K, the frames stage I edits (auto: those `magicprop keyframes` suggests), each later one started from the edit carried to it")
    g.add_argument("--masks", default=S, metavar="DIR", help="per-frame masks (numbered images): the output keeps the source outside them")
    g.add_argument("--feather", type=int, default=S, metavar="PX", help="soft edge of --masks in pixels (default: 1%% of the longer side)")
    described = "; ".join(f"{name}: {p.summary}" for name, p in PROPAGATORS.items())
    g.add_argument("--propagator", choices=choices(), default=S,
                   help=f"auto: propdpm when --model is given, else flow; {described} (default: {d.propagator})")
    g.add_argument("--temporal-blend", type=float, default=S, metavar="A",
                   help="flow, clips up to 0.35 Mpx: how much of its neighbouring output frames (the previous, then the next) each frame keeps, along the motion, where the edit re-draws detail, in [0, 1): "
                        f"higher is steadier and slower to follow a detail that changes (default: {TemporalBlend.strength:g}; 0.9 flickers less than EbSynth)")
    g.add_argument("--propagation-steps", *(["--steps"] if aliases else []), dest="propagation_steps", type=int, default=S, metavar="N",
                   help=f"PropDPM sampling steps per frame (default: {d.propagation_steps})")
    g.add_argument("--propagation-guidance-scale", *(["--guidance-scale"] if aliases else []), dest="propagation_guidance_scale",
                   type=float, default=S, metavar="G",
                   help=f"guidance on the reference; 1 = none, one forward per step (default: {d.propagation_guidance_scale:g})")
    g.add_argument("--model", default=S, metavar="PATH", help="propagation model folder (default: the embedded tiny model)")
    g.add_argument("--depth", default=S, metavar="D.npz", help="depth of the clip from `magicprop depth` (default: estimate it)")
    g.add_argument("--depth-model", default=S, metavar="ID|PATH", help=f"depth estimator (default: {d.depth_model})")
    r = p.add_argument_group("run")
    r.add_argument("--seed", type=int, default=S, help="seed of both stages (default: random, written to OUT.json)")
    r.add_argument("--max-pixels", type=int, default=S, metavar="N",
                   help="pixel budget of the diffusion models (default: 512x512); flow, chain, lut and copy work at the clip's own "
                        "size unless it is given, and are then capped by it too (e.g. --max-pixels 2073600 for at most 1080p)")
    r.add_argument("--crf", type=int, default=S, metavar="Q",
                   help=f"quality of the mp4 outputs: 0 lossless, 16 visually lossless, 23 x264's default, 51 worst (default: {d.crf}); "
                        "`-o DIR/` writes numbered PNGs instead (lossless)")
    r.add_argument("--device", default=S, help="cpu, cuda, cuda:1 or mps (default: the best available)")
    r.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=S, help="default: fp16 on CUDA, fp32 elsewhere")
    r.add_argument("--cpu-offload", action="store_true", default=S, help="keep models on the CPU until their turn (small GPUs)")
    r.add_argument("--allow-pickle", action="store_true", default=S, help="let .bin/.ckpt weights load (only for files you trust)")
    r.add_argument("--resume", action="store_true", default=S, help="continue a killed run from OUT.mp4.magicprop-work/ (without --seed: with the seed it recorded)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..jobs import EditJob

    d = EditJob("", "")
    add_io_arguments(p)
    g = p.add_argument_group("stage I (keyframe edit)")
    g.add_argument("--prompt", default=S, help="the edit, e.g. 'a flamingo in snowy day'")
    g.add_argument("--negative-prompt", default=S, metavar="N", help="what to keep out of the keyframe")
    g.add_argument("--mask", default=S, metavar="M.png", help="keyframe mask: repaint only inside it (local edit)")
    g.add_argument("--mask-point", dest="mask_points", type=point, action="append", default=S, metavar="X,Y",
                   help="click on the object to edit (repeatable): its keyframe mask comes from SAM")
    # --steps and --guidance-scale are the older spellings, kept for scripts
    g.add_argument("--keyframe-steps", "--steps", dest="steps", type=int, default=S, metavar="N", help=f"keyframe sampling steps (default: {d.steps})")
    g.add_argument("--keyframe-guidance-scale", "--guidance-scale", dest="guidance_scale", type=float, default=S, metavar="G",
                   help=f"prompt guidance (default: {d.guidance_scale:g})")
    g.add_argument("--strength", type=float, default=S, metavar="S",
                   help="in (0, 1]: start from the frame and keep more of it (default: paint from noise; 1 with a mask)")
    g.add_argument("--keyframe-strength", type=float, default=S, metavar="S",
                   help=f"with --keyframes auto|I,J,K: how freely stage I repaints each later keyframe from the edit carried to it (default: {d.keyframe_strength:g})")
    g.add_argument("--base-model", default=S, metavar="ID|PATH", help=f"SD 1.x model (default: {d.base_model})")
    g.add_argument("--controlnet", default=S, metavar="ID|PATH", help=f"depth ControlNet (default: {d.controlnet})")
    g.add_argument("--sam-model", default=S, metavar="ID|PATH", help=f"Segment Anything for --mask-point (default: {d.sam_model})")
    add_stage2_arguments(p)


def job_from_args(args: argparse.Namespace):
    """Defaults < --config file < flags given on the command line."""
    from ..jobs import EditJob, load_config

    from ..keyframes.series import is_frame_list

    names = {f.name for f in dataclasses.fields(EditJob)}
    values = load_config(args.config) if getattr(args, "config", None) else {}
    flags = {k: v for k, v in vars(args).items() if k in names}
    if is_frame_list(flags.get("keyframes")):  # --keyframes auto|I,J,K: frames for stage I, not a folder of edits
        flags["edit_keyframes"] = flags.pop("keyframes")
        values.pop("keyframes", None)
    values.update(flags)
    config = getattr(args, "config", None)
    return EditJob.from_mapping(values, where=f"--config {config} with the command line" if config else "command line")


def report(record: dict, output: str) -> None:
    from ..jobs import Outputs

    o, src = Outputs.of(output), record["source"]
    print(f"wrote {o.video} ({src['frames']} frames, {src['width']}x{src['height']}, {src['fps']:g} fps), {o.keyframe.name}, "
          f"{o.comparison.name}, {o.json.name} in {record['seconds']:g} s; seed {record['settings']['seed']}, "
          f"keyframe{'s' if len(record['keyframe_indices']) > 1 else ''} {', '.join(map(str, record['keyframe_indices']))}")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ..jobs import run_job

    job = job_from_args(args)
    report(run_job(job, command=NAME), job.output)
    return 0
