"""`flow`'s temporal blend (`propagation.flow.temporal`): a recursive average along the source's motion, run both ways
(the chain's pass, then `settle` back from the chain's end), that lowers the flicker of re-drawn detail, is exact where
it must not act (keyframes, untrusted flow, colour edits), deterministic, and resumes to the same bytes."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import fixtures

from magicprop.cli import main
from magicprop.errors import UsageError
from magicprop.evaluation import temporal_flicker
from magicprop.pipeline import MagicPropPipeline
from magicprop.propagation.base import PropagationRequest, PropagationSettings
from magicprop.propagation.flow.propagator import AnchoredFlowPropagator
from magicprop.propagation.flow.geometry import identity_map
from magicprop.propagation.flow.maps import AnchoredChain
from magicprop.propagation.flow.temporal import TemporalBlend, carry, redrawn_detail, settle, temporal_blend
from magicprop.video import load_image, save_image, write_video

FRAMES, SIZE = 8, 64


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def noisy_static_clip(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, truth, render): a still textured clip, its truth (a per-pixel edit) and a render of it with fresh
    noise on every frame, as a re-drawn stroke or a re-chosen patch gives."""
    source = np.repeat(fixtures.panning_clip(1, SIZE, (0, 0), seed), FRAMES, axis=0)
    truth = (255 - source).copy()
    noise = np.random.default_rng(seed).normal(0, 12, truth.shape)
    return source, truth, np.clip(np.rint(truth + noise), 0, 255).astype(np.uint8)


def blend_clip(render: np.ndarray, source: np.ndarray, settings: TemporalBlend, ok: np.ndarray | None = None
               ) -> np.ndarray:  # fmt: skip
    """The recursion the propagator runs: frame 0 as given (the keyframe), then each frame blended with the last output."""
    flow = np.zeros((*source.shape[1:3], 2), np.float32)
    ok = np.ones(source.shape[1:3], bool) if ok is None else ok
    out = [render[0]]
    for t in range(1, len(render)):
        out.append(temporal_blend(render[t], out[-1], source[t], source[t - 1], flow, ok, settings))
    return np.stack(out)


def test_blend_lowers_flicker_and_error_of_per_frame_noise():
    source, truth, render = noisy_static_clip()
    plain = temporal_flicker(render, truth, source).mean()
    figures = []
    for strength in (0.35, 0.65):
        blended = blend_clip(render, source, TemporalBlend(strength=strength))
        figures.append(temporal_flicker(blended, truth, source).mean())
        assert psnr(blended[1:], truth[1:]) > psnr(render[1:], truth[1:]) + 1.0  # the mean is the MSE-best estimate
    assert figures[1] < figures[0] < 0.8 * plain  # more blending, less flicker


