"""The anchored `flow` propagator on motions whose right answer is known at every pixel: exact, sharp, no drift."""

from __future__ import annotations

import gc
import time
import tracemalloc
from dataclasses import replace

import cv2
import numpy as np
import pytest

import fixtures

from magicprop.errors import UsageError
from magicprop.evaluation.ground_truth import sharpness
from magicprop.motion.flow import occlusion_mask, optical_flow, outside_frame
from magicprop.propagation.flow import handover, maps as anchored_maps, propagator as anchored
from magicprop.propagation.flow.propagator import AnchoredFlowPropagator
from magicprop.propagation.flow.fill import FillRequest, patch_guides
from magicprop.propagation.flow.maps import AnchoredChain, anchored_maps as walk_maps, identity_map
from magicprop.propagation.base import PropagationRequest
from magicprop.propagation.baselines import propagate_flow

FRAMES, SIZE, STEP = 9, 96, (1, 2)  # the camera pans 1 px down and 2 px right per frame
INNER = np.s_[24:-24, 24:-24]  # visible from every keyframe: new content enters at most 8 x 2 px from an edge


def edit(frames: np.ndarray) -> np.ndarray:
    """A per-pixel edit (negative, channels rotated): it commutes with any resampling, so edit(source) is the truth."""
    return (255 - frames)[..., ::-1].copy()


def other_edit(frames: np.ndarray) -> np.ndarray:
    return frames[..., [1, 2, 0]].copy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def run(source, keyframes, **options) -> list[np.ndarray]:
    request_options = {k: options.pop(k) for k in ("work_dir", "resume", "callback") if k in options}
    request = PropagationRequest(source=source, keyframes=keyframes, progress=False, **request_options)
    return list(AnchoredFlowPropagator(fill="colour", **options)(request))


def affine_clip(frames: int, size: int, per_frame, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Frame t = frame 0 resampled (Lanczos, as the propagator samples) at A_t(x), A_t = per_frame applied t times about
    the centre; returns the clip and each frame's exact map into frame 0."""
    big = fixtures.panning_clip(1, size * 2, (0, 0), seed)[0]
    first = big[size // 2 : size // 2 + size, size // 2 : size // 2 + size]
    c = (size - 1) / 2
    grid = identity_map(size, size).astype(np.float64) - c
    out, maps, a = [first], [identity_map(size, size)], np.eye(3)
    for _ in range(frames - 1):
        a = a @ per_frame
        m = (grid @ a[:2, :2].T + a[:2, 2] + c).astype(np.float32)
        out.append(cv2.remap(first, m[..., 0], m[..., 1], cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REPLICATE))
        maps.append(m)
    return np.stack(out), maps


def zoom(scale: float, angle: float = 0.0, shift=(0.0, 0.0)) -> np.ndarray:
    """A 3x3 map of output coordinates (centred) into the previous frame: < 1 magnifies."""
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, shift[0]], [s, c, shift[1]], [0, 0, 1]])


@pytest.fixture(scope="module")
def pan():
    source = fixtures.panning_clip(FRAMES, SIZE, STEP)
    return source, edit(source)


# --------------------------------------------------------------------------------------------------------------------
# Exactness, sharpness, drift
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keyframe_index", [0, FRAMES // 2])
def test_translation_reproduces_the_keyframe_without_blur(pan, keyframe_index):
    source, truth = pan
    out = run(source, {keyframe_index: truth[keyframe_index]})
    assert len(out) == FRAMES and all(f.shape == source.shape[1:] and f.dtype == np.uint8 for f in out)
    np.testing.assert_array_equal(out[keyframe_index], truth[keyframe_index])
    for t in range(FRAMES):  # both directions of the walk
        assert psnr(out[t][INNER], truth[t][INNER]) > 45, f"frame {t}"
        ratio = sharpness(out[t][INNER][None]) / sharpness(truth[t][INNER][None])
        assert 0.95 < ratio[0] < 1.05, f"frame {t}"


