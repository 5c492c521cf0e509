"""A latent cache: decode, depth, VAE and CLIP once per clip instead of once per training step.

Layout of `CACHE/`:
    index.json                  format, sampling, encoders, latent size, the clips (file, source, frames), the skipped
    clips/00000042.safetensors  one per clip: every sampled frame's VAE posterior (mean and std, scaled, so training
                                still *samples* the target latent), its depth at the latent size, and the CLIP tokens
                                of the frames that may serve as reference (`clip_frames`; all frames by default)
    parts/rank-1.json           each process's list of done and skipped clips, merged into index.json by rank 0

Clips are split between processes with `accelerator.split_between_processes`; every file is written atomically and a
clip whose file exists is not computed again, so an interrupted precompute is finished by running it again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..errors import UsageError
from ..fileio import atomic_path, atomic_write_json, ensure_writable_dir
from ..models.encoders import clip_image_tokens, images_to_tensor
from .data import TRIPLET_FRAMES, DepthModelError, FrameSampling, RawTripletDataset, TripletIndex
from .sources import discover_clips

logger = logging.getLogger(__name__)

FORMAT = "magicprop-latent-cache/1"
INDEX = "index.json"


def is_cache(data: str | Path) -> bool:
    index = Path(str(data)) / INDEX
    if not index.is_file():
        return False
    try:
        return json.loads(index.read_text()).get("format") == FORMAT
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


@torch.no_grad()
def encode_clip(
    frames: np.ndarray, depth: np.ndarray, vae, image_encoder, reference_frames: list[int], batch: int = 16
) -> dict:
    """Tensors of one clip's cache file from its frames (T, R, R, 3) uint8 and depth (T, R, R)."""
    device = vae.device
    means, stds = [], []
    for start in range(0, len(frames), batch):
        x = images_to_tensor(frames[start : start + batch], device)  # (b, 3, R, R) in [0, 1]
        dist = vae.encode((x * 2 - 1).to(vae.dtype)).latent_dist
        means.append(dist.mean.float() * vae.config.scaling_factor)  # (b, 4, h, w), scaled as vae_encode scales
        stds.append(dist.std.float() * vae.config.scaling_factor)
    mean, std = torch.cat(means), torch.cat(stds)
    tokens = torch.cat([
        clip_image_tokens(image_encoder, images_to_tensor(frames[reference_frames[s : s + batch]], device))
        for s in range(0, len(reference_frames), batch)
    ])  # fmt: skip  (K, 1 + g, C)
    depth_t = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[:, None]  # (T, 1, R, R)
    depth_t = F.interpolate(depth_t, size=mean.shape[-2:], mode="area")  # (T, 1, h, w): the latent grid, as PropDPM reads it
    return {
        "latent_mean": mean.cpu().contiguous(),
        "latent_std": std.cpu().contiguous(),
        "depth": depth_t.contiguous(),
        "clip_tokens": tokens.to("cpu", torch.float16).contiguous(),  # half: tokens are most of the file
        "clip_frames": torch.tensor(reference_frames, dtype=torch.int64),
    }


def reference_frame_indices(num_frames: int, limit: int | None) -> list[int]:
    """All frames, or `limit` evenly spaced ones (at least 3, so a reference other than previous/target always exists)."""
    if not limit or limit >= num_frames:
        return list(range(num_frames))
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, max(limit, TRIPLET_FRAMES))})


def precompute(recipe, data: str, output_dir: str | Path, *, reference_frames: int | None = None, batch: int = 16) -> dict:
    """Fill `output_dir` with the cache of `data`; returns the index (on every process)."""
    from accelerate import Accelerator

    from .components import encoder_names, load_encoders

    # 1. Check inputs and find the clips (every process finds the same list, in the same order)
    accelerator = Accelerator()
    out = ensure_writable_dir(output_dir)
    if Path(str(data)).resolve() == out.resolve():
        raise UsageError(f"--output-dir {out} is the data folder; choose another folder for the cache")
    if reference_frames is not None and reference_frames < TRIPLET_FRAMES:
        raise UsageError(f"--reference-frames must be at least {TRIPLET_FRAMES}, got {reference_frames}")
    found = discover_clips(data, synthetic_edited=recipe.synthetic_edited)
    sampling = FrameSampling.from_recipe(recipe)
    dataset = RawTripletDataset(found.clips, sampling, recipe.seed, recipe.depth_model, found.missing, str(accelerator.device))
    first = dataset.check_usable()
    if first is not None and not found.clips[first].synthetic:
        dataset.load_depth_model()  # a missing model fails at once, with one line, not as skipped videos
    (out / "clips").mkdir(exist_ok=True)

    # 2. Frozen encoders on this process's device
    vae, image_encoder = load_encoders(recipe)
    vae.to(accelerator.device)
    image_encoder.to(accelerator.device)

    # 3. This process's share of the clips
    done, skipped = [], []
    with accelerator.split_between_processes(list(range(len(found.clips)))) as mine:
        for i in tqdm(mine, desc=f"precompute [{accelerator.process_index}]", disable=not accelerator.is_local_main_process):
            file = out / "clips" / f"{i:08d}.safetensors"
            entry = {"index": i, "file": f"clips/{file.name}", "source": str(found.clips[i])}
            if file.is_file():  # finished by an earlier, interrupted run
                with safe_open(str(file), "pt") as f:
                    done.append({**entry, "frames": int(f.metadata()["frames"])})
                continue
            try:
                clip = dataset.load(i)
                frames, depth = clip.frames, clip.depth
                if len(frames) < TRIPLET_FRAMES:
                    raise ValueError(f"only {len(frames)} sampled frames, a triplet needs {TRIPLET_FRAMES}")
            except DepthModelError:
                raise
            except Exception as exc:  # unreadable or too short: skipped and counted, never retried
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                logger.warning("skipped video %s: %s", found.clips[i], reason)
                skipped.append({"index": i, "source": str(found.clips[i]), "reason": reason})
                continue
            references = reference_frame_indices(len(frames), reference_frames)
            tensors = encode_clip(frames, depth, vae, image_encoder, references, batch)
            with atomic_path(file) as tmp:
                save_file(tensors, str(tmp), metadata={"source": str(found.clips[i]), "frames": str(len(frames))})
            done.append({**entry, "frames": len(frames)})
    atomic_write_json(out / "parts" / f"rank-{accelerator.process_index}.json", {"done": done, "skipped": skipped})

    # 4. Rank 0 merges every process's list into the index, once all are written
    accelerator.wait_for_everyone()
    index_path = out / INDEX
    if accelerator.is_main_process:
        parts = [json.loads(p.read_text()) for p in sorted((out / "parts").glob("rank-*.json"))]
        # by clip index: parts left by an earlier run with more processes may repeat clips
        clips = sorted({c["index"]: c for p in parts for c in p["done"]}.values(), key=lambda c: c["index"])
        ok = {c["index"] for c in clips}
        bad = [c for c in {c["index"]: c for p in parts for c in p["skipped"]}.values() if c["index"] not in ok]
        bad.sort(key=lambda c: c["index"])
        latent = _latent_size(out / clips[0]["file"]) if clips else None
        index = {
            "format": FORMAT,
            "sampling": dataclasses.asdict(sampling),  # resolution, frames_per_clip, frame_stride
            "encoders": encoder_names(recipe),
            "depth_model": recipe.depth_model,
            "latent_size": latent,
            "data": str(data),
            "clips": [{k: c[k] for k in ("file", "source", "frames")} for c in clips],
            "skipped": bad,
            "missing": found.missing,
        }
        atomic_write_json(index_path, index)
        logger.info("cached %d clips in %s; skipped %d videos (%d unreadable or too short, %d missing)",
                    len(clips), out, len(bad) + len(found.missing), len(bad), len(found.missing))  # fmt: skip
    accelerator.wait_for_everyone()
    return json.loads(index_path.read_text())


