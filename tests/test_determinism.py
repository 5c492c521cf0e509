"""The same inputs and seed give the same bytes in separate processes, under other load, for every propagator; and a
plain command (no --seed) killed and run again with --resume continues with the seed its work folder recorded.

Issue 26: PropDPM's mp4s differed run to run by up to 24 levels. The frames were identical; x264 read uninitialised
memory on its AVX-512 path (fixed in magicprop.video.writing). Children here run with MALLOC_PERTURB_ and another
PYTHONHASHSEED (tests/other_process.py), so such a read, or a seed taken from `hash()`, fails here at once.
"""

from __future__ import annotations

import json
import logging

import pytest
from other_process import BusyCores, run_cli, run_python

import magicprop.propagation.propdpm.sampling as sampling
from magicprop.cli import main
from magicprop.propagation.store import FrameStore
from magicprop.synthetic import render_clip, write_clip
from magicprop.video import save_image

FRAMES, KEY = 8, 3  # the keyframe inside the clip: both chains run


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The issue's synthetic clip (seed 900021, 64x64, global edit), shortened, and its edited keyframe."""
    root = tmp_path_factory.mktemp("clip")
    c = render_clip(900021, frames=FRAMES, size=(64, 64), edit="global")
    write_clip(c, root / "clip", fps=8.0)
    key = save_image(root / "key.png", c.edited[KEY])
    return root / "clip", key


def argv(clip, propagator: str, out, *extra) -> list[str]:
    folder, key = clip
    return ["propagate", folder / "source.mp4", "--keyframe-image", key, "--keyframe-index", str(KEY), "--depth",
            folder / "depth.npz", "--propagator", propagator, "--steps", "6", "-o", out, *extra]  # fmt: skip


def outputs(out) -> dict[str, bytes]:
    """The bytes a run wrote (OUT.json aside: it records the seconds the run took)."""
    stem = str(out)[: -len(".mp4")]
    return {name: open(path, "rb").read() for name, path in
            (("video", out), ("keyframe", f"{stem}.keyframe.png"), ("comparison", f"{stem}.comparison.mp4"))}  # fmt: skip


def test_the_video_writer_gives_the_same_bytes_whatever_the_heap_holds(tmp_path, record_property):
    """x264 (mp4, mkv) at a width that is not a multiple of 128, and the WebM muxer, in two processes whose freshly
    allocated memory holds other bytes: one file."""
    code = (
        "from magicprop.video import write_video\nfrom badinputs import frames_of\n"
        "for ext in ('mp4', 'mkv', 'webm'):\n    write_video(STEM + '.' + ext, frames_of(6, 34, 94), 8.0)\n"
    )
    for name, perturb in (("a", 0), ("b", 165)):
        run_python(f"STEM = {str(tmp_path / name)!r}\n" + code, perturb=perturb)
    for ext in ("mp4", "mkv", "webm"):
        assert (tmp_path / f"a.{ext}").read_bytes() == (tmp_path / f"b.{ext}").read_bytes(), ext
    record_property("rerun", "video_writer")


def test_propdpm_gives_the_same_bytes_in_another_process_under_load(clip, tmp_path, record_property):
    """The issue's reproduction: the embedded model (anchored reference), seed 7, twice in separate processes with
    torch's default threads; the second while another process keeps every core busy."""
    quiet, loaded = tmp_path / "quiet.mp4", tmp_path / "loaded.mp4"
    run_cli(argv(clip, "propdpm", quiet, "--seed", "7"), perturb=0, hash_seed=1, threads=None)
    with BusyCores():
        run_cli(argv(clip, "propdpm", loaded, "--seed", "7"), perturb=165, hash_seed=2, threads=None)
    assert outputs(quiet) == outputs(loaded)
    record_property("rerun", "propdpm_under_load")


OTHERS = ["hybrid", "flow", "chain", "lut", "copy"]


def test_every_other_propagator_gives_the_same_bytes_in_another_process(clip, tmp_path, record_property):
    here, there = tmp_path / "here", tmp_path / "there"
    for name in OTHERS:
        assert main(list(map(str, argv(clip, name, here / f"{name}.mp4", "--seed", "7")))) == 0
    runs = [list(map(str, argv(clip, name, there / f"{name}.mp4", "--seed", "7"))) for name in OTHERS]
    run_python(f"from magicprop.cli import main\nfor a in {runs!r}:\n    assert main(a) == 0\n")
    for name in OTHERS:
        assert outputs(here / f"{name}.mp4") == outputs(there / f"{name}.mp4"), name
    record_property("rerun", "+".join(OTHERS))


def _killed(monkeypatch, target, attribute: str, after: int) -> None:
    """Make `target.attribute` raise KeyboardInterrupt (the CLI's Ctrl-C: work stays saved) on its `after`+1-th call."""
    real, calls = getattr(target, attribute), []

    def killing(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(target, attribute, killing)


def test_resume_without_seed_continues_with_the_seed_the_work_folder_recorded(clip, tmp_path, monkeypatch, caplog,
                                                                              record_property):  # fmt: skip
    record_property("resume", "propdpm_without_seed")
    out = tmp_path / "plain.mp4"
    command = list(map(str, argv(clip, "propdpm", out)))  # no --seed: the run draws one
    _killed(monkeypatch, sampling, "denoise", after=2)
    assert main(command) == 130
    monkeypatch.undo()
    recorded = json.loads((tmp_path / "plain.mp4.magicprop-work" / "propagation" / "job.json").read_text())["seed"]
    with caplog.at_level(logging.INFO):
        assert main([*command, "--resume"]) == 0
    said = [r.getMessage() for r in caplog.records if "resuming with seed" in r.getMessage()]
    assert said == [f"resuming with seed {recorded}, the seed the killed run recorded in {out}.magicprop-work"]
    assert json.loads((tmp_path / "plain.json").read_text())["settings"]["seed"] == recorded
    reference = tmp_path / "reference.mp4"
    run_cli(argv(clip, "propdpm", reference, "--seed", recorded))
    assert outputs(out) == outputs(reference)


def test_a_seedless_propagator_resumes_whatever_seed_is_drawn(clip, tmp_path, monkeypatch, caplog, record_property):
    """flow's frames do not depend on a seed, so nothing it keeps records one: the resumed run draws another seed and
    still continues the killed run's work (it was refused as 'other settings (seed)')."""
    record_property("resume", "flow_without_seed")
    out = tmp_path / "flow.mp4"
    command = list(map(str, argv(clip, "flow", out)))
    _killed(monkeypatch, FrameStore, "save", after=3)
    assert main(command) == 130
    monkeypatch.undo()
    saved = sorted(p.name for p in (tmp_path / "flow.mp4.magicprop-work").rglob("0*.safetensors"))
    assert len(saved) == 3
    with caplog.at_level(logging.INFO):
        assert main([*command, "--resume"]) == 0  # the command
    assert "resuming from" in caplog.text and "resuming with seed" not in caplog.text
    reference = tmp_path / "reference.mp4"
    run_cli(argv(clip, "flow", reference, "--seed", "5"))
    assert outputs(out) == outputs(reference)