def test_zoom_stays_sharp_where_chained_flow_blurs():
    source, _ = affine_clip(8, 96, zoom(0.97))  # 3% magnification per frame, sub-pixel everywhere
    truth = edit(source)
    out = np.stack(run(source, {0: truth[0]}))
    chained = propagate_flow(source, truth[0], 0, progress=False)
    centre = np.s_[:, 16:-16, 16:-16]
    assert psnr(out[-1][centre[1:]], truth[-1][centre[1:]]) > 38
    ratio = sharpness(out[centre]) / sharpness(truth[centre])
    chained_ratio = sharpness(chained[centre]) / sharpness(truth[centre])
    assert ratio[1:].min() > 0.9, ratio
    assert chained_ratio[-1] < 0.6, chained_ratio  # the yardstick: seven bilinear resamples in a row


def test_anchored_map_of_an_affine_motion_is_exact():
    source, maps = affine_clip(9, 96, zoom(0.985, angle=0.01, shift=(0.6, -0.4)))
    for frame in walk_maps(source, 0):
        inner = np.zeros(frame.valid.shape, bool)
        inner[12:-12, 12:-12] = True
        error = np.linalg.norm(frame.map - maps[frame.index], axis=2)[inner & frame.valid]
        assert frame.valid[inner].mean() > 0.9, frame.index  # the inner frame stays explained
        assert error.max() < 0.25, (frame.index, error.max())


@pytest.mark.parametrize("appearance", [False, True])
def test_no_drift_over_48_frames(appearance):
    source, _ = affine_clip(48, 96, zoom(0.996, angle=0.003, shift=(0.37, -0.23)))  # slow: stays in frame 47 frames
    truth = edit(source)
    out = run(source, {0: truth[0]}, appearance=appearance)
    centre = np.s_[20:-20, 20:-20]
    at8, at47 = psnr(out[8][centre], truth[8][centre]), psnr(out[47][centre], truth[47][centre])
    # the plain warp: one resample per frame, ~54 dB at both ends (chained flow loses ~8 dB over these frames); the
    # appearance model (the edit is affine in colour) brings back some of what resampling lost: ~58.5 dB at both ends
    assert at47 > (56 if appearance else 45) and at47 > at8 - 1, (at8, at47)


def test_correction_removes_the_drift_of_chained_coordinates():
    source, maps = affine_clip(9, 96, zoom(0.985, angle=0.01, shift=(0.6, -0.4)))
    errors = {}
    for passes in (0, 1):
        chain = AnchoredChain(source, 0, 1, anchored_maps.MapSettings(correction_passes=passes))
        for _ in range(8):
            frame = chain.advance()
        errors[passes] = np.abs(frame.map - maps[-1])[16:-16, 16:-16].mean()
    assert errors[1] < 0.5 * errors[0], errors


def test_flow_checks_agree_with_motion_flow(pan):
    source, _ = pan
    still = source[3].copy()
    still[30:60, 30:60] = source[0][40:70, 40:70]  # a patch that moved: occlusions around it
    f_tp, f_pt = optical_flow(still, source[2]), optical_flow(source[2], still)
    occluded, outside, carried = anchored_maps.flow_checks(f_tp, f_pt, np.zeros(still.shape[:2], bool))
    assert (occluded == occlusion_mask(f_tp, f_pt)).mean() > 0.995
    assert (outside == outside_frame(f_tp)).mean() > 0.995 and not carried.any()


