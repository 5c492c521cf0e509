"""Stage II propagation: chains from any keyframe, determinism, guidance, resume after an interruption."""

import numpy as np
import pytest

from fixtures import get_dummy_propagation_models, panning_clip
from magicprop.errors import UsageError
from magicprop.propagation import FlowFusion, PropagationSettings
from magicprop.propagation.propdpm.sampling import propagate
from magicprop.propagation.store import LatentStore

T, H, W = 5, 32, 48  # non-square: latents 16x24, adaptor grid 8x12


@pytest.fixture(scope="module")
def models():
    return get_dummy_propagation_models()


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    depth = rng.random((T, H, W), dtype=np.float32)
    keyframe = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return depth, keyframe


FAST = PropagationSettings(num_inference_steps=2, seed=3)


@pytest.mark.parametrize("k", [0, 2, T - 1, -1])
def test_one_frame_per_source_frame_and_keyframe_unchanged(models, k):
    depth, key = _inputs()
    frames = propagate(models, depth, key, k, FAST, progress=False)
    assert frames.shape == (T, H, W, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames[k], key)
    others = [t for t in range(T) if t != k % T]
    assert all(not np.array_equal(frames[t], key) for t in others)


def test_same_seed_same_output_other_seed_differs(models):
    depth, key = _inputs()
    a = propagate(models, depth, key, 2, FAST, progress=False)
    b = propagate(models, depth, key, 2, FAST, progress=False)
    c = propagate(models, depth, key, 2, PropagationSettings(num_inference_steps=2, seed=4), progress=False)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_frames_depend_on_depth(models):
    depth, key = _inputs()
    a = propagate(models, depth, key, 0, FAST, progress=False)
    b = propagate(models, 1 - depth, key, 0, FAST, progress=False)
    assert not np.array_equal(a[1:], b[1:])


def test_guidance_runs_one_batched_forward_and_changes_output(models, monkeypatch):
    depth, key = _inputs()
    batch_sizes = []
    original = type(models.propdpm).forward

    def spy(self, sample, timestep, conditioning, *cache):
        batch_sizes.append(sample.shape[0])
        return original(self, sample, timestep, conditioning, *cache)

    monkeypatch.setattr(type(models.propdpm), "forward", spy)
    guided = propagate(models, depth, key, 2, PropagationSettings(num_inference_steps=2, guidance_scale=3.0, seed=3), progress=False)
    assert set(batch_sizes) == {4}  # 2 chains x (reference, null reference) in one forward
    batch_sizes.clear()
    plain = propagate(models, depth, key, 2, FAST, progress=False)
    assert set(batch_sizes) == {2}
    assert not np.array_equal(guided, plain)


def test_interrupted_run_resumes_to_identical_output(models, tmp_path, monkeypatch):
    depth, key = _inputs()
    reference = propagate(models, depth, key, 1, FAST, progress=False)
    work = tmp_path / "out.mp4.magicprop-work"
    calls = {"n": 0}
    original = LatentStore.save_step

    def crash_after_two(self, step, latents):
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        calls["n"] += 1
        original(self, step, latents)

    monkeypatch.setattr(LatentStore, "save_step", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        propagate(models, depth, key, 1, FAST, work_dir=work, progress=False)
    monkeypatch.setattr(LatentStore, "save_step", original)
    assert sorted(p.name for p in (work / "steps").iterdir()) == ["00001.safetensors", "00002.safetensors"]

    denoised = {"n": 0}
    from magicprop.propagation.propdpm import sampling as propagation

    real_denoise = propagation.denoise

    def counting(*args, **kwargs):
        denoised["n"] += args[2].shape[0]
        return real_denoise(*args, **kwargs)

    monkeypatch.setattr(propagation, "denoise", counting)
    resumed = propagate(models, depth, key, 1, FAST, work_dir=work, resume=True, progress=False)
    assert denoised["n"] == 1  # frames 0, 2, 3 were done; only frame 4 remained
    assert np.array_equal(resumed, reference)


def test_resume_with_other_settings_is_refused(models, tmp_path):
    depth, key = _inputs()
    work = tmp_path / "w"
    propagate(models, depth, key, 0, FAST, work_dir=work, progress=False)
    with pytest.raises(UsageError, match="other settings.*seed"):
        propagate(models, depth, key, 0, PropagationSettings(num_inference_steps=2, seed=9), work_dir=work, resume=True, progress=False)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda d, k: (d, k, 7), "outside the clip"),
        (lambda d, k: (d[0], k, 0), "frames, height, width"),
        (lambda d, k: (d, k[:30], 0), "multiple of 4"),
        (lambda d, k: (d, k.astype(np.float32), 0), "uint8 RGB"),
    ],
)
def test_bad_inputs(models, change, match):
    depth, key = _inputs()
    d, k, idx = change(depth, key)
    with pytest.raises(UsageError, match=match):
        propagate(models, d, k, idx, FAST, progress=False)


