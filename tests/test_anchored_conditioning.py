"""Anchored conditioning (`use_anchored_reference`: the keyframe warped through its anchored map + validity, 5 more
input channels) and self-rollout training (`self_rollout`: the previous latent is the model's own sample of it), both
beyond the paper: one conditioning function for training and inference, the null reference, SD's zero-init, what the
model sees in a rollout, and tiny end-to-end runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures import (
    get_dummy_propagation_models, get_dummy_propdpm, get_dummy_unet, training_workspace,
)  # fmt: skip

from magicprop.models.propdpm import PropDPM, assemble_conditioning, depth_to_latent_grid, warp_latent

OPTIONS = {  # recipe -> PropDPM options
    "paper": {},
    "warped": {"use_warped_previous": True},
    "anchored": {"use_anchored_reference": True},
    "anchored+warped": {"use_anchored_reference": True, "use_warped_previous": True},
}


def _inputs(b=2, seed=0, width=16, anchored=False, flow=False):
    g = torch.Generator().manual_seed(seed)
    x = dict(target_depth=torch.rand(b, 1, 32, 32, generator=g), previous_latent=torch.randn(b, 4, 16, 16, generator=g),
             previous_depth=torch.rand(b, 1, 32, 32, generator=g), reference_tokens=torch.randn(1, 65, width, generator=g))  # fmt: skip
    if flow:
        x["previous_flow"] = torch.randn(b, 2, 32, 32, generator=g)
    if anchored:
        x["anchored_latent"] = torch.randn(b, 4, 16, 16, generator=g)
        x["anchored_valid"] = (torch.rand(b, 1, 32, 32, generator=g) > 0.3).float()
    return x


@pytest.mark.parametrize("name", list(OPTIONS))
def test_channel_count_and_layout_for_each_recipe(name):
    options = OPTIONS[name]
    anchored, warped = options.get("use_anchored_reference", False), options.get("use_warped_previous", False)
    model = get_dummy_propdpm(**options)
    x = _inputs(anchored=anchored, flow=warped)
    cond = assemble_conditioning(**x)
    assert model.num_input_channels == 10 + 4 * warped + 5 * anchored == 4 + cond.spatial.shape[1]
    s = cond.spatial
    torch.testing.assert_close(s[:, 0:1], depth_to_latent_grid(x["target_depth"], (16, 16)))
    torch.testing.assert_close(s[:, 1:5], x["previous_latent"])
    torch.testing.assert_close(s[:, 5:6], depth_to_latent_grid(x["previous_depth"], (16, 16)))
    if warped:
        torch.testing.assert_close(s[:, 6:10], warp_latent(x["previous_latent"], x["previous_flow"]))
    if anchored:  # always last: the keyframe's latent, then the valid fraction of each latent cell in [0, 1]
        torch.testing.assert_close(s[:, -5:-1], x["anchored_latent"])
        torch.testing.assert_close(s[:, -1:], torch.nn.functional.avg_pool2d(x["anchored_valid"], 2))
    with torch.no_grad():
        assert model(torch.randn(2, 4, 16, 16), 500, cond).shape == (2, 4, 16, 16)
    if anchored:  # a model with the option refuses conditions without the anchored keyframe, in one line
        with pytest.raises(Exception, match="needs the anchored keyframe"):
            model(torch.randn(2, 4, 16, 16), 500, assemble_conditioning(**_inputs(flow=warped)))


def test_null_reference_zeroes_the_anchored_channels_in_training_and_guidance(monkeypatch):
    x = _inputs(anchored=True)
    cond = assemble_conditioning(**x, drop_reference=torch.tensor([True, False]))
    assert cond.spatial[0, -5:].abs().max() == 0 and cond.spatial[1, -5:].abs().max() > 0
    torch.testing.assert_close(cond.spatial[:, :-5], assemble_conditioning(**x).spatial[:, :-5])  # nothing else changes

    # training: PropDPMTraining drops the anchored channels with the reference (what the UNet receives)
    from magicprop.schedulers import make_scheduler
    from magicprop.training.loop import PropDPMTraining

    model = get_dummy_propdpm(use_anchored_reference=True)
    seen = []
    model.unet.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    training = PropDPMTraining(model, make_scheduler("ddpm"))
    drop = torch.tensor([True, False])
    with torch.no_grad():
        training(torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16), torch.tensor([10, 900]), x["target_depth"],
                 x["previous_latent"], x["previous_depth"], torch.randn(2, 5, 16), torch.randn(2, 4, 16, 16), drop,
                 torch.zeros(2, dtype=torch.bool), anchored_latent=x["anchored_latent"], anchored_valid=x["anchored_valid"])  # fmt: skip
    assert seen[0][0, -5:].abs().max() == 0 and seen[0][1, -5:].abs().max() > 0

    # guidance: the null branch gets zeros where the conditional branch gets the warped keyframe
    from magicprop.propagation import PropagationSettings
    from magicprop.propagation.propdpm import sampling

    calls = []
    real = sampling.denoise
    monkeypatch.setattr(sampling, "denoise", lambda *a, **k: calls.append(a) or real(*a, **k))
    models = get_dummy_propagation_models(use_anchored_reference=True)
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    sampling.propagate(models, rng.random((3, 32, 32), dtype=np.float32), video[1], 1,
                       PropagationSettings(num_inference_steps=1, guidance_scale=2.0), progress=False, video=video)  # fmt: skip
    cond, null = calls[0][3], calls[0][5]
    assert null.spatial[:, -5:].abs().max() == 0 and cond.spatial[:, -5:].abs().max() > 0
    torch.testing.assert_close(null.spatial[:, :-5], cond.spatial[:, :-5])


@pytest.mark.parametrize("options", [{"use_anchored_reference": True}, {"use_anchored_reference": True, "use_warped_previous": True}])
def test_converted_from_sd_with_the_option_gives_exactly_sds_output(options):
    unet = get_dummy_unet()
    model = PropDPM.from_stable_diffusion(unet, **options).eval()
    assert model.unet.conv_in.weight.shape[1] == model.num_input_channels and model.unet.conv_in.weight[:, 4:].abs().max() == 0
    x = _inputs(anchored=True, flow=options.get("use_warped_previous", False))
    noisy = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = model(noisy, 321, assemble_conditioning(**x))
        sd = unet(noisy, 321, encoder_hidden_states=x["reference_tokens"].expand(2, -1, -1)).sample
    torch.testing.assert_close(ours, sd, rtol=0, atol=1e-6)


def test_training_and_inference_build_the_same_anchored_channels(tmp_path, monkeypatch):
    """An edited synthetic clip: the dataset's maps follow source.mp4 and warp edited.mp4's reference frame; the sampling
    loop, given the source frames as `video` and that edited frame as keyframe, must give PropDPM the same inputs."""
    from magicprop.models.encoders import vae_encode
    from magicprop.propagation import PropagationSettings
    from magicprop.propagation.propdpm import sampling
    from magicprop.synthetic import render_clip, write_clip
    from magicprop.training.data import FrameSampling, RawTripletDataset, read_clip_frames
    from magicprop.training.sources import discover_clips

    write_clip(render_clip(3, frames=8, size=(32, 32)), tmp_path / "clips" / "c")
    clips = discover_clips(tmp_path / "clips", synthetic_edited=True).clips
    edited = [i for i, c in enumerate(clips) if c.video == "edited.mp4"][0]
    sampling_ = FrameSampling(32, 8, 1)
    data = RawTripletDataset(clips, sampling_, 0, with_anchor=True, with_pp=True)
    clip = data.load(edited)
    r, pp, p, t = 1, 3, 4, 5
    sample = data.make_sample(clip, (r, p, t))
    source = read_clip_frames(clips[1 - edited], sampling_)  # source.mp4, read on its own
    assert not np.array_equal(source, clip.frames)  # the maps follow the source, the warp carries the edit

    captured = []
    real = sampling.assemble_conditioning
    monkeypatch.setattr(sampling, "assemble_conditioning", lambda **k: captured.append(k) or real(**k))
    models = get_dummy_propagation_models(use_anchored_reference=True)
    sampling.propagate(models, clip.depth, clip.frames[r], r, PropagationSettings(num_inference_steps=1), progress=False,
                       video=source)  # fmt: skip
    by_target = {}  # step s renders frame r + s (and r - s): the first row is the forward chain's
    for s, k in enumerate(captured, 1):
        by_target[r + s] = (k["anchored_latent"][0], k["anchored_valid"][0])
    for frame, image, valid in ((t, "target_anchored", "target_anchored_valid"), (p, "previous_anchored", "previous_anchored_valid")):
        latent, mask = by_target[frame]
        assert torch.equal(sample[valid], mask)  # the same chain over the same frames: the same validity, exactly
        with torch.no_grad():
            ours = vae_encode(models.vae, sample[image][None])[0]
        torch.testing.assert_close(ours, latent, rtol=0, atol=1e-5)
    assert 0 < sample["target_anchored_valid"].mean() < 1  # the clip moves: some pixels are explained, not all
    assert not torch.equal(sample["target_anchored"], sample["reference"])  # warped, not copied
    assert torch.equal(sample["pp"], torch.from_numpy(clip.frames[pp]).permute(2, 0, 1).float() / 255)


def test_keyframe_warp_gives_the_same_frames_in_any_order():
    """The dataset asks for frames in any order (keep=True), sampling walks them in order once: same warps either way."""
    from fixtures import panning_clip

    from magicprop.propagation.flow.keyframe_warp import KeyframeWarp

    video = panning_clip(7, 32, (1, 2))
    key = video[3][..., ::-1].copy()  # an "edit": the channels swapped
    fresh = {t: KeyframeWarp(video, key, 3).warp(t) for t in range(7)}
    kept, walking = KeyframeWarp(video, key, 3, keep=True), KeyframeWarp(video, key, 3)
    for t in (6, 1, 4, 0, 5, 2, 3, 6):
        for warp in (kept, walking):
            image, valid = warp.warp(t)
            assert np.array_equal(image, fresh[t][0]) and np.array_equal(valid, fresh[t][1]), t
    assert np.array_equal(fresh[3][0], key) and fresh[3][1].all()
    error = np.abs(fresh[5][0][8:-8, 8:-8].astype(int) - key[10:-6, 12:-4])  # 2 frames on: 2 px down, 4 right, sub-pixel maps
    assert fresh[5][1][8:-8, 8:-8].all() and error.mean() < 0.5 and error.max() <= 3


def test_hybrid_with_an_anchored_model_walks_each_map_once(monkeypatch):
    """`hybrid` warps the keyframe for its fusion and an anchored PropDPM warps it for its conditioning: the sampling
    loop reuses the fusion's maps (two chains, keyframe in the middle), and the frames are those of separate walks."""
    from fixtures import panning_clip

    from magicprop.propagation import PROPAGATORS, PropagationRequest, PropagationSettings
    from magicprop.propagation.flow import maps as anchored_maps
    from magicprop.propagation.propdpm import fusion, propagators as learned

    models = get_dummy_propagation_models(use_anchored_reference=True)
    video = panning_clip(7, 32, (1, 2))
    depth = np.linspace(0, 1, 7 * 32 * 32, dtype=np.float32).reshape(7, 32, 32)
    run = lambda propagator=PROPAGATORS["hybrid"]: np.stack(list(propagator(PropagationRequest(  # noqa: E731
        source=video, keyframes={3: video[3][..., ::-1].copy()}, depth=depth, models=models,
        settings=PropagationSettings(num_inference_steps=2, seed=1), progress=False))))  # fmt: skip
    walked = []
    advance = anchored_maps.AnchoredChain.advance
    monkeypatch.setattr(anchored_maps.AnchoredChain, "advance", lambda self: walked.append(self.index) or advance(self))
    shared = run()
    assert len(walked) == 6  # one walk of 3 frames per direction, shared by conditioning and fusion

    # a fusion over a copy of the source is not the loop's video: sampling walks its own maps
    walked.clear()
    separate = run(learned.HybridPropagator(lambda r: fusion.AnchoredFusion(r.source.copy(), r.keyframe, r.keyframe_index)))
    assert len(walked) == 12 and np.array_equal(shared, separate)


