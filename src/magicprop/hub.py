"""Loading pretrained components by hub id or local folder, failing at once with one line when they cannot be had.

Offline (or with the hub unreachable) a missing model must not hang in retries nor load half of itself: we look in the
local cache first, probe the hub once with a short timeout, and otherwise raise a `MagicPropError` naming the model id
and the flag that takes a local folder. Weights are loaded from safetensors only (`use_safetensors=True`): a checkpoint
that would need unpickling is refused unless the caller opts in.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any, TypeVar

from .errors import MagicPropError, UsageError, first_line
from .fileio import expand_user

logger = logging.getLogger(__name__)

T = TypeVar("T")

_HUB_HOST = ("huggingface.co", 443)

# The real models behind every default: hub ids, each overridable by a local folder. Kept here, in a module that imports
# nothing heavy, so that argument parsers and recipes can name them without loading diffusers.
DEFAULT_IDS = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "clip": "openai/clip-vit-large-patch14",
    "controlnet_depth": "lllyasviel/control_v11f1p_sd15_depth",
    "depth": "depth-anything/Depth-Anything-V2-Small-hf",
    "sam": "facebook/sam-vit-base",
}
# The same by the pipeline's names for them (`MagicPropPipeline.model_ids`, OUT.json's "models"); None: the embedded model
PIPELINE_IDS = {"base_model": DEFAULT_IDS["sd15"], "controlnet": DEFAULT_IDS["controlnet_depth"], "depth_model": DEFAULT_IDS["depth"],
                "sam_model": DEFAULT_IDS["sam"], "propagation_model": None}  # fmt: skip


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the hub can be reached; False at once when offline mode is set."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(_HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def load_component(
    cls: type[T],
    id_or_path: str | os.PathLike,
    *,
    what: str,
    flag: str,
    subfolder: str | None = None,
    allow_pickle: bool = False,
    **kwargs: Any,
) -> T:
    """`cls.from_pretrained(id_or_path, subfolder=...)` with clear, immediate errors.

    Args:
        what: a few words for messages ("depth model").
        flag: the CLI flag that takes a local folder instead ("--depth-model").
        allow_pickle: let .bin/.ckpt weights load (they can run code when unpickled): only for files the user made.
    """
    local = expand_user(id_or_path)
    if subfolder:
        kwargs["subfolder"] = subfolder
    kwargs["use_safetensors"] = None if allow_pickle else True
    if _is_transformers_model(cls):
        # transformers loads weights in the dtype they were saved in, diffusers in float32: a model saved in float16
        # would come half in each (the first float32 layer then meets float16 inputs). Both load in float32 here; the
        # caller casts to the dtype it runs in.
        kwargs.setdefault("dtype", torch_float32())
    if local.exists():
        if not local.is_dir():
            raise UsageError(f"{what} {local} is a file; pass the folder that holds its config.json ({flag} DIR)")
        if subfolder and not (local / subfolder).is_dir():
            raise UsageError(f"{what}: {local} has no {subfolder}/ folder (the model is incomplete); pass a complete model "
                             f"folder with {flag} DIR")  # fmt: skip
        return _from_pretrained(cls, str(local), what, flag, local_files_only=True, **kwargs)
    if str(id_or_path).startswith((".", "/", "~")):
        raise UsageError(f"{what} folder not found: {id_or_path}; check the path given to {flag}")
    try:  # the local cache first: no network needed when the model was downloaded before
        return _from_pretrained(cls, str(id_or_path), what, flag, local_files_only=True, **kwargs)
    except MagicPropError:
        if not hub_reachable():
            raise MagicPropError(
                f"{what} {id_or_path!s} is not in the local cache and the hub is unreachable; download it on a connected "
                f"machine (`hf download {id_or_path}`) or pass a local folder with {flag} DIR"
            ) from None
    return _from_pretrained(cls, str(id_or_path), what, flag, **kwargs)


def _is_transformers_model(cls) -> bool:
    return any(base.__module__.startswith("transformers.modeling_utils") for base in getattr(cls, "__mro__", ()))


def torch_float32():
    import torch

    return torch.float32


def _from_pretrained(cls, name: str, what: str, flag: str, **kwargs):
    try:
        if _is_transformers_model(cls):
            return _transformers_from_pretrained(cls, name, what, **kwargs)
        return cls.from_pretrained(name, **kwargs)
    except RuntimeError as exc:  # transformers: weights of other shapes than the config's (another model's folder)
        if "mismatch" not in str(exc).lower():
            raise
        raise UsageError(f"{what} {name} holds weights of other shapes than its config describes (another architecture's "
                         f"checkpoint?); pass a matching folder with {flag} DIR") from None  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = first_line(exc)
        if "safetensors" in first.lower() and kwargs.get("use_safetensors"):
            raise UsageError(
                f"{what} {name} has no .safetensors weights; convert them to safetensors (edit, propagate, batch, depth and ui "
                "also take --allow-pickle for files you trust)"
            ) from None
        raise MagicPropError(f"cannot load {what} from {name}: {first[:300]}; pass a valid local folder with {flag} DIR") from None


def _transformers_from_pretrained(cls, name: str, what: str, **kwargs):
    """transformers' `from_pretrained` without its multi-line load report: the vision tower read from a whole CLIP
    folder (openai/clip-vit-large-patch14 is one) lists every text-tower weight as unexpected, 25 lines each run.
    Weights the files lack (left random) are still said, in one line."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = cls.from_pretrained(name, output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    if missing := sorted(info.get("missing_keys") or ()):
        logger.warning("%s %s lacks %d weights, left random (%s)", what, name, len(missing), ", ".join(missing[:3]))
    return model


