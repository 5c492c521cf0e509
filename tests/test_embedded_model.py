"""The tiny model shipped in the package: small, safetensors only, the model its card's recipe describes, and better
than copying the keyframe on a clip it never saw."""

import json

import numpy as np
import pytest

from magicprop.models.bundle import EMBEDDED_TINY

pytestmark = pytest.mark.skipif(not (EMBEDDED_TINY / "propdpm" / "config.json").is_file(), reason="embedded tiny model not built")

# Fields `make tiny-model` sets on top of the tiny-synthetic recipe (the encoders it trains first, the budget, the variant)
MAKEFILE_OVERRIDES = {"vae", "image_encoder", "max_steps", "use_warped_previous", "anchored_reference"}
# Fields that change memory only, never a trained weight: a recipe may retune them without retraining the model
MEMORY_ONLY = {"clip_cache"}


def test_small_and_safetensors_only():
    files = [p for p in EMBEDDED_TINY.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 20 * 2**20
    weights = [p for p in files if p.suffix not in (".json",)]
    assert weights and all(p.suffix == ".safetensors" for p in weights), weights


def test_is_the_model_its_card_describes():
    from magicprop.models import PropagationModels
    from magicprop.models.configs import TINY_VAE_CONFIG, propdpm_config
    from magicprop.training.recipes import RECIPES

    card = json.loads((EMBEDDED_TINY / "magicprop.json").read_text())
    assert card["config"] == "tiny-synthetic"
    named = RECIPES["tiny-synthetic"].__dict__
    changed = {k for k, v in card["recipe"].items() if named[k] != v} - MEMORY_ONLY
    assert changed <= MAKEFILE_OVERRIDES, changed - MAKEFILE_OVERRIDES
    assert card["steps"] == card["recipe"]["max_steps"]

    models = PropagationModels.from_pretrained(None)
    config = models.propdpm.config
    for key, value in propdpm_config("tiny").items():
        assert (list(config[key]) if isinstance(value, tuple) else config[key]) == (list(value) if isinstance(value, tuple) else value), key
    assert config.use_warped_previous == card["recipe"]["use_warped_previous"]
    assert config.get("use_anchored_reference", False) == card["recipe"].get("anchored_reference", False)
    assert config.reference_mode == card["recipe"]["reference_mode"]
    for key in ("block_out_channels", "latent_channels", "down_block_types"):
        assert list(np.atleast_1d(models.vae.config[key])) == list(np.atleast_1d(TINY_VAE_CONFIG[key]))
    sched = models.scheduler_config
    assert sched["rescale_betas_zero_snr"] == card["recipe"]["zero_snr"] and sched["prediction_type"] == "v_prediction"


def test_beats_copying_the_keyframe_on_a_held_out_clip():
    from magicprop.propagation.baselines import propagate_copy
    from magicprop.evaluation import psnr
    from magicprop.models import PropagationModels
    from magicprop.propagation import PropagationSettings
    from magicprop.propagation.propdpm.sampling import propagate
    from magicprop.synthetic import render_clip

    clip = render_clip(900_000, frames=8, size=(64, 64), edit="global")
    key = clip.edited[0]
    models = PropagationModels.from_pretrained(None)
    out = propagate(models, clip.depth, key, 0, PropagationSettings(num_inference_steps=10), progress=False, video=clip.source)
    ours = float(np.mean(psnr(out[1:], clip.edited[1:])))
    copy = float(np.mean(psnr(propagate_copy(clip.source, key, 0)[1:], clip.edited[1:])))
    assert ours > copy + 1.0, (ours, copy)