# --------------------------------------------------------------------------------------------------------------------
# Validity and fill
# --------------------------------------------------------------------------------------------------------------------
def occluder_clip(frames: int = 6, size: int = 80, side: int = 20, speed: int = 4) -> tuple[np.ndarray, list]:
    """A grey square moving right over a static texture; the squares' (y0, x0) per frame."""
    texture = fixtures.panning_clip(1, size, (0, 0), seed=3)[0]
    clip, corners = [], []
    for t in range(frames):
        frame, y0, x0 = texture.copy(), 30, 10 + speed * t
        checks = (np.indices((side, side)) // 5).sum(0)[..., None] % 2  # 5 px checks: texture the flow can follow
        frame[y0 : y0 + side, x0 : x0 + side] = 100 + checks * 80
        clip.append(frame)
        corners.append((y0, x0))
    return np.stack(clip), corners


def test_disoccluded_pixels_are_flagged_and_carry_no_keyframe_pixels():
    source, corners = occluder_clip()
    side, (y0, x0) = 20, corners[0]
    for frame in walk_maps(source, 0):
        t, (y1, x1) = frame.index, corners[frame.index]
        revealed = np.zeros(frame.valid.shape, bool)  # under the square in the keyframe, background now
        revealed[y0 + 1 : y0 + side - 1, x0 + 1 : min(x0 + side, x1) - 1] = True
        # a smooth texture lets a map slide a pixel or two onto the background beside the square (all of frame 1's
        # 2 px strip): past that rim, almost everything is flagged
        assert t == 1 or (~frame.valid[revealed]).mean() > 0.9, t
        square = np.zeros_like(revealed)
        square[y1 + 3 : y1 + side - 3, x1 + 3 : x1 + side - 3] = True
        assert frame.valid[square].mean() > 0.95, t  # the square itself moved with the flow: the keyframe explains it
        background = np.ones_like(revealed)
        background[y0 - 6 : y1 + side + 6, x0 - 6 : x1 + side + 6] = False
        assert frame.valid[background].mean() > 0.98, t
    assert not frame.valid[:, x0 + 2 :][revealed[:, x0 + 2 :]].any()  # past the 2 px rim, none at the end
    out = run(source, {0: edit(source[0])})[t]
    # the fill follows the source (the colour transfer of the texture), not the edited square left behind
    assert psnr(out[revealed], edit(source[t])[revealed]) > psnr(out[revealed], edit(source[0])[revealed]) + 10


@pytest.mark.parametrize("shape", [(40, 40), (5, 7)])  # 5 x 7: smaller than DIS accepts (the flow pads it)
def test_pure_noise_still_returns_every_frame(shape):
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (5, *shape, 3), dtype=np.uint8)
    out = run(source, {2: edit(source[2])})
    assert len(out) == 5 and all(f.shape == (*shape, 3) and f.dtype == np.uint8 for f in out)
    np.testing.assert_array_equal(out[2], edit(source[2]))


def test_one_frame_and_any_aspect_ratio():
    source = fixtures.panning_clip(4, (40, 72), STEP)
    assert np.array_equal(run(source[:1], {0: edit(source)[0]})[0], edit(source)[0])
    out = run(source, {-1: edit(source)[-1]})
    assert [f.shape for f in out] == [(40, 72, 3)] * 4
    assert psnr(out[0][10:-10, 20:-20], edit(source)[0][10:-10, 20:-20]) > 40


def test_fill_is_pluggable_and_patch_synthesis_gets_guides(pan):
    source, truth = pan
    calls = []

    def synthesize(style, source_guide, target_guide, fill, init, *, patch_size, guide_weights, appearance=None):
        calls.append((source_guide.shape, target_guide.shape, guide_weights.shape, fill.sum(), patch_size,
                      [a.shape for a in appearance]))  # fmt: skip
        out = init.copy()
        out[fill] = (0, 255, 0)
        return out

    request = PropagationRequest(source=source[:4], keyframes={0: truth[0]}, progress=False)
    out = list(AnchoredFlowPropagator(fill="patches", synthesize=synthesize)(request))
    assert len(calls) == 3 and calls[0][:3] == ((SIZE, SIZE, 9), (SIZE, SIZE, 9), (9,)) and calls[0][3] > 0
    assert calls[0][5] == [(SIZE, SIZE, 3), (SIZE, SIZE, 9), (SIZE, SIZE, 3)]  # base, gain, frame t's colours
    assert (out[3] == (0, 255, 0)).all(axis=2).any()  # the synthesiser's pixels are the output's
    seen: list[FillRequest] = []
    custom = AnchoredFlowPropagator(fill=lambda r: seen.append(r) or r.estimate)
    assert len(list(custom(request))) == 4
    assert seen[0].fill.shape == (SIZE, SIZE) and seen[0].map.shape == (SIZE, SIZE, 2)
    s, t, w = patch_guides(source[0], source[1], identity_map(SIZE, SIZE), truth[0], truth[1])
    assert s.shape == t.shape == (SIZE, SIZE, 9) and s.dtype == np.float32 and np.isclose(w.sum(), 1)
    np.testing.assert_allclose(s[..., 4:6], t[..., 4:6])  # an identity map: the positional guides agree
    np.testing.assert_allclose(s[..., 6:], truth[0] / 255, atol=1e-6)  # the temporal guide of the keyframe: the style
    assert s[..., 4:6].min() == 0 and s[..., 4:6].max() == 1


