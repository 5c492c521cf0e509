"""Motion signals: per-frame depth from a transformers depth model, normalised once over the whole clip.

PropDPM reads the target frame's depth and the previous frame's depth (paper, section 3.2), so depth must be consistent
in time: the paper uses TCMonoDepth for that. Monocular models such as Depth Anything predict relative disparity up to
an unknown scale and shift *per frame*; normalising each frame by its own min and max makes the whole scene pulse when
an object enters or leaves. We map the clip with one affine transform chosen from robust percentiles over all frames,
so a frame keeps its depth relative to its neighbours.

Conventions everywhere in magicprop: depth is float32 (T, H, W) in [0, 1], 1 = nearest (disparity-like, as the
ControlNet depth models expect), and on disk it is a `.npz` with the key "depth" (and a JSON "meta" string).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..devices import resolve_device, resolve_dtype
from ..errors import MagicPropError, UsageError, first_line
from ..hub import DEFAULT_IDS
from ..fileio import PathLike, atomic_save_npz, expand_user, require_file
from ..video import Frames

logger = logging.getLogger(__name__)

DEFAULT_DEPTH_MODEL = DEFAULT_IDS["depth"]
# Models whose output is metric depth (larger = farther); we turn it into disparity so that larger is always nearer.
_METRIC_MODEL_TYPES = ("zoedepth", "glpn", "depth_pro")
MAX_MODEL_ASPECT = 4.0  # longer side / shorter side of the frames a depth model sees (see DepthEstimator.__call__)
_PERCENTILE_SAMPLES = 4_000_000  # enough values for stable percentiles; sorting 300 full-HD frames would take seconds


class DepthEstimator:
    """A transformers depth model and its image processor: frames in, relative disparity at frame size out."""

    def __init__(self, model: Any, processor: Any, model_id: str, *, metric: bool = False) -> None:
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id
        self.metric = metric  # the model predicts distance, not disparity (converted in __call__)

    @classmethod
    def from_pretrained(
        cls, model_id_or_path: str = DEFAULT_DEPTH_MODEL, *, device: str | None = None, dtype: Any = None,
        allow_pickle: bool = False,
    ) -> DepthEstimator:
        """Load any `AutoModelForDepthEstimation` (Depth Anything, DPT, ...) by hub id or local folder.

        device: "cpu", "cuda", "mps" (default: the best available). dtype: torch dtype (default float16 on CUDA,
        float32 elsewhere). A missing model fails at once with a line naming it; a folder that is not a depth model is
        a usage error. allow_pickle: let .bin weights load (only for files you trust); otherwise safetensors only.
        """
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        from ..hub import load_component

        name = str(model_id_or_path)
        local = expand_user(name)
        if local.is_dir():
            _check_depth_folder(local)
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        try:
            model = load_component(
                AutoModelForDepthEstimation, name, what="depth model", flag="--depth-model", dtype=dtype, allow_pickle=allow_pickle
            )
        except UsageError:
            raise
        except MagicPropError as exc:  # a local folder we could read but not load is the user's input, not a runtime fault
            if local.is_dir():
                raise UsageError(str(exc)) from None
            raise
        # The processor sits beside the weights, so wherever the model came from (cache or folder) it is there too.
        processor = _load_processor(AutoImageProcessor, str(local) if local.is_dir() else name)
        config = model.config
        metric = getattr(config, "depth_estimation_type", "relative") == "metric" or config.model_type in _METRIC_MODEL_TYPES
        logger.debug("depth model %s on %s (%s)", name, device, dtype)
        return cls(model.to(device), processor, name, metric=metric)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def __call__(self, frames: np.ndarray | Frames, *, batch_size: int = 8, progress: bool = True) -> np.ndarray:
        """(T, H, W, 3) uint8 (an array or a lazy `video.Frames`, read one batch at a time) -> raw relative disparity
        (T, H, W) float32 at frame size (larger = nearer, any scale)."""
        import torch
        import torch.nn.functional as F
        from tqdm.auto import tqdm

        frames = _check_frames(frames)
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {batch_size}")
        t, h, w = frames.shape[:3]
        # Processors keep the aspect ratio while fitting a fixed size, so a 16x256 strip would shrink to a few pixels (or
        # none) on its short side. The model sees such strips stretched to 4:1; its prediction is resized to (h, w) anyway.
        if max(h, w) > MAX_MODEL_ASPECT * min(h, w):
            frames = frames.resized((max(h, math.ceil(w / MAX_MODEL_ASPECT)), max(w, math.ceil(h / MAX_MODEL_ASPECT))))
        dtype = next(self.model.parameters()).dtype
        out = np.empty((t, h, w), np.float32)
        starts = range(0, t, batch_size)
        for i in tqdm(starts, desc="depth", unit="batch", disable=not progress or len(starts) < 2, leave=False):
            batch = list(frames[i : i + batch_size])
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device, dtype)
            with torch.inference_mode():
                pred = self.model(pixel_values=pixels).predicted_depth  # (B, h', w'), the processor's working size
            # Bilinear, not bicubic: bicubic overshoots at depth edges and can make disparity negative.
            pred = F.interpolate(pred[:, None].float(), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
            if self.metric:
                pred = 1.0 / pred.clamp_min(1e-3)
            out[i : i + len(batch)] = pred.cpu().numpy()
        return out


def _check_depth_folder(folder: Path) -> None:
    """Refuse, with one line, a folder that holds no depth model (before transformers says something longer)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_DEPTH_ESTIMATION_MAPPING

    hint = f"pass a depth model folder (config.json, weights, preprocessor_config.json) with --depth-model, e.g. {DEFAULT_DEPTH_MODEL}"
    if not (folder / "config.json").is_file():
        raise UsageError(f"{folder} has no config.json, so it is not a depth model; {hint}")
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{folder}/config.json is not a transformers config ({first_line(exc, 120)}); {hint}") from None
    if type(config) not in MODEL_FOR_DEPTH_ESTIMATION_MAPPING:
        raise UsageError(f"{folder} holds a {config.model_type!r} model, not a depth model; {hint}")


