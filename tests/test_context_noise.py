"""Exposure-bias training (`context_noise`, GameNGen-style): the previous latent is noised to a level the model is told
through a zero-initialised embedding; training and sampling build it with the one conditioning function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures import get_dummy_propagation_models, get_dummy_propdpm
from magicprop.models.propdpm import assemble_conditioning


def _cond_inputs(b=2, seed=0, width=16):
    g = torch.Generator().manual_seed(seed)
    return dict(target_depth=torch.rand(b, 1, 32, 32, generator=g), previous_latent=torch.randn(b, 4, 16, 16, generator=g),
                previous_depth=torch.rand(b, 1, 32, 32, generator=g), reference_tokens=torch.randn(1, 65, width, generator=g))  # fmt: skip


def test_the_level_embedding_starts_at_zero_so_the_model_is_unchanged():
    plain = get_dummy_propdpm().eval()
    embedded = get_dummy_propdpm(context_level_embedding=True).eval()
    missing, unexpected = embedded.load_state_dict(plain.state_dict(), strict=False)
    assert all(k.startswith("unet.class_embedding.") for k in missing) and missing and not unexpected
    cond = assemble_conditioning(**_cond_inputs(width=plain.config.cross_attention_dim))
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = plain(x, 500, cond)
        for level in (0.0, 0.3, 1.0):
            cond.context_level = torch.full((2,), level)
            torch.testing.assert_close(embedded(x, 500, cond), expected)  # the zero-initialised embedding adds nothing
        embedded.unet.class_embedding.linear_2.bias.data.fill_(0.5)  # once trained, the level changes the output
        assert not torch.allclose(embedded(x, 500, cond), expected)


def test_conditioning_noises_the_previous_latent_to_the_level():
    inputs = _cond_inputs()
    eps = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    level = torch.tensor([0.0, 0.6])
    cond = assemble_conditioning(**inputs, context_noise=eps, context_level=level)
    previous = cond.spatial[:, 1:5]  # channels: target depth, previous latent (4), previous depth
    torch.testing.assert_close(previous[0], inputs["previous_latent"][0])  # level 0: clean
    torch.testing.assert_close(previous[1], 0.8 * inputs["previous_latent"][1] + 0.6 * eps[1])  # sqrt(1 - 0.36) = 0.8
    assert torch.equal(cond.context_level, level)
    assert assemble_conditioning(**inputs).context_level is None


def test_training_draws_levels_after_everything_else():
    """context_noise = m: the model sees levels in [0, m] and the noised previous latent; with 0 the other draws (target
    noise, timesteps) are the same, so runs without it keep their random stream."""
    from magicprop.schedulers import make_scheduler
    from magicprop.training.loop import EncodedBatch, diffusion_loss
    from magicprop.training.recipes import load_recipe

    g = torch.Generator().manual_seed(0)
    enc = EncodedBatch(*(torch.randn(8, 4, 16, 16, generator=g) for _ in range(3)), torch.randn(8, 5, 8, generator=g),
                       torch.rand(8, 1, 32, 32, generator=g), torch.rand(8, 1, 32, 32, generator=g))  # fmt: skip
    seen = []

    def model(target, noise, timesteps, *rest):
        seen.append((noise, timesteps, rest[-2], rest[-1]))
        return target, target

    for level in (0.0, 0.5):
        diffusion_loss(model, make_scheduler("ddpm"), enc, load_recipe("tiny-synthetic", context_noise=level), torch.Generator().manual_seed(7))
    (n0, t0, eps0, l0), (n1, t1, eps1, l1) = seen
    assert eps0 is None and l0 is None and torch.equal(n0, n1) and torch.equal(t0, t1)
    assert l1.shape == (8,) and 0 <= l1.min() and l1.max() <= 0.5 and l1.std() > 0 and eps1.shape == enc.previous_latent.shape
    with pytest.raises(Exception, match="context_noise must be a noise level"):
        load_recipe("tiny-synthetic", context_noise=1.5)


def test_sampling_noises_its_own_previous_output_deterministically(tmp_path):
    """A model with the embedding samples with its inference level: reproducible, resumable, and other frames than the
    same weights sampled with a clean previous latent."""
    from magicprop.propagation import PropagationSettings
    from magicprop.propagation.propdpm.sampling import propagate

    rng = np.random.default_rng(0)
    depth, key = rng.random((5, 32, 48), dtype=np.float32), rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    noisy = get_dummy_propagation_models(context_level_embedding=True, inference_context_level=0.5)
    clean = get_dummy_propagation_models(context_level_embedding=True, inference_context_level=0.0)
    clean.propdpm.load_state_dict(noisy.propdpm.state_dict())
    settings = PropagationSettings(num_inference_steps=2, seed=3)
    a = propagate(noisy, depth, key, 0, settings, progress=False)
    assert np.array_equal(a, propagate(noisy, depth, key, 0, settings, progress=False))
    assert np.array_equal(a[0], key) and not np.array_equal(a, propagate(clean, depth, key, 0, settings, progress=False))
    first = propagate(noisy, depth, key, 0, settings, progress=False, work_dir=tmp_path / "w")
    (tmp_path / "w" / "steps" / "00004.safetensors").unlink()  # as if killed during the last step
    assert np.array_equal(propagate(noisy, depth, key, 0, settings, progress=False, work_dir=tmp_path / "w", resume=True), first)
