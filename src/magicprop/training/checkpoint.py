"""Checkpoints of a training run: `DIR/checkpoints/step-000N/`, complete or absent.

A checkpoint is `accelerator.save_state` (model weights as safetensors, optimizer, LR scheduler, RNG states of every
process) plus two files of ours: `ema.safetensors` (the EMA shadow weights, when EMA is on) and `train_state.json` (steps
done, epoch, samples seen, the recipe). Everything is written into `.step-000N.partial/` and renamed when complete, and
`train_state.json` is written last, so a run killed mid-save leaves a partial folder that `latest` never picks.
Just before it, `checksums.json` records the size and digest of every file (`integrity.write_checksums`): a resumed run
checks them, so a checkpoint damaged afterwards (a truncated copy, a full disk, bit rot) is never loaded. `--resume
latest` then falls back to the newest intact one, saying so in one line; `--resume PATH` to a damaged one is refused.

The data position needs no sampler state: the sample drawn at each global index is a pure function of (seed, index), so
"steps done" is enough to continue exactly where the run stopped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import UsageError
from ..fileio import atomic_path, atomic_write_json
from ..integrity import check_folder, write_checksums

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "train_state.json"


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:07d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (those with train_state.json), oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and (d / STATE_FILE).is_file():
            found.append((int(m.group(1)), d))
    return [d for _, d in sorted(found)]


def resolve_resume(output_dir: str | Path, resume: str) -> Path:
    """`--resume latest` or `--resume PATH` -> a complete, intact checkpoint folder, or a one-line UsageError.

    `latest` skips damaged checkpoints, newest first, with one warning line each; PATH must be intact itself."""
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise UsageError(f"--resume latest: no checkpoint in {Path(output_dir) / 'checkpoints'}; start without --resume")
        for ckpt in reversed(found):
            problem = checkpoint_problem(ckpt)
            if problem is None:
                return ckpt
            older = [c.name for c in found if c < ckpt]
            _warn_once(ckpt, f"checkpoint {ckpt.name} is damaged ({problem}); "
                             + (f"resuming from {older[-1]} instead" if older else "no older checkpoint is left"))  # fmt: skip
        raise UsageError(f"--resume latest: every checkpoint in {Path(output_dir) / 'checkpoints'} is damaged; start "
                         "without --resume in a new --output-dir")  # fmt: skip
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise UsageError(
            f"--resume {resume}: not a complete checkpoint folder (no {STATE_FILE}); pass 'latest' or a step-N folder"
        )
    problem = checkpoint_problem(path)
    if problem is not None:
        raise UsageError(f"--resume {resume}: the checkpoint is damaged ({problem}); pass 'latest' to take the newest "
                         "intact one, or another step-N folder")  # fmt: skip
    return path


# Verdicts by checkpoint and the stat of its files: `magicprop train` resolves --resume twice (before loading anything,
# then in the loop), and a checkpoint of SD's size takes seconds to hash; the second call, and its warning, are free.
_verdicts: dict[tuple, str | None] = {}
_warned: set[tuple[Path, str]] = set()


def checkpoint_problem(ckpt: Path) -> str | None:
    """None when the checkpoint is intact (its train_state.json reads and every file matches checksums.json)."""
    try:
        stamp = (ckpt.resolve(), tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in ckpt.rglob("*"))))
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if stamp not in _verdicts:
        try:
            state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
            problem = None if isinstance(state, dict) and "step" in state else f"{STATE_FILE} is garbled"
        except (OSError, UnicodeDecodeError, ValueError):
            problem = f"{STATE_FILE} is unreadable"
        _verdicts[stamp] = problem or check_folder(ckpt)
    return _verdicts[stamp]


def _warn_once(ckpt: Path, message: str) -> None:
    if (ckpt.resolve(), message) not in _warned:
        _warned.add((ckpt.resolve(), message))
        logger.warning("%s", message)


def read_state(ckpt: Path) -> dict:
    return json.loads((ckpt / STATE_FILE).read_text())


def save_checkpoint(accelerator, output_dir: str | Path, step: int, state: dict, ema=None, keep: int = 3) -> Path:
    """Collective: every process calls it. Returns the final folder."""
    final = checkpoint_dir(output_dir, step)
    partial = final.with_name(f".{final.name}.partial")
    if accelerator.is_main_process:
        if partial.exists():  # left by a run killed while saving
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))  # weights (safetensors), optimizer, scheduler, every process's RNG
    accelerator.wait_for_everyone()  # every process has written its RNG file before the folder is renamed
    if accelerator.is_main_process:
        if ema is not None:
            save_ema(ema, partial)
        write_checksums(partial)  # of everything above; a resumed run checks them before loading any of it
        atomic_write_json(partial / STATE_FILE, state)  # last: its presence marks the checkpoint complete
        if final.exists():  # a resumed run that re-reaches a step it had saved before it was killed
            shutil.rmtree(final)
        os.replace(partial, final)
        prune(output_dir, keep)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, ckpt: Path, ema=None) -> dict:
    accelerator.load_state(str(ckpt))
    if ema is not None:
        load_ema(ema, ckpt)
    return read_state(ckpt)


def prune(output_dir: str | Path, keep: int) -> None:
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
        logger.info("removed old checkpoint %s (keep_checkpoints=%d)", old.name, keep)


def save_ema(ema, folder: Path) -> None:
    """EMA shadow weights as safetensors and its counters as JSON (no pickles in a checkpoint of ours)."""
    tensors = {f"{i:05d}": p.detach().to("cpu").contiguous() for i, p in enumerate(ema.shadow_params)}
    with atomic_path(folder / "ema.safetensors") as tmp:
        save_file(tensors, str(tmp))
    counters = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
    atomic_write_json(folder / "ema.json", counters)


def load_ema(ema, folder: Path) -> None:
    tensors = load_file(str(folder / "ema.safetensors"))
    if len(tensors) != len(ema.shadow_params):
        raise UsageError(f"{folder}: the EMA holds {len(tensors)} tensors, the model {len(ema.shadow_params)}; wrong run?")
    state = json.loads((folder / "ema.json").read_text())
    device = ema.shadow_params[0].device if ema.shadow_params else "cpu"
    state["shadow_params"] = [tensors[f"{i:05d}"].to(device) for i in range(len(tensors))]
    ema.load_state_dict(state)


def parameter_checksum(module: torch.nn.Module) -> str:
    """A hash of every parameter's bytes: equal across processes exactly when their weights are bit-identical."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def export_final(path: Path, propdpm, components, noise_scheduler, card: dict, ema=None) -> Path:
    """Write the loadable model folder (`PropagationModels.from_pretrained(path)`, `magicprop propagate --model path`).

    With EMA on, the EMA weights are exported (the training weights are put back afterwards). Written into a partial
    folder and renamed, so `final/` is always a complete model.
    """
    from ..models.bundle import PropagationModels

    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    if ema is not None:
        ema.store(propdpm.parameters())
        ema.copy_to(propdpm.parameters())
    try:
        scheduler_config = dict(noise_scheduler.config)  # the training schedule: sampling reads its betas and zero-SNR flag
        models = PropagationModels(propdpm, components.vae, components.image_encoder, scheduler_config, source=str(path))
        models.save_pretrained(partial, card=card, reference_components=components.references)
    finally:
        if ema is not None:
            ema.restore(propdpm.parameters())
    if path.exists():  # a resumed run replaces the export of the run it continues
        shutil.rmtree(path)
    os.replace(partial, path)
    return path
