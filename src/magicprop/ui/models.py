"""The models behind the page: one `MagicPropPipeline` shared by every tab, and an honest account of what it can do.

The propagation model loads at start-up (it is small, and a wrong `--model` should fail before the page opens). Stable
Diffusion, the ControlNet and the depth estimator are large, so, like the pipeline itself, we load them on first use;
at start-up we only check, cheaply, whether they *could* load (a local folder, the hub cache, or a reachable hub), so
the page can say what is available and why not. When the embedded tiny model is missing the page still works with the
`flow` and `copy` propagators, which need no weights and no depth.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import MagicPropError, UsageError
from ..propagation import AUTO, PROPAGATORS, PropagationSettings, get_propagator, resolve
from .session import Clip

logger = logging.getLogger(__name__)


@dataclass
class ModelOptions:
    """The `magicprop ui` model flags; None means the pipeline's default."""

    model: str | None = None  # propagation model folder; None = the tiny model embedded in the package
    base_model: str | None = None  # stage I Stable Diffusion 1.5: hub id or folder
    controlnet: str | None = None  # stage I depth ControlNet: hub id or folder
    depth_model: str | None = None  # depth estimator: hub id or folder
    device: str | None = None  # None = CUDA, then MPS, then CPU
    load_editor: bool = True  # False: stage I is never loaded; keyframes are uploaded


