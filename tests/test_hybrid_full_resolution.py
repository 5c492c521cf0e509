"""`hybrid` at full resolution: PropDPM renders at `request.working_size`, the anchored warp at the source's size, and
PropDPM's frame is brought up by guided upsampling only where the keyframe does not explain the frame (tiny models)."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures import get_dummy_propagation_models, panning_clip

from magicprop.errors import UsageError
from magicprop.propagation import PROPAGATORS, PropagationRequest, PropagationSettings
from magicprop.propagation.propdpm import fusion as fusion_module
from magicprop.propagation.propdpm.fusion import AnchoredFusion

T, FULL, WORKING, K = 7, (64, 96), (32, 48), 3


@pytest.fixture(scope="module")
def clip():
    source = panning_clip(T, FULL, (1, 2))  # new content enters at two borders every frame: PropDPM paints it
    depth = np.linspace(0, 1, T * 32 * 48, dtype=np.float32).reshape(T, 32, 48)
    return source, source[K][..., ::-1].copy(), depth


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "anchored"])
def models(request):
    return get_dummy_propagation_models(use_anchored_reference=request.param)


def run(clip, models, working_size=WORKING, **options) -> list[np.ndarray]:
    source, keyframe, depth = clip
    request = PropagationRequest(source=source, keyframes={K: keyframe}, depth=depth, models=models,
                                 settings=PropagationSettings(num_inference_steps=2, seed=1), progress=False,
                                 working_size=working_size, **options)  # fmt: skip
    return list(PROPAGATORS["hybrid"](request))


def test_frames_come_at_the_source_size_with_the_warp_kept_exactly_where_valid(clip, models, monkeypatch):
    assert PROPAGATORS["hybrid"].full_resolution
    brought_up = []
    original = fusion_module.guided_upsample
    monkeypatch.setattr(fusion_module, "guided_upsample",
                        lambda small, full, **kw: brought_up.append((small.shape, full.shape)) or original(small, full, **kw))
    out = run(clip, models)
    source, keyframe, _ = clip
    assert len(out) == T and all(f.shape == (*FULL, 3) and f.dtype == np.uint8 for f in out)
    np.testing.assert_array_equal(out[K], keyframe)
    # PropDPM's frames were rendered at the working size and brought up against the full-size source frames
    assert brought_up and set(brought_up) == {((*WORKING, 3), (*FULL, 3))}
    reference = AnchoredFusion(source, keyframe, K)  # the full-size warp on its own
    for t in range(T):
        if t == K:
            continue
        warped, weight = reference.warp(t, 1 if t > K else -1)
        kept = weight >= 1
        assert 0.5 < kept.mean() < 1  # most of the frame is explained; the entering borders are not
        np.testing.assert_array_equal(out[t][kept], warped[kept], err_msg=f"frame {t}")
        assert not np.array_equal(out[t][~kept], warped[~kept])  # PropDPM's pixels there


def test_a_killed_full_resolution_run_resumes_identically(clip, models, tmp_path):
    reference = run(clip, models)

    class Killed(Exception):
        pass

    def kill(done, total):
        if done >= 4:
            raise Killed

    with pytest.raises(Killed):
        run(clip, models, work_dir=tmp_path / "w", callback=kill)
    resumed = run(clip, models, work_dir=tmp_path / "w", resume=True)
    for t, (a, b) in enumerate(zip(reference, resumed)):
        np.testing.assert_array_equal(a, b, err_msg=f"frame {t}")


def test_without_a_working_size_hybrid_renders_at_the_source_size(clip, models):
    source, keyframe, depth = clip
    small = source[:, ::2, ::2].copy()  # a source already at a size the model takes: no upsampling anywhere
    request = PropagationRequest(source=small, keyframes={K: keyframe[::2, ::2].copy()}, depth=depth, models=models,
                                 settings=PropagationSettings(num_inference_steps=2, seed=1), progress=False)  # fmt: skip
    out = list(PROPAGATORS["hybrid"](request))
    assert all(f.shape == (*WORKING, 3) for f in out)
    with pytest.raises(UsageError, match="must fit inside the source"):
        run(clip, models, working_size=(128, 192))
