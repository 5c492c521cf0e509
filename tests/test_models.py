"""PropDPM, the appearance adaptor, the zero-terminal-SNR schedulers and the on-disk bundle."""

import json

import pytest
import torch

from fixtures import DUMMY_PROPDPM, get_dummy_propagation_models, get_dummy_propdpm, get_dummy_unet, save_dummy_propagation_models
from magicprop.errors import UsageError
from magicprop.models import AppearanceAdapter, PropagationModels, PropDPM, assemble_conditioning
from magicprop.models.configs import PROPDPM_CONFIGS
from magicprop.schedulers import make_scheduler


def _inputs(b=2, h=8, w=12, c=16, grid=(4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "noisy": torch.randn(b, 4, h, w, generator=g),
        "target_depth": torch.rand(b, 1, h * 2, w * 2, generator=g),  # any size: resized to the latent grid
        "previous_latent": torch.randn(b, 4, h, w, generator=g),
        "previous_depth": torch.rand(b, 1, h * 2, w * 2, generator=g),
        "clip": torch.randn(b, 1 + grid[0] * grid[1], c, generator=g),
        "ref_latent": torch.randn(b, 4, h, w, generator=g),
    }


@pytest.mark.parametrize("h,w,grid", [(8, 8, (4, 4)), (6, 10, (4, 4)), (8, 12, (3, 5)), (7, 9, (2, 2))])
def test_adapter_shapes_square_and_non_square(h, w, grid):
    torch.manual_seed(0)
    adapter = AppearanceAdapter(embed_dim=16)
    clip = torch.randn(2, 1 + grid[0] * grid[1], 16)
    out = adapter(clip, torch.randn(2, 4, h, w), clip_grid=grid if grid[0] != grid[1] else None)
    assert out.shape == (2, 1 + (h // 2) * (w // 2), 16)
    assert torch.equal(out[:, 0], clip[:, 0])  # the class token passes untouched, as in the listing


def test_adapter_rejects_non_square_grid_without_hint_and_wrong_width():
    adapter = AppearanceAdapter(embed_dim=16)
    with pytest.raises(ValueError, match="square grid"):
        adapter(torch.randn(1, 1 + 15, 16), torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="width 8"):
        adapter(torch.randn(1, 17, 8), torch.randn(1, 4, 8, 8))


def test_adapter_parameter_count_matches_the_listing_at_sd_width():
    # Listing 1 at C = 768: 1x1 convs 768->384->384, 3x3 4->384, 1x1 384->384, two 3x3 768->768.
    expected = (768 * 384 + 384) + (384 * 384 + 384) + (4 * 384 * 9 + 384) + (384 * 384 + 384) + 2 * (768 * 768 * 9 + 768)
    assert sum(p.numel() for p in AppearanceAdapter(768).parameters()) == expected


def test_clip_only_ablation_ignores_the_latent():
    torch.manual_seed(0)
    adapter = AppearanceAdapter(embed_dim=16, use_vae=False)
    clip = torch.randn(1, 17, 16)
    a = adapter(clip, torch.randn(1, 4, 8, 8))
    b = adapter(clip, torch.randn(1, 4, 8, 8))
    assert torch.equal(a, b)


@pytest.mark.parametrize("h,w", [(8, 8), (8, 12)])
def test_propdpm_forward_shape_and_determinism(h, w):
    model = get_dummy_propdpm()
    assert model.num_input_channels == 10
    x = _inputs(h=h, w=w)
    with torch.no_grad():
        tokens = model.encode_reference(x["clip"], x["ref_latent"])
        cond = assemble_conditioning(x["target_depth"], x["previous_latent"], x["previous_depth"], tokens)
        assert cond.spatial.shape == (2, 6, h, w)
        assert tokens.shape == (2, 1 + (h // 2) * (w // 2), 16)
        out1 = model(x["noisy"], 500, cond)
        out2 = get_dummy_propdpm()(x["noisy"], 500, cond)
    assert out1.shape == (2, 4, h, w)
    assert torch.equal(out1, out2)


def test_single_vs_batch_equality():
    model = get_dummy_propdpm()
    x = _inputs(b=2)
    with torch.no_grad():
        tokens = model.encode_reference(x["clip"], x["ref_latent"])
        batch = model(x["noisy"], 500, assemble_conditioning(x["target_depth"], x["previous_latent"], x["previous_depth"], tokens))
        single = model(
            x["noisy"][1:], 500,
            assemble_conditioning(x["target_depth"][1:], x["previous_latent"][1:], x["previous_depth"][1:], tokens[1:]),
        )  # fmt: skip
    torch.testing.assert_close(batch[1:], single, atol=1e-5, rtol=1e-4)


def test_save_load_equality(tmp_path):
    model = get_dummy_propdpm()
    with torch.no_grad():  # perturb so that loading the init by accident would not pass
        for p in model.parameters():
            p.add_(0.01)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = PropDPM.from_pretrained(tmp_path, use_safetensors=True)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert json.loads((tmp_path / "config.json").read_text())["cross_attention_dim"] == 16


def test_from_stable_diffusion_is_exactly_the_sd_unet_at_init():
    unet = get_dummy_unet()
    with torch.no_grad():  # non-trivial weights, including the zero-initialised output conv of diffusers
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model = PropDPM.from_stable_diffusion(unet).eval()
    assert model.unet.conv_in.weight.shape[1] == 10
    assert torch.count_nonzero(model.unet.conv_in.weight[:, 4:]) == 0
    x = _inputs()
    states = torch.randn(2, 9, 16)
    with torch.no_grad():
        expected = unet(x["noisy"], 321, encoder_hidden_states=states).sample
        cond = assemble_conditioning(x["target_depth"], x["previous_latent"], x["previous_depth"], states)
        got = model(x["noisy"], 321, cond)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_from_stable_diffusion_refuses_a_non_sd_unet():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(in_channels=9, out_channels=4, **DUMMY_PROPDPM)
    with pytest.raises(UsageError, match="9 input"):
        PropDPM.from_stable_diffusion(unet)


def test_known_output_slice():
    model = get_dummy_propdpm()
    x = _inputs(b=1)
    with torch.no_grad():
        tokens = model.encode_reference(x["clip"], x["ref_latent"])
        out = model(x["noisy"], 10, assemble_conditioning(x["target_depth"], x["previous_latent"], x["previous_depth"], tokens))
    got = out[0, 0, 0, :4]
    expected = torch.tensor(KNOWN_SLICE)
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-3)


# Recorded from the dummy model (torch 2.13 CPU); a change here means the architecture or its init changed.
KNOWN_SLICE = [0.1075, -0.3156, -0.3453, -0.3297]


def test_named_configs_build():
    assert set(PROPDPM_CONFIGS) >= {"sd15", "tiny"}
    tiny = PropDPM.from_config_name("tiny")
    assert tiny.config.cross_attention_dim == 64
    # sd15 matches SD 1.5's UNet: checked from the config alone (building it takes 3.5 GB)
    assert PROPDPM_CONFIGS["sd15"]["block_out_channels"] == (320, 640, 1280, 1280)
    assert PROPDPM_CONFIGS["sd15"]["cross_attention_dim"] == 768


def test_drop_previous_and_null_reference():
    model = get_dummy_propdpm()
    x = _inputs(b=2)
    drop = torch.tensor([True, False])
    cond = assemble_conditioning(x["target_depth"], x["previous_latent"], x["previous_depth"], x["clip"], drop_previous=drop)
    assert torch.count_nonzero(cond.spatial[0, 1:]) == 0 and torch.count_nonzero(cond.spatial[1, 1:]) > 0
    with torch.no_grad():
        null = model.encode_reference(x["clip"], x["ref_latent"], drop=torch.tensor([True, True]))
        zero = model.encode_reference(torch.zeros_like(x["clip"]), torch.zeros_like(x["ref_latent"]))
    torch.testing.assert_close(null, zero)


@pytest.mark.parametrize("name", ["ddim", "dpmsolver++", "ddpm"])
def test_scheduler_zero_terminal_snr(name):
    s = make_scheduler(name)
    assert s.config.prediction_type == "v_prediction"
    assert s.config.timestep_spacing == "trailing"
    assert s.alphas_cumprod[-1].item() < 1e-7  # DPM-Solver clamps 0 to 2**-24 to keep log-SNR finite
    s.set_timesteps(4)
    assert int(s.timesteps[0]) == 999  # sampling starts from pure noise at t = T
    standard = make_scheduler(name, zero_snr=False)
    assert standard.alphas_cumprod[-1].item() > 1e-3


def test_bundle_round_trip_and_wrong_folder(tmp_path):
    folder = save_dummy_propagation_models(tmp_path / "model")
    loaded = PropagationModels.from_pretrained(folder)
    original = get_dummy_propagation_models()
    for a, b in zip(original.propdpm.state_dict().values(), loaded.propdpm.state_dict().values()):
        assert torch.equal(a, b)
    assert loaded.scheduler_config["rescale_betas_zero_snr"] is True
    with pytest.raises(UsageError, match="not a magicprop propagation model"):
        PropagationModels.from_pretrained(tmp_path / "model" / "vae")


# ---------------------------------------------------------------------------------------------------------------------
# The flow-warped previous latent (beyond the paper; FlowVid-style)
# ---------------------------------------------------------------------------------------------------------------------
def test_warp_latent_zero_flow_is_identity_and_integer_shift_moves_cells():
    from magicprop.models.propdpm import warp_latent

    latent = torch.randn(2, 4, 8, 12)
    torch.testing.assert_close(warp_latent(latent, torch.zeros(2, 2, 32, 48)), latent)
    # target[y, x] = previous[y + 1, x + 2] in latent cells = (4, 8) pixels at a factor of 4
    flow = torch.zeros(2, 2, 32, 48)
    flow[:, 0], flow[:, 1] = 8.0, 4.0
    warped = warp_latent(latent, flow)
    torch.testing.assert_close(warped[..., :-1, :-2], latent[..., 1:, 2:])
    torch.testing.assert_close(warped[..., -1, :-2], latent[..., -1, 2:])  # beyond the frame: the border repeats


def test_warped_previous_model_takes_14_channels_and_needs_the_flow():
    model = get_dummy_propdpm(use_warped_previous=True).eval()
    assert model.num_input_channels == 14 and model.unet.conv_in.weight.shape[1] == 14
    x = _inputs()
    states = torch.randn(2, 9, 16)
    flow = torch.zeros(2, 2, 32, 32)
    with torch.no_grad():
        cond = assemble_conditioning(x["target_depth"], x["previous_latent"], x["previous_depth"], states, previous_flow=flow)
        assert cond.spatial.shape[1] == 10
        # zero flow: the warped channels are the previous latent itself
        torch.testing.assert_close(cond.spatial[:, 6:], x["previous_latent"])
        assert model(x["noisy"], 10, cond).shape == x["noisy"].shape
        without = assemble_conditioning(x["target_depth"], x["previous_latent"], x["previous_depth"], states)
        with pytest.raises(UsageError, match="needs the source's optical flow"):
            model(x["noisy"], 10, without)
        dropped = assemble_conditioning(x["target_depth"], x["previous_latent"], x["previous_depth"], states,
                                        previous_flow=flow, drop_previous=torch.tensor([True, False]))  # fmt: skip
        assert torch.count_nonzero(dropped.spatial[0, 1:]) == 0 and torch.count_nonzero(dropped.spatial[1, 6:]) > 0


def test_from_stable_diffusion_with_warped_previous_is_still_the_sd_unet_at_init():
    unet = get_dummy_unet()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model = PropDPM.from_stable_diffusion(unet, use_warped_previous=True).eval()
    assert model.unet.conv_in.weight.shape[1] == 14 and torch.count_nonzero(model.unet.conv_in.weight[:, 4:]) == 0
    x = _inputs()
    states = torch.randn(2, 9, 16)
    with torch.no_grad():
        expected = unet(x["noisy"], 321, encoder_hidden_states=states).sample
        cond = assemble_conditioning(x["target_depth"], x["previous_latent"], x["previous_depth"], states,
                                     previous_flow=torch.randn(2, 2, 32, 32))  # fmt: skip
        torch.testing.assert_close(model(x["noisy"], 321, cond), expected, atol=1e-6, rtol=1e-5)


def test_residual_conditioning_adds_back_the_warped_previous_latent():
    """predict_residual: `base` is the warped previous latent, to_sample/to_latent subtract and add it back."""
    from magicprop.models.propdpm import warp_latent

    with pytest.raises(ValueError, match="needs use_warped_previous"):
        get_dummy_propdpm(predict_residual=True)
    g = torch.Generator().manual_seed(0)
    prev, z = torch.randn(2, 4, 8, 12, generator=g), torch.randn(2, 4, 8, 12, generator=g)
    flow = torch.randn(2, 2, 16, 24, generator=g) * 3
    depth, tokens = torch.rand(2, 1, 16, 24, generator=g), torch.randn(1, 5, 32, generator=g)
    cond = assemble_conditioning(depth, prev, depth, tokens, previous_flow=flow, residual=True)
    torch.testing.assert_close(cond.base, warp_latent(prev, flow))
    torch.testing.assert_close(cond.to_sample(z), z - cond.base)
    torch.testing.assert_close(cond.to_latent(cond.to_sample(z)), z)
    plain = assemble_conditioning(depth, prev, depth, tokens, previous_flow=flow)
    assert plain.base is None and plain.to_latent(z) is z and torch.equal(plain.spatial, cond.spatial)  # same inputs
    # a dropped previous frame has no base: such samples learn the whole latent, as the first frame of a chain needs
    dropped = assemble_conditioning(depth, prev, depth, tokens, previous_flow=flow, residual=True,
                                    drop_previous=torch.tensor([True, False]))  # fmt: skip
    assert dropped.base[0].abs().max() == 0 and torch.equal(dropped.base[1], cond.base[1])
    with pytest.raises(ValueError, match="pass previous_flow"):
        assemble_conditioning(depth, prev, depth, tokens, residual=True)