def sd1_mismatch(unet_config: dict) -> str | None:
    """What a UNet's config says it is when it is not Stable Diffusion 1.x's (None when it is, or a tiny test model of
    that shape): SDXL adds text_time embeddings, SD 2.x projects attention with linear layers."""
    if unet_config.get("addition_embed_type") == "text_time" or unet_config.get("cross_attention_dim") == 2048:
        return f"an SDXL UNet (cross-attention {unet_config.get('cross_attention_dim')} wide, text_time embeddings)"
    if unet_config.get("use_linear_projection") or unet_config.get("cross_attention_dim") == 1024:
        return f"a Stable Diffusion 2.x UNet (cross-attention {unet_config.get('cross_attention_dim')} wide)"
    return None


def check_sd1(unet_config: dict, what: str, flag: str | None = None) -> None:
    """One line naming the architecture when `what` is not SD 1.x: PropDPM and the depth ControlNet are SD 1.5's."""
    kind = sd1_mismatch(unet_config)
    if kind is not None:
        where = f" with {flag}" if flag else ""
        raise UsageError(f"{what} is {kind}, not Stable Diffusion 1.x; magicprop builds on SD 1.5 (PropDPM, the depth "
                         f"ControlNet): pass an SD 1.x model{where}, e.g. {DEFAULT_IDS['sd15']}")  # fmt: skip


def check_sd1_folder(id_or_path: str | os.PathLike, flag: str, subfolder: str | None = "unet") -> None:
    """`check_sd1` on the config (of `subfolder`) of a local folder or a model in the local cache, before any weight
    is read; a model that is not there fails later, where it is loaded."""
    from diffusers import UNet2DConditionModel

    try:
        config = UNet2DConditionModel.load_config(str(expand_user(id_or_path)), subfolder=subfolder, local_files_only=True)
    except (OSError, ValueError):
        return
    check_sd1(dict(config), f"{flag} {id_or_path}", flag)


def saved_dtype(folder: str | os.PathLike) -> str | None:
    """The dtype of the first tensor in a folder's safetensors weights ("F16", "BF16", "F32"), from the file's header
    alone; None when there is none."""
    import json
    import struct

    for path in sorted(expand_user(folder).glob("*.safetensors")):
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(size))
        return next((v["dtype"] for k, v in header.items() if k != "__metadata__"), None)
    return None