def test_triplets_with_pp_keep_the_old_draws_without_it():
    from magicprop.training.data import choose_triplet

    def old(n, rng):  # choose_triplet before self-rollout
        previous = int(rng.integers(0, n - 1))
        target = previous + 1
        if rng.random() < 0.5:
            previous, target = target, previous
        others = [i for i in range(n) if i not in (previous, target)]
        return int(others[rng.integers(0, len(others))]), previous, target

    for seed in range(200):
        n = 3 + seed % 6
        assert choose_triplet(n, np.random.default_rng(seed)) == old(n, np.random.default_rng(seed))
        ref, prev, target = choose_triplet(n, np.random.default_rng(seed), with_pp=True)
        pp = 2 * prev - target
        assert abs(prev - target) == 1 and 0 <= pp < n and ref not in (prev, target)


def _batch(b=4, seed=0):
    from magicprop.training.loop import EncodedBatch
    from magicprop.training.rollout import RolloutInputs

    g = torch.Generator().manual_seed(seed)
    lat = lambda: torch.randn(b, 4, 16, 16, generator=g)  # noqa: E731
    depth = lambda: torch.rand(b, 1, 32, 32, generator=g)  # noqa: E731
    return EncodedBatch(lat(), lat(), lat(), torch.randn(b, 5, 16, generator=g), depth(), depth(),
                        rollout=RolloutInputs(lat(), depth()))  # fmt: skip


