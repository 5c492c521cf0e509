"""What `magicprop edit`, `magicprop propagate` and `magicprop batch` share: a job's settings, config files, and
running one job from files to files.

A finished job OUT.mp4 leaves four files beside each other, written atomically, OUT.json last (its presence marks the
job complete):
    OUT.mp4             the edited clip, at the source's size and frame rate (`-o DIR/`: a folder of numbered PNGs)
    OUT.keyframe.png    the edited keyframe
    OUT.comparison.mp4  source | edited, labelled (a preview: each panel at most 720 px tall)
    OUT.json            every setting (seed and resolved keyframe index included), model ids and library versions;
                        `magicprop edit VIDEO --config OUT.json -o OUT2.mp4` runs it again
While it runs, finished work is kept in OUT.mp4.magicprop-work/ so `--resume` continues a killed run; it is removed
once the outputs are written. The clip is streamed: frames are decoded as the propagator reads them, and each edited
frame is written to OUT.mp4 and the comparison as it comes, so memory does not grow with the clip's length.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError, first_line
from .fileio import atomic_write_json, check_output_path, expand_user, natural_key, remove_stale_temporaries, require_file
from .hub import DEFAULT_IDS, PIPELINE_IDS
from .integrity import recorded_seed
from .propagation import resolve
from .torch_state import entropy_seed, seeded_generator

logger = logging.getLogger(__name__)


@dataclass
class EditJob:
    video: str
    output: str
    prompt: str | None = None
    negative_prompt: str | None = None
    mask: str | None = None  # keyframe mask image: SD repaints only inside it
    masks: str | None = None  # folder of per-frame mask images (numbered): the output keeps the source outside them
    mask_points: list[list[float]] | None = None  # [[x, y], ...] clicks on the keyframe -> its mask, with SAM
    keyframe_index: int | str = "auto"
    keyframe_image: str | None = None  # a keyframe edited in another tool (instead of a prompt)
    keyframes: str | None = None  # a folder of several edited keyframes, each named by its frame index (0.png, 31.png)
    edit_keyframes: str | None = None  # frames stage I edits from the prompt, in order ("0,40,79"), or "auto" (suggested)
    keyframe_strength: float = 0.5  # img2img strength of stage I on the later ones (editing.KEYFRAME_STRENGTH)
    temporal_blend: float | None = None  # flow's steadiness in [0, 1) (PropagationSettings.temporal_blend); None: 0.65
    seed: int | None = None  # None draws one; OUT.json records it
    steps: int = 30  # stage I sampling steps
    guidance_scale: float = 7.5
    strength: float | None = None  # None: paint the keyframe from noise; (0, 1]: start from the frame
    propagation_steps: int = 25
    propagation_guidance_scale: float = 1.0
    propagator: str = "auto"  # a name in magicprop.propagation.PROPAGATORS, or auto: propdpm with --model, else flow
    model: str | None = None  # propagation model folder; None = the embedded tiny model
    base_model: str = DEFAULT_IDS["sd15"]
    controlnet: str = DEFAULT_IDS["controlnet_depth"]
    depth_model: str = DEFAULT_IDS["depth"]
    sam_model: str = DEFAULT_IDS["sam"]
    depth: str | None = None  # a depth .npz (from `magicprop depth`) instead of estimating it
    # None: the diffusion models work within 512x512 and the weight-free propagators at the source's size; a number is
    # the models' budget and caps the weight-free ones too (frames always come back at the source's size)
    max_pixels: int | None = None
    crf: int = 16  # quality of the mp4/webm outputs: x264's scale, 0 lossless, 16 visually lossless, 23 x264's default
    feather: int | None = None  # soft edge of per-frame masks, in source pixels; None = 1% of the longer side
    device: str | None = None
    dtype: str | None = None
    cpu_offload: bool = False
    allow_pickle: bool = False
    resume: bool = False

    @classmethod
    def from_mapping(cls, values: dict[str, Any], *, where: str = "job") -> "EditJob":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UsageError(f"{where}: unknown setting(s) {', '.join(unknown)}; valid ones are {', '.join(sorted(names))}")
        missing = [n for n in ("video", "output") if not values.get(n)]
        if missing:
            raise UsageError(f"{where}: missing {' and '.join(missing)}")
        # Config files and batch lines are typed by hand: `"seed": "zero"` must fail here, not deep inside torch.
        hints = typing.get_type_hints(cls)
        for name, value in values.items():
            if not _is_a(value, hints[name]):
                raise UsageError(f"{where}: {name} must be {_type_name(hints[name])}, got {json.dumps(value, default=str)[:60]}")
        return cls(**values)


def _is_a(value: Any, hint: Any) -> bool:
    """Whether a JSON/YAML value fits a field's annotation (int | str, list[list[float]] | None, ...)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_is_a(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_is_a(v, typing.get_args(hint)[0]) for v in value)
    if hint is float:  # JSON writes 1.0 as 1
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    return names.get(hint, "a list of [x, y] points" if typing.get_origin(hint) is list else str(hint))