def test_a_frame_with_enough_to_fill_is_synthesised_whole_but_not_between_two_keyframes(pan):
    from magicprop.propagation.flow.fill import PatchFill

    source, truth = pan
    asked = []

    def synthesize(style, source_guide, target_guide, fill, init, *, patch_size, guide_weights, appearance=None):
        asked.append(fill.mean())
        return init

    def fractions(whole_frame, keyframes):
        asked.clear()
        request = PropagationRequest(source=source, keyframes=keyframes, progress=False)
        fill = PatchFill(synthesize) if whole_frame is None else PatchFill(synthesize, whole_frame=whole_frame)
        list(AnchoredFlowPropagator(fill=fill)(request))
        return list(asked)

    holes = fractions(1.0, {0: truth[0]})  # never whole: only what the keyframe cannot explain (the entering strips)
    assert len(holes) == FRAMES - 1 and 0 < min(holes) and max(holes) < 0.3
    threshold = sorted(holes)[len(holes) // 2]  # the frames past it are synthesised whole, the others keep the warp
    assert fractions(threshold, {0: truth[0]}) == [1.0 if h > threshold else h for h in holes]
    assert fractions(None, {0: truth[0]}) == [1.0] * len(holes)  # the default: whole whenever anything is to fill
    between = fractions(0.0, {0: truth[0], FRAMES - 1: truth[FRAMES - 1]})
    assert between and max(between) < 0.3  # two keyframes' warps: only the holes, however small the threshold


def test_an_edit_that_redraws_detail_is_synthesised_with_larger_patches_and_heavier_edges(pan):
    import math

    from magicprop.propagation.flow.fill import GuideWeights, PatchFill, RedrawnPatches, guide_channel_weights
    from magicprop.propagation.flow.temporal import redrawn_detail

    source, _ = pan
    asked = []

    def synthesize(style, source_guide, target_guide, fill, init, *, patch_size, guide_weights, appearance=None):
        asked.append((patch_size, guide_weights.tolist()))
        return init

    grade = np.clip(source[0].astype(np.float32) * [0.8, 1.1, 0.9] + 12, 0, 255).astype(np.uint8)
    texture = np.random.default_rng(3).integers(0, 2, source.shape[1:3])[..., None] * 80
    drawn = np.clip(grade.astype(np.int64) - texture, 0, 255).astype(np.uint8)  # strokes no colour map explains
    assert redrawn_detail(source[0], grade) < 1 < RedrawnPatches().threshold < redrawn_detail(source[0], drawn)

    def settings(keyframe, fill=None):
        asked.clear()
        request = PropagationRequest(source=source, keyframes={0: keyframe}, progress=False)
        list(AnchoredFlowPropagator(fill=fill or PatchFill(synthesize))(request))
        assert len(asked) == FRAMES - 1 and all(a == asked[0] for a in asked)
        return asked[0]

    plain = (5, guide_channel_weights(GuideWeights()).tolist())
    redrawn = (7, guide_channel_weights(GuideWeights(edges=3.0)).tolist())
    assert settings(grade) == plain and settings(drawn) == redrawn  # the default: gated by the re-drawn detail
    assert settings(drawn, PatchFill(synthesize, redrawn=RedrawnPatches(threshold=math.inf))) == plain  # turned off
    assert PatchFill(synthesize).name != PatchFill(synthesize, redrawn=RedrawnPatches(patch_size=9)).name  # resumes
    # the patch grows with the frame (whole doublings of the sides' geometric mean above 256 px), never past the frame
    sizes = {(64, 64): 7, (192, 256): 7, (256, 256): 7, (512, 512): 9, (444, 789): 9, (720, 960): 11, (1080, 1920): 11}
    assert {hw: RedrawnPatches().patch_for(*hw) for hw in sizes} == sizes
    assert RedrawnPatches(grow=0).patch_for(1080, 1920) == 7
    fill = PatchFill(synthesize)
    assert fill.settings_for(10.0, 512, 512)[0] == 9 and fill.settings_for(1.0, 512, 512)[0] == 5
    assert fill.settings_for(10.0, 6, 40)[0] == 5 and fill.settings_for(10.0, 8, 8)[0] == 7
    with pytest.raises(ValueError, match="grow"):
        RedrawnPatches(grow=3)


def test_prefetched_flows_are_the_flows_computed_in_place(pan):
    source, _ = pan
    for step in (1, -1):
        flows = anchored_maps.FlowPrefetch(source, step, "medium")
        order = [4, 4 + step, 4 + 2 * step, 2, 2 + step]  # a restart at frame 2 drops what was prefetched for 7 / 1
        for t in order:
            got = flows.get(t)
            want = anchored_maps.flow_pair(source[t], source[t - step], "medium")
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b)
        assert set(flows.pending) <= {order[-1] + step}  # only the next step is in flight
    last = anchored_maps.FlowPrefetch(source, 1, "medium")
    last.get(len(source) - 1)
    assert not last.pending  # nothing past the clip's end is started
    for step in (1, -1):
        stopping = anchored_maps.FlowPrefetch(source, step, "medium", last=4)
        stopping.get(4 - step)
        assert set(stopping.pending) == {4}
        np.testing.assert_array_equal(stopping.get(4)[0], anchored_maps.flow_pair(source[4], source[4 - step], "medium")[0])
        assert not stopping.pending  # nothing past the caller's last frame is started


