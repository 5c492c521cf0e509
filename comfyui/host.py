"""What the pack takes from ComfyUI when ComfyUI runs it, with plain fallbacks when it does not (tests, scripts).

ComfyUI's own folders come first on `sys.path`, so `comfy.utils`, `comfy.model_management` and `folder_paths` below
are ComfyUI's modules when the server imports the pack, and absent otherwise.

Errors: ComfyUI's error panel shows the exception's message, its type and the traceback of where it was raised. A
magicprop `UsageError` is raised again from the node itself, so the panel shows its one line and a traceback that ends
in the node, not deep inside the library; anything else (a bug) keeps its full traceback. The server keeps running
either way.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path
from typing import Callable, Iterator

from magicprop.errors import MagicPropError, UsageError, first_line

logger = logging.getLogger(__name__)

TINY = "tiny"  # the model embedded in the magicprop package (PropagationModels.from_pretrained(None))
MODELS_SUBFOLDER = "magicprop"  # ComfyUI/models/magicprop/<name>/ holds model folders named by their folder name
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Raise a magicprop error again from here, without its chain: one line and a short traceback in the panel."""
    try:
        yield
    except MagicPropError as exc:
        cls = UsageError if isinstance(exc, UsageError) else MagicPropError
        raise cls(str(exc)) from None


def progress(what: str) -> Callable[[int, int], None] | None:
    """A callback(done, total) for the pipeline that moves ComfyUI's progress bar and raises ComfyUI's interrupt
    exception when the user cancels (the pipeline stops at the next finished frame); None outside ComfyUI."""
    try:
        import comfy.model_management
        import comfy.utils
    except ImportError:
        return None
    bar = None

    def report(done: int, total: int) -> None:
        nonlocal bar
        comfy.model_management.throw_exception_if_processing_interrupted()
        if bar is None:
            bar = comfy.utils.ProgressBar(total)
        bar.update_absolute(done, total)

    logger.debug("%s: reporting progress to ComfyUI", what)
    return report


def device() -> str | None:
    """The device ComfyUI runs its models on (it honours --cpu); None outside ComfyUI (the pipeline then picks)."""
    try:
        import comfy.model_management
    except ImportError:
        return None
    return str(comfy.model_management.get_torch_device())


def models_folder() -> Path | None:
    """ComfyUI/models/magicprop, where users put model folders; None outside ComfyUI."""
    try:
        import folder_paths
    except ImportError:
        return None
    return Path(folder_paths.models_dir) / MODELS_SUBFOLDER


def resolve_model(name: str) -> str | None:
    """The local folder a model name means, for PropagationModels.from_pretrained: None for "tiny" (the embedded
    model); a folder as given; a folder name under ComfyUI/models/magicprop; or a hub id (owner/name), fetched into the
    Hugging Face cache (safetensors and JSON only), or taken from it when the hub cannot be reached."""
    name = str(name).strip()
    if name in ("", TINY):
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    folder = models_folder()
    if folder is not None and not path.is_absolute() and (folder / name).is_dir():
        return str(folder / name)
    if _HUB_ID.match(name) and not path.is_absolute():
        return _from_hub(name)
    where = f", a folder under {folder}" if folder is not None else ""
    raise UsageError(f"propagation model {name!r} is not a folder; give {TINY!r} (the embedded tiny model), a folder exported by `magicprop train`{where}, or a hub id (owner/name)")  # fmt: skip


def _from_hub(repo_id: str) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from magicprop.hub import hub_reachable

    online = hub_reachable()
    try:
        # weights as safetensors only (as everywhere in magicprop): a pickled checkpoint is never fetched
        return snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt"], local_files_only=not online)
    except LocalEntryNotFoundError:
        raise UsageError(f"propagation model {repo_id} is not in the Hugging Face cache and the hub cannot be reached; download it where there is a network, or give a local folder") from None
    except HfHubHTTPError as exc:
        raise UsageError(f"propagation model {repo_id} could not be fetched from the hub ({first_line(exc, 160)}); check the id, or give a local folder") from None