def test_a_warped_previous_model_reads_the_source_frames():
    warped = get_dummy_propagation_models(use_warped_previous=True)
    depth, key = _inputs()
    rng = np.random.default_rng(5)
    video = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    with pytest.raises(UsageError, match="pass the source frames"):
        propagate(warped, depth, key, 0, FAST, progress=False)
    with pytest.raises(UsageError, match="source frames"):
        propagate(warped, depth, key, 0, FAST, progress=False, video=video[:-1])
    a = propagate(warped, depth, key, 2, FAST, progress=False, video=video)
    assert a.shape == (T, H, W, 3) and np.array_equal(a[2], key)
    assert np.array_equal(a, propagate(warped, depth, key, 2, FAST, progress=False, video=video))
    moved = np.roll(video, 3, axis=2)  # other motion, same depth: other frames
    moved[2] = video[2]
    assert not np.array_equal(a, propagate(warped, depth, key, 2, FAST, progress=False, video=moved))


def _crash_at_step(monkeypatch, crash: int):
    """Make saving step `crash` raise, as a kill during it would; returns the real save_step to restore."""
    original = LatentStore.save_step

    def crashing(self, step, latents, frames=None):
        if step == crash:
            raise KeyboardInterrupt("simulated kill")
        original(self, step, latents, frames)

    monkeypatch.setattr(LatentStore, "save_step", crashing)
    return original


def _panning_video(seed=7):
    """A textured canvas seen through a window sliding 2 px right per frame: new content enters at the right edge."""
    return panning_clip(T, (H, W), (0, 2), seed)


def test_hybrid_fusion_keeps_carried_pixels_and_paints_only_the_holes(models):
    from magicprop.motion.flow import carry, optical_flow

    depth, key = _inputs()
    video = _panning_video()
    fused = propagate(models, depth, key, 0, FAST, progress=False, video=video, fusion=FlowFusion(video))
    plain = propagate(models, depth, key, 0, FAST, progress=False, video=video)
    assert fused.shape == (T, H, W, 3) and np.array_equal(fused[0], key)
    # Frame 1: both runs denoise the same noise from the same keyframe latent, so PropDPM's rendering is `plain[1]`;
    # fusion keeps the keyframe carried along the flow except in the holes, which get exactly that rendering.
    carried, hole = carry(key, optical_flow(video[1], video[0]), optical_flow(video[0], video[1]))
    assert 0 < hole.sum() < hole.size and hole[:, -1].all()  # the entering column at least
    assert np.array_equal(fused[1][~hole], carried[~hole])
    assert np.array_equal(fused[1][hole], plain[1][hole])
    # later frames continue from the fused frame, not from PropDPM's own latent
    assert not np.array_equal(fused[2], plain[2])