# Settings that describe a result (written to OUT.json and read back by --config); the rest name files or the run.
RUN_ONLY = ("video", "output", "resume")
PATH_SETTINGS = ("mask", "masks", "keyframe_image", "keyframes", "depth")
MODEL_SETTINGS = ("model", "base_model", "controlnet", "depth_model", "sam_model")


def load_config(path: str | Path) -> dict[str, Any]:
    """Settings from a JSON or YAML file: an OUT.json written by a run (its "settings") or a flat mapping of EditJob
    fields. Relative paths in it are taken relative to the file."""
    import yaml

    path = require_file(path, "config file")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, IsADirectoryError):
        raise UsageError(f"config {path} is not a JSON or YAML text file") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"config {path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise UsageError(f"config {path} must hold a mapping of settings, got {type(data).__name__}")
    data = data.get("settings", data)
    if not isinstance(data, dict):
        raise UsageError(f"config {path}: \"settings\" must hold a mapping of settings, got {type(data).__name__}")
    data = dict(data)
    for key in RUN_ONLY:
        data.pop(key, None)  # the command line names the input and output
    names = {f.name for f in dataclasses.fields(EditJob)}
    unknown = sorted(str(k) for k in set(data) - names)  # YAML keys may be numbers
    if unknown:
        raise UsageError(f"config {path}: unknown setting(s) {', '.join(unknown)}; valid ones are {', '.join(sorted(names - set(RUN_ONLY)))}")
    return resolve_paths(data, path.parent)


def resolve_paths(values: dict[str, Any], base: Path) -> dict[str, Any]:
    """File settings made absolute against `base`; model settings too when such a folder exists (else a hub id)."""
    out = dict(values)
    for key, value in out.items():
        if not value or not isinstance(value, str) or expand_user(value).is_absolute():
            continue
        if key in (*PATH_SETTINGS, "video", "output") or (key in MODEL_SETTINGS and (base / value).exists()):
            out[key] = str(base / expand_user(value))
    return out


@dataclass
class Outputs:
    video: Path
    keyframe: Path
    comparison: Path
    json: Path
    work: Path

    @classmethod
    def of(cls, output: str | Path) -> "Outputs":
        out = Path(output)
        suffix = out.suffix or ".mp4"
        stem = out.with_suffix("") if out.suffix else out
        return cls(out, Path(f"{stem}.keyframe.png"), Path(f"{stem}.comparison{suffix}"), Path(f"{stem}.json"), Path(f"{out}.magicprop-work"))

    def complete(self) -> bool:
        return self.video.exists() and self.json.is_file()

    def tidy(self) -> None:
        """Remove what a kill can leave beside complete outputs: writers' temporaries, and the work folder when the
        run was killed between writing OUT.json and removing it."""
        for path in (self.video, self.keyframe, self.comparison, self.json):
            remove_stale_temporaries(path)
        shutil.rmtree(self.work, ignore_errors=True)


@dataclass
class PipelineCache:
    """One pipeline per set of models, reused across the jobs of a batch."""

    pipelines: dict = field(default_factory=dict)

    def get(self, job: EditJob):
        from .pipeline import MagicPropPipeline  # here, not at the top: torch loads only when a job runs (fast --help)

        key = (job.propagator, job.model, job.base_model, job.controlnet, job.depth_model, job.sam_model, job.device,
               job.dtype, job.cpu_offload, job.allow_pickle)  # fmt: skip
        if key not in self.pipelines:
            self.pipelines[key] = MagicPropPipeline.from_pretrained(
                job.base_model, job.controlnet, job.model, job.depth_model, sam_model=job.sam_model, propagator=job.propagator,
                device=job.device, torch_dtype=job.dtype, enable_model_cpu_offload=job.cpu_offload, allow_pickle=job.allow_pickle,
            )  # fmt: skip
        return self.pipelines[key]


