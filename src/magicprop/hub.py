"""Loading pretrained components by hub id or local folder, failing at once with one line when they cannot be had.

Offline (or with the hub unreachable) a missing model must not hang in retries nor load half of itself: we look in the
local cache first, probe the hub once with a short timeout, and otherwise raise a `MagicPropError` naming the model id
and the flag that takes a local folder. Weights are loaded from safetensors only (`use_safetensors=True`): a checkpoint
that would need unpickling is refused unless the caller opts in.
"""

from __future__ import annotations

import os
import socket
from typing import Any, TypeVar

from .errors import MagicPropError, UsageError, first_line
from .fileio import expand_user

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
    if local.exists():
        if not local.is_dir():
            raise UsageError(f"{what} {local} is a file; pass the folder that holds its config.json ({flag} DIR)")
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


def _from_pretrained(cls, name: str, what: str, flag: str, **kwargs):
    try:
        return cls.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = first_line(exc)
        if "safetensors" in first.lower() and kwargs.get("use_safetensors"):
            raise UsageError(
                f"{what} {name} has no .safetensors weights; convert them to safetensors (edit, propagate, batch, depth and ui "
                "also take --allow-pickle for files you trust)"
            ) from None
        raise MagicPropError(f"cannot load {what} from {name}: {first[:300]}; pass a valid local folder with {flag} DIR") from None