def test_walking_ahead_gives_the_frames_and_states_of_advancing_in_place(pan):
    source, _ = pan
    for k, step, stop in ((2, 1, 7), (6, -1, 0)):
        walked = anchored_maps.AnchoredChain(source, k, step)
        in_place = anchored_maps.AnchoredChain(source, k, step)
        seen = []
        for frame, state in walked.walk(stop):
            want = in_place.advance()
            assert frame.index == want.index
            np.testing.assert_array_equal(frame.map, want.map)
            np.testing.assert_array_equal(frame.valid, want.valid)
            for key, value in in_place.state().items():  # the state of *this* frame, though the chain walked on
                np.testing.assert_array_equal(state[key], value)
            seen.append(frame.index)
        assert seen == list(range(k + step, stop + step, step)) and walked.index == stop
        assert not walked.flows.pending  # no flow pair past `stop` was started
    chain = anchored_maps.AnchoredChain(source, 0, 1)
    for frame, _ in chain.walk(6):  # a caller that stops early leaves no step running behind it
        break
    assert chain.index in (1, 2)
    index = chain.index
    time.sleep(0.2)
    assert chain.index == index
    assert list(anchored_maps.AnchoredChain(source, 3, 1).walk(3)) == []


def test_per_keyframe_constants_are_built_once_and_two_keyframes_kept(pan, monkeypatch):
    from magicprop.propagation.flow import fill as anchored_fill

    cache, built = anchored_fill.KeyframeCache(), []
    for k in (0, 0, 4, 0, 4, 8, 8, 4):
        cache.get("x", k, lambda k=k: built.append(k) or k)
    assert built == [0, 4, 8] and sorted({k for _, k in cache.entries}) == [4, 8]  # the third evicted the first
    source, truth = pan
    guides = []
    original = anchored_fill.keyframe_guide
    monkeypatch.setattr(anchored_fill, "keyframe_guide", lambda *a: guides.append(1) or original(*a))
    request = PropagationRequest(source=source, keyframes={0: truth[0], 8: other_edit(source)[8]}, progress=False)
    cached = list(AnchoredFlowPropagator(fill="patches")(request))
    assert 1 <= len(guides) <= 2  # once per keyframe whose pixels were filled, not once per frame
    uncached = anchored_fill.PatchFill()
    plain = AnchoredFlowPropagator(fill=lambda r: uncached(replace(r, keyframe_cache=None)))
    for a, b in zip(cached, plain(request)):  # caching changes no pixel
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------------------------------
# Several keyframes
# --------------------------------------------------------------------------------------------------------------------
def test_several_keyframes_stay_exact_and_the_nearer_one_wins(pan):
    source, truth = pan
    second = other_edit(source)
    keys = {0: truth[0], 4: second[4], 8: truth[8]}
    out = run(source, keys)
    for k, image in keys.items():
        np.testing.assert_array_equal(out[k], image)
    for t, nearer in ((1, truth), (3, second), (5, second), (7, truth)):  # the nearer keyframe's edit, no crossfade
        assert psnr(out[t][INNER], nearer[t][INNER]) > 40, t
    for t in (2, 6):  # half way: handed over smoothly, neither keyframe alone
        assert max(psnr(out[t][INNER], truth[t][INNER]), psnr(out[t][INNER], second[t][INNER])) < 30, t