def _latent_size(file: Path) -> list[int]:
    with safe_open(str(file), "pt") as f:
        return list(f.get_slice("latent_mean").get_shape()[-2:])


class CachedTripletDataset(TripletIndex):
    """Triplets read from a cache: latents and tokens instead of pixels; only the three frames needed are read."""

    def __init__(self, cache: str | Path, seed: int, with_pp: bool = False):
        self.root = Path(cache)
        self.index = json.loads((self.root / INDEX).read_text())
        if not self.index["clips"]:
            skipped = len(self.index["skipped"])
            raise UsageError(f"the cache {cache} holds no usable clip ({skipped} skipped); run precompute on other data")
        missing = [c["source"] for c in self.index["skipped"]] + list(self.index["missing"])
        super().__init__(len(self.index["clips"]), seed, missing, with_pp)

    def check_recipe(self, recipe) -> None:
        from .components import encoder_names

        s = self.index["sampling"]
        if s["resolution"] != recipe.resolution:
            raise UsageError(
                f"the cache {self.root} was made at resolution {s['resolution']}, the recipe trains at "
                f"{recipe.resolution}; precompute again"
            )
        if (s["frames_per_clip"], s["frame_stride"]) != (recipe.frames_per_clip, recipe.frame_stride):
            logger.warning("the cache samples %s frames at stride %s; the recipe asks for %s at %s (the cache's are used)",
                           s["frames_per_clip"], s["frame_stride"], recipe.frames_per_clip, recipe.frame_stride)  # fmt: skip
        if self.index["encoders"] != encoder_names(recipe):
            logger.warning(
                "the cache was encoded with %s; training exports %s with the model", self.index["encoders"], encoder_names(recipe)
            )

    def describe(self, i) -> str:
        return self.index["clips"][i]["source"] if i is not None else "?"

    def load(self, i: int, probe: bool = False):
        entry = self.index["clips"][i]
        file = self.root / entry["file"]
        if not file.is_file():
            raise FileNotFoundError(f"cache file {file} is missing")
        with safe_open(str(file), "pt") as f:
            references = f.get_tensor("clip_frames").tolist()
        return file, int(entry["frames"]), references

    @staticmethod
    def num_frames(payload) -> int:
        return payload[1]

    def reference_frames(self, payload) -> list[int]:
        return payload[2]

    def make_sample(self, payload, triplet) -> dict:
        file, _, references = payload
        ref, prev, target = triplet
        with safe_open(str(file), "pt") as f:
            mean, std, depth = f.get_slice("latent_mean"), f.get_slice("latent_std"), f.get_slice("depth")
            slot = references.index(ref)
            extra = {}
            if self.with_pp:  # self-rollout: the frame before the previous one, which the model renders it from
                pp = 2 * prev - target
                extra = {"pp_latent": mean[pp : pp + 1][0], "pp_depth": depth[pp : pp + 1][0]}
            return {
                **extra,
                "reference_latent": mean[ref : ref + 1][0],  # (4, h, w): the posterior mean, as inference encodes it
                "previous_latent": mean[prev : prev + 1][0],
                "target_mean": mean[target : target + 1][0],  # the target is sampled from N(mean, std^2) each step
                "target_std": std[target : target + 1][0],
                "clip_tokens": f.get_slice("clip_tokens")[slot : slot + 1][0].float(),  # (1 + g, C)
                "previous_depth": depth[prev : prev + 1][0],  # (1, h, w) in [0, 1]
                "target_depth": depth[target : target + 1][0],
            }