def test_blend_leaves_untrusted_pixels_and_the_first_frame_exact():
    source, truth, render = noisy_static_clip()
    ok = np.ones(source.shape[1:3], bool)
    ok[:, : SIZE // 2] = False  # the flow check failed on the left half
    changed = source.copy()
    changed[:, SIZE // 2 :, : SIZE // 4] = 255 - changed[:, SIZE // 2 :, : SIZE // 4]  # a source that changes each frame
    changed[1::2, SIZE // 2 :, : SIZE // 4] = source[1::2, SIZE // 2 :, : SIZE // 4]
    blended = blend_clip(render, changed, TemporalBlend(strength=0.5), ok)
    assert np.array_equal(blended[0], render[0])
    assert np.array_equal(blended[:, :, : SIZE // 2], render[:, :, : SIZE // 2])
    assert np.array_equal(blended[1:, SIZE // 2 :, : SIZE // 4 - 2], render[1:, SIZE // 2 :, : SIZE // 4 - 2])
    assert not np.array_equal(blended[1:, SIZE // 2 :, SIZE // 2 :], render[1:, SIZE // 2 :, SIZE // 2 :])
    zero = blend_clip(render, source, TemporalBlend(strength=0.0))
    assert np.array_equal(zero, render)


def test_second_pass_averages_both_sides_of_each_frame():
    """`settle` after the chain's pass: every frame averages its successors too, so per-frame noise falls further (the
    one-sided recursion leaves the frames nearest the keyframe averaged over few frames); the frame the pass starts
    from without an anchor stays as it was, strength 0 changes nothing, and an anchor is what the first frame blends
    with."""
    source, truth, render = noisy_static_clip()
    settings = TemporalBlend(strength=0.65)
    one = blend_clip(render, source, settings)
    order = range(FRAMES - 1, 0, -1)  # back from the chain's end to the frame after its keyframe

    def second(strength: float, anchor=None) -> np.ndarray:
        steps = order if anchor is None else order[1:]  # an anchor: the keyframe the pass starts from, at FRAMES - 1
        out = dict(zip(steps, settle(steps, lambda t: one[t], source, anchor, lambda t: strength, settings, "medium")))
        return np.stack([one[t] if t not in out else out[t] for t in range(FRAMES)])

    two = second(0.65)
    assert psnr(two[1:], truth[1:]) > psnr(one[1:], truth[1:]) + 1.0
    assert temporal_flicker(two, truth, source).mean() < 0.8 * temporal_flicker(one, truth, source).mean()
    assert np.array_equal(two[-1], one[-1]) and np.array_equal(two[0], one[0])
    assert np.array_equal(second(0.0), one)
    anchored = second(0.65, anchor=truth[-1])
    assert psnr(anchored[-2], truth[-2]) > psnr(two[-2], truth[-2]) + 1.0  # the exact keyframe pulls it closest
    with pytest.raises(ValueError, match="lookahead"):
        TemporalBlend(lookahead=1.0)



def test_cubic_carry_keeps_the_detail_a_bilinear_carry_blurs_away():
    """The recursion resamples the carried frame once per frame: along a half-pixel motion a bilinear carry halves the
    texture's Laplacian energy within 24 frames, a clamped cubic one (the default) keeps ~80% of it and stays on the
    truth; at a hard edge it never overshoots the values around it (no ringing to compound)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    rng = np.random.default_rng(0)
    waves = [(rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), rng.uniform(0, 6.3)) for _ in range(12)]

    def texture(shift: float) -> np.ndarray:  # frame t shows the texture moved 0.5 px left per frame, exactly
        v = sum(np.sin(2 * np.pi * (fx * (xx + shift) + fy * yy) + phase) for fx, fy, phase in waves)
        return np.repeat(np.clip(np.rint(128 + 10 * v), 0, 255).astype(np.uint8)[..., None], 3, axis=2)

    render = np.stack([texture(0.5 * t) for t in range(24)])
    source = np.full_like(render, 128)  # a flat source: the carry is trusted everywhere
    flow = np.zeros((SIZE, SIZE, 2), np.float32)
    flow[..., 0] = 0.5  # frame t's pixel x was at x + 0.5 in frame t - 1
    ok = np.ones((SIZE, SIZE), bool)

    def laplacian_energy(image: np.ndarray) -> float:
        return float(cv2.Laplacian(image.astype(np.float32).mean(axis=2), cv2.CV_32F)[4:-4, 4:-4].var())

    kept, error = {}, {}
    for interpolation in ("linear", "cubic"):
        settings = TemporalBlend(strength=0.65, interpolation=interpolation)
        out = render[0]
        for t in range(1, len(render)):
            out = temporal_blend(render[t], out, source[t], source[t - 1], flow, ok, settings)
        kept[interpolation] = laplacian_energy(out) / laplacian_energy(render[-1])
        error[interpolation] = np.abs(out[4:-4, 4:-4].astype(np.int64) - render[-1][4:-4, 4:-4]).mean()
    assert kept["linear"] < 0.55 and kept["cubic"] > 0.75
    assert error["cubic"] < 2.5 < 4.0 < error["linear"]
    edge = np.where(xx[..., None] < SIZE / 2, 16, 240).astype(np.uint8).repeat(3, axis=2)  # a hard black-white edge
    carried = carry(edge, identity_map(SIZE, SIZE) + flow, "cubic")
    assert carried.min() >= 16 and carried.max() <= 240 and 16 < carried[0, SIZE // 2 - 1, 0] < 240
    assert TemporalBlend().interpolation == "cubic"
    with pytest.raises(ValueError, match="interpolation"):
        TemporalBlend(interpolation="nearest")

def test_redrawn_detail_separates_colour_edits_from_redrawn_texture():
    source = fixtures.panning_clip(1, SIZE, (0, 0))[0]
    grade = np.clip(source.astype(np.float32) * [0.8, 1.1, 0.9] + 12, 0, 255).astype(np.uint8)
    texture = np.random.default_rng(1).integers(0, 2, source.shape[:2])[..., None] * 60
    drawn = np.clip(grade.astype(np.int64) - texture, 0, 255).astype(np.uint8)  # strokes the source does not explain
    settings = TemporalBlend()
    assert settings.strength_for(redrawn_detail(source, grade)) == 0.0
    assert settings.strength_for(redrawn_detail(source, drawn)) == settings.strength
    with pytest.raises(ValueError, match="strength"):
        TemporalBlend(strength=1.0)


def run(source, keyframes, work_dir=None, resume=False, callback=None, **options) -> np.ndarray:
    request = PropagationRequest(source=source, keyframes=keyframes, progress=False, work_dir=work_dir, resume=resume,
                                 callback=callback)  # fmt: skip
    return np.stack(list(AnchoredFlowPropagator(fill="colour", **options)(request)))


def drawn_clip() -> tuple[np.ndarray, np.ndarray]:
    """(source, an edit of its first frame with detail no colour mapping explains): the blend's gate is fully open."""
    source = fixtures.panning_clip(FRAMES, SIZE, (1, 1))
    texture = np.random.default_rng(2).integers(0, 2, source.shape[1:3])[..., None] * 80
    return source, np.clip((255 - source[0]).astype(np.int64) - texture, 0, 255).astype(np.uint8)


class Killed(Exception):
    pass


@pytest.mark.parametrize("kill_after", [2, 4, 5])  # in the lead, between the two keyframes, after the last
def test_two_sided_blend_differs_from_one_sided_and_resumes_to_the_same_bytes(tmp_path, kill_after):
    """The second pass runs on every chain (the lead read back forward, the frames between two keyframes back from the
    later one, the chain after the last keyframe back from the clip's end); a run killed before it resumes to the
    uninterrupted run's bytes."""
    source, drawn = drawn_clip()
    keys = {3: drawn, 6: drawn[::-1].copy()}  # lead 0-2, between 4-5, after 7
    both = run(source, keys)
    one_sided = run(source, keys, temporal_blend=TemporalBlend(lookahead=0.0))
    assert np.array_equal(both[3], keys[3]) and np.array_equal(both[6], keys[6])
    for span in (slice(1, 3), slice(4, 6)):  # frames with a settled neighbour (frame 0 and frame 7 start their pass)
        assert not np.array_equal(both[span], one_sided[span])
    assert np.array_equal(both[0], one_sided[0]) and np.array_equal(both[7], one_sided[7])

    def kill(done, total):
        if done - len(keys) >= kill_after:
            raise Killed

    with pytest.raises(Killed):
        run(source, keys, work_dir=tmp_path / "w", callback=kill)
    np.testing.assert_array_equal(run(source, keys, work_dir=tmp_path / "w", resume=True), both)


def test_propagator_blends_redrawn_edits_only_and_keeps_keyframes_and_bytes():
    source = fixtures.panning_clip(FRAMES, SIZE, (1, 1))
    grade = (255 - source)[..., ::-1].copy()  # a colour edit: the gate keeps the blend off, the output is the render
    assert np.array_equal(run(source, {0: grade[0]}), run(source, {0: grade[0]}, temporal_blend=0.0))
    texture = np.random.default_rng(2).integers(0, 2, source.shape[1:3])[..., None] * 80
    drawn = np.clip(grade[0].astype(np.int64) - texture, 0, 255).astype(np.uint8)
    keys = {0: drawn, FRAMES - 1: drawn}
    blended, plain = run(source, keys), run(source, keys, temporal_blend=0.0)
    assert not np.array_equal(blended, plain)
    assert np.array_equal(blended[0], drawn) and np.array_equal(blended[-1], drawn)  # keyframes as given
    assert np.array_equal(blended, run(source, keys))  # same input, same bytes


def test_request_temporal_blend_sets_the_strength_and_the_fingerprint():
    """`PropagationSettings.temporal_blend` (the CLI's --temporal-blend) is the blend's strength for one request: the
    same bytes as a propagator built with it, steadier than the default, and a resumed run cannot mix the two."""
    source = fixtures.panning_clip(FRAMES, SIZE, (1, 1))
    texture = np.random.default_rng(2).integers(0, 2, source.shape[1:3])[..., None] * 80
    drawn = np.clip((255 - source[0]).astype(np.int64) - texture, 0, 255).astype(np.uint8)  # re-drawn detail: gated in
    flow = AnchoredFlowPropagator(fill="colour")
    request = lambda blend: PropagationRequest(source=source, keyframes={0: drawn}, progress=False,  # noqa: E731
                                               settings=PropagationSettings(temporal_blend=blend))  # fmt: skip
    steady = np.stack(list(flow(request(0.9))))
    np.testing.assert_array_equal(steady, run(source, {0: drawn}, temporal_blend=0.9))
    default = np.stack(list(flow(request(None))))
    np.testing.assert_array_equal(default, np.stack(list(flow(request(0.65)))))  # None is the propagator's own
    steps = lambda clip: np.abs(np.diff(clip[1:].astype(np.float64), axis=0)).mean()  # noqa: E731
    assert steps(steady) < steps(default)  # the blend holds more of the previous frame
    assert flow.fingerprint(request(0.9)) != flow.fingerprint(request(None)) == flow.fingerprint(request(0.65))
    for bad in (1.0, -0.1):
        with pytest.raises(UsageError, match=r"--temporal-blend must be in \[0, 1\)"):
            PropagationSettings(temporal_blend=bad)


def test_cli_temporal_blend_is_recorded_and_checked(tmp_path, capsys):
    source = fixtures.panning_clip(FRAMES, SIZE, (1, 1))
    clip = write_video(tmp_path / "clip", source, 8.0)  # PNGs: lossless
    texture = np.random.default_rng(2).integers(0, 2, source.shape[1:3])[..., None] * 80
    save_image(tmp_path / "key.png", np.clip((255 - source[0]).astype(np.int64) - texture, 0, 255).astype(np.uint8))
    argv = ["propagate", str(clip), "--keyframe-image", str(tmp_path / "key.png"), "--keyframe-index", "0", "--seed", "0"]
    assert main([*argv, "--temporal-blend", "0.9", "-o", f"{tmp_path / 'out'}/"]) == 0
    expected = MagicPropPipeline(propagator="flow")(clip, keyframe_image=tmp_path / "key.png", keyframe_index=0,
                                                    temporal_blend=0.9).frames  # fmt: skip
    got = np.stack([load_image(p) for p in sorted((tmp_path / "out").glob("*.png"))])
    np.testing.assert_array_equal(got, expected)
    assert json.loads((tmp_path / "out.json").read_text())["settings"]["temporal_blend"] == 0.9
    assert main([*argv, "--temporal-blend", "1.5", "-o", str(tmp_path / "bad.mp4")]) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("magicprop ")]
    assert len(lines) == 1 and "--temporal-blend must be in [0, 1)" in lines[0] and not list(tmp_path.glob("bad*"))