def test_a_self_rollout_step_trains_on_the_models_own_previous_without_gradient():
    """self_rollout = 1: the previous latent the UNet is trained on is a 2-step DDIM sample of PropDPM itself from pp
    (the rollout's noise drawn after every other draw), computed without gradient: the gradients equal those of a plain
    step given that latent as a constant."""
    from magicprop.schedulers import make_scheduler
    from magicprop.training.loop import PropDPMTraining, diffusion_loss
    from magicprop.training.recipes import load_recipe

    model = get_dummy_propdpm().train()
    calls = []
    model.unet.register_forward_pre_hook(lambda m, args: calls.append((args[0].detach().clone(), torch.is_grad_enabled())))
    training = PropDPMTraining(model, make_scheduler("ddpm"))
    enc, b = _batch(), 4
    recipe = load_recipe("tiny-synthetic", self_rollout=1.0, self_rollout_steps=2, drop_reference=0.0, drop_previous=0.0)
    diffusion_loss(training, training.noise_scheduler, enc, recipe, torch.Generator().manual_seed(7)).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert [grad for _, grad in calls] == [False, False, True]  # two rollout steps under no_grad, then the trained one
    trained_previous = calls[2][0][:, 5:9]  # UNet input: noisy latent (4), target depth, previous latent (4), ...

    # the same draws by hand: noise, timesteps, the two drops, then the rollout's choice and its starting noise
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(enc.target_latent.shape, generator=g)
    timesteps = torch.randint(0, 1000, (b,), generator=g)
    torch.rand(b, generator=g), torch.rand(b, generator=g), torch.rand(b, generator=g)
    start = torch.randn(enc.target_latent.shape, generator=g)
    ddim = make_scheduler("ddim")
    ddim.set_timesteps(2)
    with torch.no_grad():
        cond = assemble_conditioning(enc.previous_depth, enc.rollout.pp_latent, enc.rollout.pp_depth,
                                     model.encode_reference(enc.clip_tokens, enc.reference_latent))  # fmt: skip
        latent = start * ddim.init_noise_sigma
        for t in ddim.timesteps:
            latent = ddim.step(model(ddim.scale_model_input(latent, t), t, cond), t, latent).prev_sample
    torch.testing.assert_close(trained_previous, latent, rtol=0, atol=1e-5)
    assert (trained_previous - enc.previous_latent).abs().mean() > 0.1  # not the true previous latent

    model.zero_grad(set_to_none=True)
    no = torch.zeros(b, dtype=torch.bool)
    pred, target_v = training(enc.target_latent, noise, timesteps, enc.target_depth, trained_previous, enc.previous_depth,
                              enc.clip_tokens, enc.reference_latent, no, no)  # fmt: skip
    torch.nn.functional.mse_loss(pred, target_v).backward()
    for n, p in model.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-5, atol=1e-7)


