"""PropDPM at its real size, on the `meta` device (shapes only: seconds, no memory): SD 1.5's UNet converted as a real
one is, CLIP ViT-L/14's tokens through the adaptor, `assemble_conditioning`, one UNet call, and what it costs. A change
that breaks the real size fails here, not on a user's GPU. `benchmarks/real_size.py` runs the same models for real.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from magicprop.models import PropDPM, real
from magicprop.models.encoders import clip_image_tokens, vae_encode


@pytest.fixture(scope="module")
def meta():
    with torch.device("meta"):
        unet = real.sd15_unet()
        return {"unet": unet, "propdpm": PropDPM.from_stable_diffusion(real.sd15_unet()), "vae": real.sd15_vae(),
                "clip": real.clip_vision_tower()}  # fmt: skip


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_the_public_models_have_their_published_sizes(meta):
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(meta["unet"]) == 859_520_964  # stable-diffusion-v1-5 unet/
    assert count(meta["vae"]) == 83_653_863
    assert count(meta["clip"]) == 303_966_208  # CLIP ViT-L/14 vision tower + visual projection
    assert count(meta["propdpm"]) - count(meta["unet"]) == 11_223_552 + 320 * 6 * 9  # the adaptor, conv_in's new channels
    with torch.device("meta"):
        assert count(real.depth_controlnet()) == 361_279_120  # pinned as built (published: 361.3M)
        assert count(real.depth_anything_small()) == 24_785_089  # Depth-Anything-V2-Small-hf


@pytest.mark.parametrize("resolution", [256, 512])
def test_real_size_shapes_through_the_adaptor_conditioning_and_one_unet_call(meta, resolution):
    h = resolution // 8
    image = torch.rand(1, 3, resolution, resolution, device="meta")
    tokens = clip_image_tokens(meta["clip"], image)
    assert tokens.shape == (1, 1 + 16 * 16, 768)  # 1024 wide inside the tower, projected to SD's cross-attention width
    latent = vae_encode(meta["vae"], image)
    assert latent.shape == (1, 4, h, h)
    propdpm = meta["propdpm"]
    x, t, cond, _ = real.example_conditioning(propdpm, resolution, batch=2, image_encoder=meta["clip"])
    assert cond.spatial.shape == (2, 6, h, h) and cond.reference_tokens.shape == (1, 1 + (h // 2) ** 2, 768)
    null = propdpm.encode_reference(tokens, latent, drop=torch.ones(1, dtype=torch.bool, device="meta"))
    assert null.shape == cond.reference_tokens.shape
    kv = propdpm.cache_reference(torch.cat([cond.reference_tokens, null]))
    assert propdpm(x, t, cond).shape == propdpm(x, t, cond, kv.select([0, 1])).shape == (2, 4, h, h)


def test_anchored_and_warped_models_take_their_channels_at_real_size():
    with torch.device("meta"):
        model = PropDPM.from_stable_diffusion(real.sd15_unet(), use_anchored_reference=True, use_warped_previous=True)
    assert model.unet.conv_in.weight.shape == (320, 4 + 6 + 4 + 5, 3, 3)
    x, t, cond, _ = real.example_conditioning(model, 256, batch=1)
    cond.spatial = torch.cat([cond.spatial, torch.zeros(1, 4, 32, 32, device="meta")], 1)  # the warped previous latent
    assert model(x, t, cond).shape == (1, 4, 32, 32)


def test_propdpm_costs_at_most_five_percent_more_than_a_plain_sd_call_at_the_papers_size(meta):
    """Per frame, from FLOPs: the reference's keys and values are cached once per clip (models/attention.py); the rest
    is attention over 257 reference tokens instead of 77 text tokens and conv_in's 6 more input channels."""
    ratios = {}
    for resolution in (256, 512):
        h = resolution // 8
        x, t, cond, _ = real.example_conditioning(meta["propdpm"], resolution, batch=1)
        kv = meta["propdpm"].cache_reference(cond.reference_tokens).select(None)
        cached = flops(lambda: meta["propdpm"](x, t, cond, kv))
        uncached = flops(lambda: meta["propdpm"](x, t, cond))
        plain = flops(lambda: meta["unet"](x, t, encoder_hidden_states=torch.randn(1, 77, 768, device="meta")))
        ratios[resolution] = (uncached / plain, cached / plain)
    assert ratios[256][1] <= 1.0 < 1.05 <= ratios[256][0]  # 0.995 cached, 1.050 before
    assert ratios[512][1] < 1.052 < 1.09 < ratios[512][0]  # 1.051 cached (1025 reference tokens), 1.100 before


def test_the_tokenizer_has_clips_vocabulary_size(tmp_path):
    tokenizer = real.write_clip_tokenizer(tmp_path / "tokenizer")
    ids = tokenizer("a watercolor painting of a city")["input_ids"]
    assert len(tokenizer) == 49408 and ids[0] == 49406 and ids[-1] == 49407 and max(ids[1:-1]) < 49406


def test_frames_decode_in_batches_of_at_most_eight_256x256_frames_of_pixels():
    """SD's VAE decoder holds ~0.38 GB of bf16 activations per 256x256 frame: 8 frames at 512x512 held 3.0 GB."""
    from magicprop.propagation.propdpm.sampling import decode_batch_size

    assert [decode_batch_size(*s) for s in ((64, 64), (256, 256), (256, 512), (512, 512), (1080, 1920))] == [8, 8, 4, 2, 1]
