"""A propagation model on disk: PropDPM plus the frozen VAE and CLIP image tower it was trained with.

Layout (a diffusers-style folder; `magicprop train` exports it, `magicprop propagate --model` reads it):
    propdpm/        PropDPM config.json + diffusion_pytorch_model.safetensors
    vae/            AutoencoderKL (optional when magicprop.json names a hub id or folder for it)
    image_encoder/  CLIPVisionModelWithProjection (optional, likewise)
    scheduler/      scheduler_config.json: the training schedule (zero-terminal-SNR, v-prediction)
    magicprop.json  what this model is: config name, recipe, command that made it, where VAE/CLIP come from
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..fileio import atomic_write_json, expand_user
from ..hub import load_component, saved_dtype
from .propdpm import PropDPM

logger = logging.getLogger(__name__)

EMBEDDED_TINY = Path(__file__).resolve().parents[1] / "weights" / "tiny"
CARD = "magicprop.json"


@dataclass
class PropagationModels:
    propdpm: PropDPM
    vae: Any  # diffusers AutoencoderKL
    image_encoder: Any  # transformers CLIPVisionModelWithProjection
    scheduler_config: dict
    card: dict = field(default_factory=dict)
    source: str = ""

    @property
    def device(self) -> torch.device:
        return self.propdpm.device

    @property
    def dtype(self) -> torch.dtype:
        return self.propdpm.dtype

    def to(self, device=None, dtype: torch.dtype | None = None) -> "PropagationModels":
        kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for module in (self.propdpm, self.vae, self.image_encoder):
            module.to(**kwargs)
        return self

    def eval(self) -> "PropagationModels":
        for module in (self.propdpm, self.vae, self.image_encoder):
            module.eval().requires_grad_(False)
        return self

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, *, device=None, dtype: torch.dtype | None = None, allow_pickle: bool = False
    ) -> "PropagationModels":
        """Load a model folder; `None` loads the tiny model embedded in the package (and logs that it did)."""
        from diffusers import AutoencoderKL
        from transformers import CLIPVisionModelWithProjection

        if path is None:
            path = EMBEDDED_TINY
            logger.info("using the embedded tiny PropDPM (%s); pass --model for another", path)
        root = expand_user(path)
        if not (root / "propdpm" / "config.json").is_file():
            raise UsageError(
                f"{root} is not a magicprop propagation model (no propdpm/config.json); pass a folder exported by "
                "`magicprop train`, or omit --model to use the embedded tiny model"
            )
        card = json.loads((root / CARD).read_text()) if (root / CARD).is_file() else {}
        config = json.loads((root / "propdpm" / "config.json").read_text())
        if config.get("_class_name") != PropDPM.__name__:
            raise UsageError(f"{root / 'propdpm'} holds a {config.get('_class_name')}, not a PropDPM; check --model")
        propdpm = load_component(PropDPM, root / "propdpm", what="PropDPM", flag="--model", allow_pickle=allow_pickle)
        refs = card.get("components", {})
        vae = load_component(AutoencoderKL, **_where(root, "vae", refs), what="VAE", flag="--model", allow_pickle=allow_pickle)
        image_encoder = load_component(
            CLIPVisionModelWithProjection, **_where(root, "image_encoder", refs), what="CLIP image encoder",
            flag="--model", allow_pickle=allow_pickle,
        )  # fmt: skip
        sched_file = root / "scheduler" / "scheduler_config.json"
        scheduler_config = json.loads(sched_file.read_text()) if sched_file.is_file() else {}
        models = cls(propdpm, vae, image_encoder, scheduler_config, card, str(root))
        half = saved_dtype(root / "propdpm") in ("F16", "BF16")
        if half and dtype is None:  # every part loads in float32 (hub.load_component); the caller casts, or not
            logger.info("%s holds half-precision weights; they run in float32 unless a dtype is given (--dtype fp16/bf16 "
                        "on a GPU)", root)  # fmt: skip
        return models.eval().to(device=device, dtype=dtype)

    def save_pretrained(self, path: str | Path, *, card: dict | None = None, reference_components: dict | None = None):
        """Write the folder. `reference_components` maps "vae"/"image_encoder" to {"id": ..., "subfolder": ...} to
        point at a hub id instead of copying a large frozen component."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.propdpm.save_pretrained(root / "propdpm")
        refs = dict(reference_components or {})
        if "vae" not in refs:
            self.vae.save_pretrained(root / "vae")
        if "image_encoder" not in refs:
            self.image_encoder.save_pretrained(root / "image_encoder")
        atomic_write_json(root / "scheduler" / "scheduler_config.json", self.scheduler_config)
        atomic_write_json(root / CARD, {**self.card, **(card or {}), "components": refs})


def _where(root: Path, name: str, refs: dict) -> dict:
    """load_component arguments for a component: the local subfolder, else the id (and subfolder) the card names."""
    if (root / name).is_dir():
        return {"id_or_path": str(root / name)}
    if name in refs:
        return {"id_or_path": refs[name]["id"], "subfolder": refs[name].get("subfolder")}
    raise UsageError(f"{root} has no {name}/ folder and magicprop.json names none; re-export the model with `magicprop train`")