def test_only_the_chosen_samples_roll_out_and_recipes_are_checked():
    from magicprop.errors import UsageError
    from magicprop.schedulers import make_scheduler
    from magicprop.training.loop import PropDPMTraining, diffusion_loss
    from magicprop.training.recipes import load_recipe

    model = get_dummy_propdpm()
    seen = []

    class Spy(PropDPMTraining):
        def forward(self, *args, **kwargs):
            seen.append(kwargs.get("rollout"))
            return super().forward(*args, **kwargs)

    training, enc = Spy(model, make_scheduler("ddpm")), _batch(b=16)
    previous = []
    model.unet.register_forward_pre_hook(lambda m, args: previous.append(args[0][:, 5:9].detach().clone()))
    with torch.no_grad():
        recipe = load_recipe("tiny-synthetic", self_rollout=0.5)
        diffusion_loss(training, training.noise_scheduler, enc, recipe, torch.Generator().manual_seed(1))
    chosen = seen[0].chosen
    assert 0 < chosen.sum() < 16  # about half; never a sample whose previous frame is dropped (it is zeroed anyway)
    trained = previous[-1]
    dropped = trained.flatten(1).abs().amax(1) == 0
    assert not (chosen & dropped).any()
    kept = ~chosen & ~dropped
    torch.testing.assert_close(trained[kept], enc.previous_latent[kept])
    assert (trained[chosen] - enc.previous_latent[chosen]).flatten(1).abs().mean(1).min() > 0.1

    bad_recipes = {"self_rollout must be a fraction": {"self_rollout": 1.5}, "self_rollout_steps must be at least 1": {"self_rollout_steps": 0}}
    for message, bad in bad_recipes.items():
        with pytest.raises(UsageError, match=message) as info:
            load_recipe("tiny-synthetic", **bad)
        assert len(str(info.value).splitlines()) == 1