def run_job(job: EditJob, *, cache: PipelineCache | None = None, command: str = "edit") -> dict[str, Any]:
    """Run one job from files to files (see the module docstring); returns what OUT.json holds."""
    from . import __version__
    from .inputs import MaskFiles, check_call_inputs, check_max_pixels
    from .keyframes.series import check_series, parse_frame_list
    from .propagation import PropagationSettings
    from .video import Frames, VideoWriter, load_mask, resize_frames, save_image, side_by_side

    t0 = time.time()
    # 1. Check inputs and outputs before loading anything: a typo costs nothing, an input is never overwritten
    require_file(job.video, "video")
    resolve(job.propagator, model_given=job.model is not None)  # an unknown name fails here, naming the choices
    if job.keyframes and (job.keyframe_image or job.prompt):
        raise UsageError("give either --keyframes DIR (several edited keyframes) or one --keyframe-image / --prompt, not both")
    keyframe_paths = keyframe_files(job.keyframes) if job.keyframes else None
    series = parse_frame_list(job.edit_keyframes)  # several keyframes for stage I ("auto" or frame indices)
    check_series(series, prompt=job.prompt, keyframe_image=job.keyframe_image, keyframes_folder=job.keyframes, strength=job.keyframe_strength)
    check_call_inputs(job.prompt, keyframe_paths or job.keyframe_image, job.mask or job.masks, job.mask_points, job.strength)
    PropagationSettings(temporal_blend=job.temporal_blend)  # out of [0, 1): the one-line error, before any work
    if job.mask and job.masks:
        raise UsageError("give either --mask (the keyframe's) or --masks (one per frame), not both")
    for what, path in (("mask", job.mask), ("keyframe image", job.keyframe_image), ("depth file", job.depth)):
        if path:
            require_file(path, what)
    if job.masks and not Path(job.masks).is_dir():
        raise UsageError(f"--masks must be a folder of numbered mask images, got {job.masks}")
    check_max_pixels(job.max_pixels)
    if not 0 <= job.crf <= 51:
        raise UsageError(f"--crf must be between 0 (lossless) and 51 (x264's scale; 16 is visually lossless), got {job.crf}")
    outputs = Outputs.of(job.output)
    inputs = [p for p in (job.video, job.mask, job.keyframe_image, job.depth, job.masks, *(keyframe_paths or {}).values()) if p]
    for path in (outputs.video, outputs.keyframe, outputs.comparison, outputs.json):
        check_output_path(path, *inputs)
        remove_stale_temporaries(path)  # what a killed earlier run of this job was writing
    seed = job_seed(job, outputs.work)
    uses_models = any(_used(key, job) for key in PIPELINE_IDS)  # else a weight-free job: it never imports torch

    # 2. Load every model this job needs (a missing one fails here, in one line)
    pipe = (cache or PipelineCache()).get(job)
    pipe.prepare(prompt=job.prompt, depth=job.depth, mask_points=job.mask_points)

    # 3. Open the clip (read lazily) and its masks (read one frame at a time)
    source = Frames.open(job.video)
    size = source.shape[1:3]
    mask = None
    if job.mask:
        mask = load_mask(job.mask, size)
    elif job.masks:
        mask = MaskFiles(mask_files(job.masks, len(source)), size)

    for index, path in (keyframe_paths or {}).items():
        if not -len(source) <= index < len(source):
            raise UsageError(f"{path} names frame {index} but the clip has {len(source)} frames (0..{len(source) - 1}); rename it to a frame inside the clip")

    # 4. Edit, then propagate while writing: each frame goes to both videos as it comes (the outputs appear, renamed
    # into place, only when every frame is written; a failure leaves any earlier output as it was)
    out = pipe(
        source, prompt=job.prompt, negative_prompt=job.negative_prompt, mask=mask, keyframe_index=job.keyframe_index,
        keyframe_image=keyframe_paths or job.keyframe_image, num_inference_steps=job.steps, guidance_scale=job.guidance_scale,
        strength=job.strength, propagation_steps=job.propagation_steps, propagation_guidance_scale=job.propagation_guidance_scale,
        generator=seeded_generator(seed) if uses_models else None, depth=job.depth, max_pixels=job.max_pixels, work_dir=outputs.work,
        resume=job.resume, mask_points=[tuple(p) for p in job.mask_points] if job.mask_points else None, feather=job.feather,
        keyframe_indices=series, keyframe_strength=job.keyframe_strength, temporal_blend=job.temporal_blend,
        output_type="iterator",
    )  # fmt: skip
    preview = comparison_size(size)
    # the comparison is a preview: x264's shortest lookahead holds its encoder to 0.16 GB for a 4K clip (0.52 GB at 1080
    # px panels with the default)
    with VideoWriter(outputs.video, source.fps, crf=job.crf) as edited, \
            VideoWriter(outputs.comparison, source.fps, crf=job.crf, lookahead=10) as comparison:
        for t, frame in enumerate(out.frames):
            edited.write(frame)
            panels = [resize_frames(f, preview)[None] for f in (source[t], frame)]
            comparison.write(side_by_side(panels, ["source", "edited"])[0])
    source.close()

    # 5. The keyframe, then the record last
    save_image(outputs.keyframe, out.keyframe)
    settings = {k: v for k, v in dataclasses.asdict(job).items() if k not in RUN_ONLY}
    settings = {**resolve_paths(settings, Path.cwd()), "seed": seed, "keyframe_index": out.keyframe_index,  # absolute paths
                "propagator": resolve(job.propagator, model_given=job.model is not None).name}  # "auto" as resolved
    record = {
        "command": f"magicprop {command} {Path(job.video).resolve()} --config {outputs.json.resolve()} -o OTHER.mp4",
        "video": str(Path(job.video).resolve()),
        "output": str(outputs.video.resolve()),
        "settings": settings,
        "keyframe_indices": sorted(i % len(source) for i in keyframe_paths) if keyframe_paths else sorted(out.keyframe_indices),
        "keyframe_match": out.keyframe_match.as_dict() if out.keyframe_match is not None else None,
        "models": {k: str(Path(v).resolve()) if v and Path(v).exists() else v for k, v in pipe.model_ids.items() if _used(k, job)},
        "source": {"frames": len(source), "height": int(size[0]), "width": int(size[1]), "fps": source.fps},
        "working_size": list(out.sizes.working),  # where the diffusion models ran
        "propagation_size": list(out.sizes.propagation),  # what the propagator read and rendered
        "environment": _environment(pipe, __version__, uses_models),
        "seconds": round(time.time() - t0, 2),
    }
    atomic_write_json(outputs.json, record)
    shutil.rmtree(outputs.work, ignore_errors=True)
    return record