def _load_processor(auto_cls: Any, name: str) -> Any:
    for local_only in (True, False):
        try:
            return auto_cls.from_pretrained(name, local_files_only=local_only)
        except (OSError, ValueError, KeyError):
            if not local_only:
                break
    raise UsageError(f"depth model {name} has no image processor (preprocessor_config.json); add it, or pass another --depth-model")


def _check_frames(frames: np.ndarray | Frames) -> Frames:
    """The frames as a `Frames` (an array is wrapped, not copied), checked to be uint8 (T, H, W, 3)."""
    if not isinstance(frames, Frames):
        frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise UsageError(
            f"frames must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}; read them with magicprop.video.read_video"
        )
    return frames if isinstance(frames, Frames) else Frames.from_array(frames)


# ---------------------------------------------------------------------------------------------------------------------
# Normalising, resizing, showing
# ---------------------------------------------------------------------------------------------------------------------
def normalize_clip_depth(raw: np.ndarray, *, low_q: float = 0.01, high_q: float = 0.99) -> np.ndarray:
    """Raw disparity (T, H, W) -> [0, 1] with ONE affine map for the clip: the low_q percentile of all frames goes to 0,
    high_q to 1, then clip. Larger raw values (nearer) stay larger. A flat clip (no depth cue) becomes 0.5 everywhere."""
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 3:
        raise UsageError(f"depth must be (T, H, W), got shape {raw.shape}")
    if not 0.0 <= low_q < high_q <= 1.0:
        raise UsageError(f"percentiles must satisfy 0 <= low_q < high_q <= 1, got {low_q} and {high_q}")
    # A regular subsample over all frames: every frame counts, and the cost no longer grows with the clip.
    step = max(1, int(np.sqrt(raw.size / _PERCENTILE_SAMPLES)))
    values = raw[:, ::step, ::step]
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise UsageError("depth has no finite values; the depth model failed on this clip (try --device cpu)")
    lo, hi = np.quantile(values, [low_q, high_q])
    if not hi - lo > 1e-6 * max(abs(hi), abs(lo)):  # relative: a model's disparity may be on any scale
        return np.full(raw.shape, 0.5, np.float32)
    out = np.subtract(raw, np.float32(lo), dtype=np.float32)  # one new array, worked on in place: a long clip's depth
    out /= np.float32(hi - lo)  # is the largest thing a run holds
    np.nan_to_num(out, copy=False, nan=0.0)
    return np.clip(out, 0.0, 1.0, out=out)


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W) -> (T, h, w) with size = (h, w): area averaging when shrinking (no aliasing), bilinear when growing."""
    depth = np.asarray(depth, dtype=np.float32)
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise UsageError(f"depth size must be positive, got {h}x{w}")
    if depth.shape[1:] == (h, w):
        return depth
    interp = cv2.INTER_AREA if h <= depth.shape[1] and w <= depth.shape[2] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(d, (w, h), interpolation=interp) for d in depth]).astype(np.float32)


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """(T, H, W) in [0, 1] -> (T, H, W, 3) uint8 RGB with the inferno colour map: near is bright yellow, far is black."""
    depth = np.asarray(depth, dtype=np.float32)
    t, h, w = depth.shape
    grey = np.clip(np.nan_to_num(depth) * 255.0 + 0.5, 0, 255).astype(np.uint8).reshape(t * h, w)
    bgr = cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO)
    return np.ascontiguousarray(bgr[..., ::-1]).reshape(t, h, w, 3)


# ---------------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------------
def save_depth(path: PathLike, depth: np.ndarray, **meta: Any) -> Path:
    """Write depth (T, H, W) in [0, 1] (1 = nearest) to a .npz atomically, with `meta` as a JSON string under "meta"."""
    depth = _validate_depth(np.asarray(depth), str(path))
    atomic_save_npz(path, depth=depth.astype(np.float32), meta=np.array(json.dumps(meta, sort_keys=True, default=str)))
    return Path(path)


def load_depth(path: PathLike, *, size: tuple[int, int] | None = None, frames: int | None = None) -> np.ndarray:
    """Read and check a depth .npz: (T, H, W) float32 in [0, 1]; resized to size = (H, W) when given."""
    path = require_file(path, "depth file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "depth" not in data.files:
                raise UsageError(
                    f"{path} has no 'depth' array (it has {', '.join(data.files) or 'nothing'}); write depth files with "
                    "`magicprop depth` or magicprop.motion.save_depth"
                )
            depth = data["depth"]
    except UsageError:
        raise
    except Exception as exc:  # zip, pickle and format errors all mean the same thing to the user
        reason = f"{type(exc).__name__}: {str(exc)[:100]}"
        raise UsageError(f"{path} is not a readable .npz ({reason}); write it again with `magicprop depth`") from None
    depth = _validate_depth(depth, str(path))
    if frames is not None and len(depth) != frames:
        raise UsageError(
            f"depth has {len(depth)} frames but the clip has {frames}; run `magicprop depth` on this clip (with the same --max-frames)"
        )
    return resize_depth(depth, size) if size is not None else depth.astype(np.float32)


def given_depth(depth: PathLike | np.ndarray, frames: int, size: tuple[int, int]) -> np.ndarray:
    """A depth the user gave (a .npz path or a (T, H, W) array) checked against the clip's length, at `size`."""
    if isinstance(depth, (str, os.PathLike)):
        return load_depth(depth, size=size, frames=frames)
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 3 or len(depth) != frames:
        raise UsageError(f"depth must be (T, H, W) with T = {frames} frames, got shape {depth.shape}")
    return resize_depth(depth, size)