# ---------------------------------------------------------------------------------------------------------------------
# End to end: train a few steps, export, load, propagate through the registry
# ---------------------------------------------------------------------------------------------------------------------
RECIPE = {
    "resolution": 16, "frames_per_clip": 6, "frame_stride": 1, "batch_size": 4, "lr": 3e-3, "warmup_steps": 1,
    "log_every": 1, "checkpoint_every": 10, "num_workers": 0, "mixed_precision": "no", "use_ema": False, "seed": 0,
    "clip_cache": 8,
}  # fmt: skip


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return training_workspace(tmp_path_factory.mktemp("anchored"), 2, frames=8)


@pytest.mark.parametrize("options", [{"anchored_reference": True}, {"self_rollout": 0.5, "use_warped_previous": True}],
                         ids=["anchored", "rollout"])  # fmt: skip
def test_trains_exports_loads_and_propagates_deterministically(ws, tmp_path, options, capsys):
    from magicprop.cli import main
    from magicprop.models import PropagationModels
    from magicprop.propagation import PROPAGATORS, PropagationRequest, PropagationSettings
    from magicprop.synthetic import render_clip
    from magicprop.training.logs import read_log

    (tmp_path / "r.json").write_text(json.dumps({**RECIPE, **options}))
    out = tmp_path / "run"
    argv = ["train", "--config", "tiny-synthetic", "--recipe", str(tmp_path / "r.json"), "--pretrained", str(ws / "sd"),
            "--image-encoder", str(ws / "clip"), "--data", str(ws / "clips"), "--max-steps", "2", "--output-dir"]  # fmt: skip
    assert main([*argv, str(out)]) == 0
    losses = [r["loss"] for r in read_log(out / "logs" / "train_log.jsonl") if "event" not in r]
    assert len(losses) == 2 and np.isfinite(losses).all()
    models = PropagationModels.from_pretrained(out / "final")
    anchored = options.get("anchored_reference", False)
    assert models.propdpm.config.get("use_anchored_reference", False) == anchored
    assert models.propdpm.unet.conv_in.weight.shape[1] == 10 + 5 * anchored + 4 * options.get("use_warped_previous", False)

    clip = render_clip(1, frames=5, size=(16, 16))
    settings = PropagationSettings(num_inference_steps=2, seed=3)
    run = lambda **k: np.stack(list(PROPAGATORS["propdpm"](PropagationRequest(  # noqa: E731
        source=clip.source, keyframes={2: clip.edited[2]}, depth=clip.depth, models=models, settings=settings, progress=False, **k))))
    first = run(work_dir=tmp_path / "w")
    assert first.shape == (5, 16, 16, 3) and np.array_equal(first[2], clip.edited[2])
    assert np.array_equal(first, run())  # deterministic
    (tmp_path / "w" / "steps" / "00002.safetensors").unlink()  # killed after step 1: the chains are replayed to step 2
    assert np.array_equal(run(work_dir=tmp_path / "w", resume=True), first)

    if anchored:  # a cache holds no anchored maps: refused in one line before any work
        from magicprop.training.precompute import FORMAT, INDEX

        (tmp_path / "cache").mkdir()
        (tmp_path / "cache" / INDEX).write_text(json.dumps({"format": FORMAT, "clips": []}))
        capsys.readouterr()
        assert main([*argv, str(tmp_path / "run2"), "--data", str(tmp_path / "cache")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "anchored_reference needs" in err[0] and not (tmp_path / "run2" / "checkpoints").exists()