def comparison_size(size: tuple[int, int], max_height: int = 720) -> tuple[int, int]:
    """(H, W) of each panel of OUT.comparison.mp4: the clip's size, at most `max_height` tall (a 4K comparison would be
    7680 px wide, and its encoder alone would hold 2.6 GB)."""
    h, w = size
    if h <= max_height:
        return (h, w)
    return (max_height, max(1, round(w * max_height / h)))


def job_seed(job: EditJob, work: Path) -> int:
    """--seed; else, with --resume, the seed the killed run recorded in its work folder (said in one line), so the
    command given the first time resumes as it is; else a new one (OUT.json records it)."""
    if job.seed is not None:
        return job.seed
    recorded = recorded_seed(work) if job.resume else None
    if recorded is None:
        return entropy_seed()
    logger.info("resuming with seed %d, the seed the killed run recorded in %s", recorded, work)
    return recorded


def keyframe_files(folder: str | Path) -> dict[int, Path]:
    """Several edited keyframes: the folder's .png/.jpg images, each named by the frame it replaces (the last number in
    its name: 12.png, frame_0012.jpg; negative counts from the end: -1.png)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--keyframes must be a folder of edited keyframes named by frame index (0.png, 31.png), got {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg") and not p.name.startswith("."))
    if not files:
        raise UsageError(f"{folder} holds no .png/.jpg keyframes; name each edited keyframe by its frame index, e.g. 0.png")
    found: dict[int, Path] = {}
    for path in files:
        numbers = re.findall(r"(?:^-)?\d+", path.stem)  # "bear-12" is frame 12; "-1" alone counts from the end
        if not numbers:
            raise UsageError(f"keyframe {path} has no frame index in its name; rename it to the frame it replaces, e.g. 12.png")
        index = int(numbers[-1])
        if index in found:
            raise UsageError(f"keyframes {found[index].name} and {path.name} both name frame {index}; keep one")
        found[index] = path
    return found


def mask_files(folder: str | Path, num_frames: int) -> list[Path]:
    """The folder's .png/.jpg masks in natural order (2.png before 10.png); one per frame."""
    files = [p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg") and not p.name.startswith(".")]
    files.sort(key=natural_key)
    if len(files) != num_frames:
        raise UsageError(f"{folder} holds {len(files)} mask images but the clip has {num_frames} frames; give one mask per frame")
    return files


def _used(key: str, job: EditJob) -> bool:
    """Whether the job needed this model (OUT.json lists only those)."""
    propagator = resolve(job.propagator, model_given=job.model is not None)
    return {
        "base_model": bool(job.prompt), "controlnet": bool(job.prompt), "sam_model": bool(job.mask_points),
        "depth_model": job.depth is None and (propagator.needs_depth or bool(job.prompt)),
        "propagation_model": propagator.needs_model,
    }.get(key, True)  # fmt: skip


def _environment(pipe, version: str, uses_models: bool) -> dict[str, str]:
    from importlib.metadata import version as installed  # not the packages: a weight-free run never imports torch

    # a weight-free job computes on the CPU (numba, float32 maps); asking the pipeline its device would import torch
    device, dtype = (str(pipe.device), str(pipe.dtype).replace("torch.", "")) if uses_models else ("cpu", "float32")
    return {"magicprop": version, "torch": installed("torch"), "diffusers": installed("diffusers"),
            "transformers": installed("transformers"), "device": device, "dtype": dtype}  # fmt: skip