def _validate_depth(depth: np.ndarray, where: str) -> np.ndarray:
    if depth.ndim != 3:
        raise UsageError(f"depth in {where} must be (T, H, W), got shape {depth.shape}; stack single maps with depth[None]")
    if not np.issubdtype(depth.dtype, np.floating):
        raise UsageError(f"depth in {where} must be floating point in [0, 1], got {depth.dtype}; divide 8-bit maps by 255")
    if not np.isfinite(depth).all():
        raise UsageError(f"depth in {where} has NaN or infinite values; estimate it again")
    lo, hi = float(depth.min()), float(depth.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise UsageError(
            f"depth in {where} spans [{lo:.3g}, {hi:.3g}], not [0, 1]; normalise it with magicprop.motion.normalize_clip_depth"
        )
    return np.clip(depth, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------------------------------
# The whole step, cached
# ---------------------------------------------------------------------------------------------------------------------
def depth_cache_key(frames: np.ndarray | Frames, model_id: str, size: tuple[int, int] | None) -> str:
    """sha256 over the frames (an array's bytes, one frame at a time; a `Frames`' identity), their shape, the model
    and the output size: any change gives a new entry."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"shape": list(frames.shape), "dtype": str(frames.dtype), "model": model_id,
                              "size": list(size) if size else None}).encode())  # fmt: skip
    if isinstance(frames, Frames):
        digest.update(frames.identity.encode())
    else:
        for frame in np.asarray(frames):
            digest.update(np.ascontiguousarray(frame).data)
    return digest.hexdigest()


def estimate_clip_depth(
    frames: np.ndarray | Frames,
    estimator: DepthEstimator,
    *,
    cache_dir: PathLike | None = None,
    size: tuple[int, int] | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> np.ndarray:
    """Depth of a clip normalised over the clip: (T, H, W) in [0, 1], 1 = nearest; (T, *size) when size is given.

    With `cache_dir`, the result is stored as a depth .npz named by `depth_cache_key` and reused on the next call with
    the same frames, model and size (the model is not run). A damaged cache file is recomputed and replaced.
    """
    checked = _check_frames(frames)
    key = depth_cache_key(frames if isinstance(frames, Frames) else np.asarray(frames), estimator.model_id, size)
    frames = checked
    cached = Path(cache_dir) / f"depth-{key[:40]}.npz" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        try:
            return load_depth(cached, frames=len(frames))
        except UsageError as exc:
            logger.warning("ignoring damaged depth cache %s (%s); recomputing", cached, exc)
    depth = normalize_clip_depth(estimator(frames, batch_size=batch_size, progress=progress))
    if size is not None:
        depth = np.clip(resize_depth(depth, size), 0.0, 1.0)
    if cached is not None:
        save_depth(cached, depth, model=estimator.model_id, key=key, frames=len(frames))
    return depth
