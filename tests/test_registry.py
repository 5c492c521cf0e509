"""The propagator registry: every consumer takes its choices and needs from it, so a new propagator is one class and
one `register` call, and shows up in the pipeline and the CLI without another edit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fixtures import panning_clip
from magicprop.cli import build_parser, main
from magicprop.errors import UsageError
from magicprop.pipeline import MagicPropPipeline
from magicprop.propagation import PROPAGATORS, PropagationRequest, Propagator, get_propagator, register
from magicprop.video import read_video, save_image, write_video


class MeanShift(Propagator):
    """A toy: each source frame shifted by the keyframe's mean colour change (edited - source at the keyframe)."""

    name = "toy-mean-shift"
    summary = "a test propagator"

    def render(self, request: PropagationRequest):
        k = request.keyframe_index
        shift = request.keyframe.astype(np.int16).mean((0, 1)) - request.source[k].astype(np.int16).mean((0, 1))
        for t, frame in enumerate(request.source):
            yield request.keyframe if t == k else np.clip(frame + shift.round(), 0, 255).astype(np.uint8)
            if t != k and request.callback is not None:
                request.callback(t + (t < k), request.num_frames - 1)


@pytest.fixture
def toy():
    propagator = register(MeanShift())
    yield propagator
    del PROPAGATORS[propagator.name]


def test_the_registry_lists_the_builtin_propagators_with_their_needs():
    needs = {name: (p.needs_model, p.needs_depth, p.needs_source) for name, p in PROPAGATORS.items()}
    assert needs["propdpm"] == needs["hybrid"] == (True, True, True)
    assert needs["copy"] == (False, False, False) and needs["flow"][:2] == (False, False)
    with pytest.raises(UsageError, match="unknown propagator 'magic'; choose one of auto, propdpm, hybrid"):
        get_propagator("magic")


def test_the_cli_choices_are_the_registry(toy):
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["propagate"]
    assert sub._option_string_actions["--propagator"].choices == ["auto", *PROPAGATORS]


def test_a_registered_propagator_runs_through_the_pipeline_and_the_cli(toy, tmp_path):
    source = panning_clip(5, (32, 48), (0, 1), seed=2)
    key = np.clip(source[1].astype(np.int16) + 40, 0, 255).astype(np.uint8)
    calls = []
    out = MagicPropPipeline(propagator=toy.name)(source, keyframe_image=key, keyframe_index=1,
                                                 callback=lambda d, n: calls.append((d, n)))  # fmt: skip
    expected = np.stack(list(toy(PropagationRequest(source=source, keyframes={1: key}))))
    np.testing.assert_array_equal(out.frames, expected)
    assert out.depth is None and calls[0] == (1, 5) and calls[-1] == (5, 5)  # needs no depth; the keyframe counts as done
    clip = write_video(tmp_path / "clip.mp4", source, 8.0)
    save_image(tmp_path / "key.png", key)
    assert main(["propagate", str(clip), "--keyframe-image", str(tmp_path / "key.png"), "--keyframe-index", "1",
                 "--propagator", toy.name, "--seed", "0", "-o", str(tmp_path / "out.mp4")]) == 0  # fmt: skip
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["settings"]["propagator"] == toy.name and "propagation_model" not in record["models"]
    assert read_video(tmp_path / "out.mp4")[0].shape == source.shape


def test_a_propagator_that_needs_a_model_is_refused_without_one():
    with pytest.raises(UsageError, match="propdpm propagator needs propagation models"):
        MagicPropPipeline(None, propagator="propdpm")


def test_auto_is_propdpm_with_a_model_and_flow_without(caplog):
    from magicprop.propagation import resolve

    assert resolve("auto", model_given=True).name == "propdpm"
    with caplog.at_level("INFO"):
        assert resolve("auto", model_given=False, announce=True).name == "flow"
    assert "no propagation model given" in caplog.text and "--model" in caplog.text
    assert resolve("copy", model_given=True).name == "copy"  # a named choice is never overridden
    assert MagicPropPipeline().propagator.name == "flow"  # the pipeline's default is auto too


def test_stage_two_flags_have_one_spelling_per_meaning_and_keep_the_old_ones():
    """`--steps` meant stage-I steps in `edit` but PropDPM steps in `propagate`: each now has an unambiguous spelling,
    and the old one still parses to the same setting (scripts may use it)."""
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    edit, propagate = sub["edit"]._option_string_actions, sub["propagate"]._option_string_actions
    assert edit["--keyframe-steps"].dest == edit["--steps"].dest == "steps"
    assert edit["--propagation-steps"].dest == "propagation_steps"
    assert propagate["--propagation-steps"].dest == propagate["--steps"].dest == "propagation_steps"
    assert propagate["--guidance-scale"].dest == "propagation_guidance_scale" and "--keyframe-steps" not in propagate