class ActiveModels:
    """The shared pipeline, what it can run, and why not where it cannot."""

    def __init__(self, pipeline, *, propdpm_reason: str | None, editor_reason: str | None, depth_reason: str | None,
                 model_given: bool = False):  # fmt: skip
        self.pipeline = pipeline
        self.model_given = model_given  # --model named a propagation model (not the embedded tiny one)
        self.propdpm_reason = propdpm_reason  # None = PropDPM loaded
        self.editor_reason = editor_reason  # None = stage I can load (on first Generate)
        self.depth_reason = depth_reason  # None = the depth estimator can load (on first use)
        # The pipeline is one object with lazily loaded parts: one job at a time uses it. (The app also queues model
        # jobs one at a time; this lock keeps direct callers, such as tests, just as safe.)
        self.lock = threading.Lock()

    @classmethod
    def load(cls, options: ModelOptions) -> "ActiveModels":
        from ..pipeline import MagicPropPipeline

        names = {"base_model": options.base_model, "controlnet": options.controlnet, "depth_model": options.depth_model}
        kwargs = {k: v for k, v in names.items() if v is not None}
        kwargs.update(device=options.device, load_editor=options.load_editor)
        propdpm_reason = None
        try:
            learned = next(p for p in PROPAGATORS.values() if p.needs_model)  # loads the propagation model
            pipeline = MagicPropPipeline.from_pretrained(propagation_model=options.model, propagator=learned, **kwargs)
        except MagicPropError:
            if options.model is not None:
                raise  # a model the person named must load; falling back would hide their mistake
            from ..models.bundle import EMBEDDED_TINY

            # The bundle's message suggests omitting --model, which is what got us here; say what is actually missing.
            propdpm_reason = f"the embedded tiny model is missing from this install ({EMBEDDED_TINY}); pass one with --model DIR"
            logger.warning("PropDPM unavailable (%s); the UI offers the propagators that need no weights", propdpm_reason)
            weightless = next(p for p in PROPAGATORS.values() if not p.needs_model)
            pipeline = MagicPropPipeline.from_pretrained(propagator=weightless, **kwargs)
        ids = pipeline.model_ids
        if not options.load_editor:
            editor_reason = "turned off (`--no-editor`)"
        else:
            editor_reason = _unavailable(ids["base_model"], "model_index.json", "--base-model") or _unavailable(
                ids["controlnet"], "config.json", "--controlnet"
            )
        depth_reason = _unavailable(ids["depth_model"], "config.json", "--depth-model")
        return cls(pipeline, propdpm_reason=propdpm_reason, editor_reason=editor_reason, depth_reason=depth_reason,
                   model_given=options.model is not None)  # fmt: skip

    # -- what the page offers ----------------------------------------------------------------------------------------
    @property
    def editor_ok(self) -> bool:
        return self.editor_reason is None

    def propagators(self) -> list[str]:
        """The registry's propagators this page can run: those needing a model only when PropDPM loaded."""
        return [name for name, p in PROPAGATORS.items() if self.propdpm_reason is None or not p.needs_model]

    def default_propagator(self) -> str:
        """The "auto" rule of the CLI: PropDPM when --model named one (and depth can be had), else `flow`; the
        embedded tiny model, trained on synthetic clips, stays a choice for the synthetic examples."""
        chosen = resolve(AUTO, model_given=self.model_given and self.propdpm_reason is None and self.depth_reason is None)
        return chosen.name if chosen.name in self.propagators() else self.propagators()[0]

    def describe(self) -> dict:
        """The models behind a result, for settings.json."""
        ids = dict(self.pipeline.model_ids)
        return {
            "propagation_model": ids.get("propagation_model"), "base_model": ids["base_model"],
            "controlnet": ids["controlnet"], "depth_model": ids["depth_model"], "device": str(self.pipeline.device),
            "dtype": str(self.pipeline.dtype).replace("torch.", ""),
        }  # fmt: skip

    def status_markdown(self) -> str:
        ids = self.pipeline.model_ids
        if self.propdpm_reason is None:
            source = ids.get("propagation_model") or ""
            tiny = "embedded tiny model" if Path(source).name == "tiny" and "weights" in Path(source).parts else "`" + source + "`"
            prop = f"PropDPM, {tiny}"
        else:
            prop = f"PropDPM unavailable ({self.propdpm_reason}); `flow` and `copy` need no weights"
        if self.editor_reason is None:
            edit = f"Stable Diffusion 1.5 `{ids['base_model']}` + depth ControlNet `{ids['controlnet']}` (loads on first Generate)"
        else:
            edit = f"unavailable: {self.editor_reason}. Upload a keyframe you edited elsewhere instead"
        if self.depth_reason is None:
            depth = f"`{ids['depth_model']}` (loads on first use)"
        else:
            depth = f"unavailable: {self.depth_reason}. PropDPM runs on the bundled examples (exact depth); `flow` and `copy` need none"
        return (
            f"**Propagation:** {prop}  \n**Stage I editor:** {edit}  \n**Depth:** {depth}  \n"
            f"**Device:** {self.pipeline.device} ({str(self.pipeline.dtype).replace('torch.', '')})"
        )

    # -- jobs --------------------------------------------------------------------------------------------------------
    def edit_keyframe(
        self, clip: Clip, k: int, *, mask: np.ndarray | None, on_step: Callable[[int, int], None], **settings
    ) -> np.ndarray:
        """Stage I only: frame `k` edited from a prompt, at the clip's size. `settings` as in the stage I form."""
        import torch

        if self.editor_reason is not None:
            raise UsageError(f"the stage I editor is {self.editor_reason}; upload a keyframe you edited elsewhere instead")
        with self.lock:
            on_step(0, 1)
            edited = self.pipeline.edit_keyframe(
                clip.frames[k], settings["prompt"], negative_prompt=settings["negative_prompt"] or None, mask=mask,
                num_inference_steps=settings["num_inference_steps"], guidance_scale=settings["guidance_scale"],
                generator=torch.Generator().manual_seed(settings["seed"]),
                depth=None if clip.depth is None else clip.depth[k],
            )  # fmt: skip
            on_step(1, 1)
        return edited

    def propagate(
        self, clip: Clip, keyframes: dict[int, np.ndarray], *, propagator: str, steps: int, seed: int, on_step: Callable[[int, int], None],
        temporal_blend: float | None = None,
    ) -> Iterator[np.ndarray]:
        """Stage II from given keyframes ({frame index: image}, one or several): (H, W, 3) uint8 frames at the clip's
        size, made as they are taken (the clip is never held; the pipeline is this job's until the last frame)."""
        chosen = get_propagator(propagator)
        if propagator not in self.propagators():
            why = f": {self.propdpm_reason}" if chosen.needs_model and self.propdpm_reason else ""
            raise UsageError(f"propagator {propagator!r} is not available{why}; choose one of {', '.join(self.propagators())}")
        if chosen.needs_depth and clip.depth is None and self.depth_reason is not None:
            others = ", ".join(n for n in self.propagators() if not PROPAGATORS[n].needs_depth)
            raise UsageError(f"{propagator} needs the clip's depth and the depth model is {self.depth_reason}; choose {others}")
        with self.lock:
            yield from self.pipeline.propagate(
                clip.frames, keyframes, depth=clip.depth, propagator=chosen,
                settings=PropagationSettings(num_inference_steps=steps, seed=seed, temporal_blend=temporal_blend),
                callback=on_step,  # (frames_done, total), the keyframes counted as done
                output_type="iterator",
            )  # fmt: skip


def _unavailable(id_or_path: str, probe_file: str, flag: str) -> str | None:
    """Why `id_or_path` cannot load, or None when it can: a local folder, a hub id in the cache, or a reachable hub.

    A cheap check, not a load: the models are loaded on first use, and a load that still fails then says why in the page.
    """
    from ..fileio import expand_user
    from ..hub import hub_reachable

    local = expand_user(id_or_path)
    if local.exists():
        return None if local.is_dir() else f"{id_or_path} is a file; pass the model's folder with {flag} DIR"
    if str(id_or_path).startswith((".", "/", "~")):
        return f"folder {id_or_path} not found; check {flag}"
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(str(id_or_path), probe_file), str):
            return None
    except ValueError as exc:  # huggingface_hub's HFValidationError: a malformed id is not in any cache
        logger.debug("%s is not a valid hub id (%s)", id_or_path, exc)
    if _hub_reachable_once(hub_reachable):
        return None
    return f"{id_or_path} is not in the local cache and the hub is unreachable (pass a local folder with {flag} DIR)"


_REACHABLE: list[bool] = []


def _hub_reachable_once(probe: Callable[[], bool]) -> bool:
    """One network probe per process: three models asking the same question should not wait three times."""
    if not _REACHABLE:
        _REACHABLE.append(probe())
    return _REACHABLE[0]