def test_keyframe_weight_prefers_valid_then_nearer():
    a, b = np.ones((20, 20), bool), np.ones((20, 20), bool)
    a[:, :10] = False  # only b explains the left half
    w = handover.keyframe_weight(a, b, alpha=0.1, handover=0.5, feather=3.0)
    assert (w[:, :10] == 1).all() and w[:, -3:].max() < 0.05  # nearer a wins where both are valid, b where only it is
    assert 0 < w[:, 10:13].mean() < 1  # the seam is feathered
    np.testing.assert_array_equal(handover.keyframe_weight(a, b, 0.9, 0.5, 0.0)[:, 10:], 1)


# --------------------------------------------------------------------------------------------------------------------
# Streaming, resume, progress
# --------------------------------------------------------------------------------------------------------------------
def test_progress_counts_rendered_frames(pan):
    source, truth = pan
    seen = []
    run(source[:6], {0: truth[0], 3: truth[3]}, callback=lambda done, total: seen.append((done, total)))
    assert seen[-4:] == [(3, 6), (4, 6), (5, 6), (6, 6)]  # the keyframes count as done (base.Propagator.__call__)


class Killed(Exception):
    pass


@pytest.mark.parametrize("kill_after", [1, 4, 6])  # in the lead, between the keyframes, after the last one
def test_resume_after_a_kill_gives_identical_frames(pan, tmp_path, monkeypatch, kill_after):
    source, truth = pan
    keys = {2: truth[2], 6: other_edit(source)[6]}  # lead 0-1, between 3-5 (both chains), after 7-8
    reference = run(source, keys)
    steps = []
    advance = AnchoredChain.advance
    monkeypatch.setattr(AnchoredChain, "advance", lambda self: steps.append(self.index) or advance(self))

    def kill(done, total):
        if done - len(keys) >= kill_after:
            raise Killed

    with pytest.raises(Killed):
        run(source, keys, work_dir=tmp_path / "w", callback=kill)
    steps.clear()
    resumed = run(source, keys, work_dir=tmp_path / "w", resume=True)
    assert len(resumed) == len(source)
    for t, (a, b) in enumerate(zip(reference, resumed)):
        np.testing.assert_array_equal(a, b, err_msg=f"frame {t}")
    assert len(steps) <= 10 - kill_after  # 10 chain steps in all (3 backward between the keyframes): none redone
    with pytest.raises(UsageError):  # other settings: the work folder is refused
        run(source, keys, work_dir=tmp_path / "w", resume=True, mismatch_threshold=10.0)


def test_memory_is_flat_in_clip_length(monkeypatch):
    loads = []
    original = anchored.FrameStore.load
    monkeypatch.setattr(anchored.FrameStore, "load", lambda self, t: loads.append(t) or original(self, t))
    still = fixtures.panning_clip(3, 64, (1, 1))
    live = {}
    for n in (12, 36):
        source = still[[0, 1, 2, 1] * (n // 4)]  # a camera shaking back and forth: the same work at every frame
        request = PropagationRequest(source=source, keyframes={n - 1: edit(source[-1])}, progress=False)
        tracemalloc.start()
        samples = []
        for i, _ in enumerate(AnchoredFlowPropagator(fill="colour")(request)):  # every frame computed backward first
            if i % 6 == 5:
                gc.collect()  # safetensors leaves small cycles behind: count what is alive
                samples.append(tracemalloc.get_traced_memory()[0])
        tracemalloc.stop()
        live[n] = max(samples)
    assert sorted(set(loads)) == list(range(35)) and loads.count(0) == 2  # read back from the store, every frame
    # numpy memory alive while frames are handed out: the same for 36 frames as for 12 (24 frames held: +295 kB)
    assert live[36] - live[12] < 3 * 64 * 64 * 3, live