def test_hybrid_fusion_resumes_to_identical_frames_and_is_part_of_the_fingerprint(models, tmp_path, monkeypatch):
    depth, key = _inputs()
    video = _panning_video()
    settings, fusion = FAST, FlowFusion(video)
    reference = propagate(models, depth, key, 1, settings, progress=False, video=video, fusion=fusion)
    work = tmp_path / "w"
    original = _crash_at_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        propagate(models, depth, key, 1, settings, work_dir=work, progress=False, video=video, fusion=fusion)
    monkeypatch.setattr(LatentStore, "save_step", original)
    from safetensors.torch import load_file

    assert sorted(load_file(str(work / "steps" / "00002.safetensors"))) == ["3", "frame/3"]  # step 2: frame 3 (frame -1 is out)
    resumed = propagate(models, depth, key, 1, settings, work_dir=work, resume=True, progress=False, video=video, fusion=fusion)
    assert np.array_equal(resumed, reference)
    with pytest.raises(UsageError, match="other settings.*fusion"):
        propagate(models, depth, key, 1, FAST, work_dir=work, resume=True, progress=False, video=video)


def test_a_residual_model_samples_the_correction_to_the_warped_previous_latent():
    """Same weights, residual or not, same inputs and noise: a residual model's frame is the plain model's sample plus
    the previous latent warped along the source's flow (then the chains differ, as their previous latents do)."""
    import torch

    from magicprop.models.propdpm import warp_latent
    from magicprop.models.encoders import images_to_tensor, vae_encode
    from magicprop.motion.flow import optical_flow
    from magicprop.propagation.propdpm.sampling import propagate_latents

    residual = get_dummy_propagation_models(use_warped_previous=True, predict_residual=True)
    plain = get_dummy_propagation_models(use_warped_previous=True)
    pairs = zip(residual.propdpm.state_dict().values(), plain.propdpm.state_dict().values())
    assert all(torch.equal(a, b) for a, b in pairs)
    depth, key = _inputs()
    video = _panning_video()
    z_res = propagate_latents(residual, depth, key, 0, FAST, progress=False, video=video)[0].load_step(1)[0][1]
    z_plain = propagate_latents(plain, depth, key, 0, FAST, progress=False, video=video)[0].load_step(1)[0][1]
    flow = torch.from_numpy(optical_flow(video[1], video[0])).permute(2, 0, 1)[None]
    base = warp_latent(vae_encode(residual.vae, images_to_tensor(key, "cpu", torch.float32)), flow)[0]
    assert base.abs().mean() > 0.01  # a base that is there to add
    torch.testing.assert_close(z_res, z_plain + base, atol=1e-5, rtol=1e-5)
    frames = propagate(residual, depth, key, 0, FAST, progress=False, video=video)
    assert frames.shape == (T, H, W, 3) and np.array_equal(frames[0], key)


def test_anchored_fusion_keeps_the_warped_keyframe_where_it_is_valid_and_resumes(models, tmp_path, monkeypatch):
    """`hybrid`'s fusion: the keyframe sampled through frame t's anchored map wherever the keyframe explains frame t,
    PropDPM's rendering where it does not; a resumed run replays the maps and gives identical frames."""
    from magicprop.propagation import AnchoredFusion

    depth, key = _inputs()
    video = _panning_video()
    fusion = AnchoredFusion(video, key, 0)
    fused = propagate(models, depth, key, 0, FAST, progress=False, video=video, fusion=fusion)
    plain = propagate(models, depth, key, 0, FAST, progress=False, video=video)
    warped, weight = AnchoredFusion(video, key, 0).warp(1, 1)
    inner, outer = weight == 1, weight == 0
    assert inner.mean() > 0.4 and outer[:, -1].all()  # the column entering at the right is PropDPM's to paint
    assert np.array_equal(fused[1][inner], warped[inner]) and np.array_equal(fused[1][outer], plain[1][outer])
    original = _crash_at_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        propagate(models, depth, key, 0, FAST, work_dir=tmp_path / "w", progress=False, video=video, fusion=AnchoredFusion(video, key, 0))
    monkeypatch.setattr(LatentStore, "save_step", original)
    resumed = propagate(models, depth, key, 0, FAST, work_dir=tmp_path / "w", resume=True, progress=False, video=video,
                        fusion=AnchoredFusion(video, key, 0))  # fmt: skip
    assert np.array_equal(resumed, fused)
