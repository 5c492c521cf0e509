"""Resume never trusts a damaged work folder: every propagator killed midway resumes to the uninterrupted run's frames,
also after a saved piece was cut short, emptied, garbled or deleted; a foreign or unreadable folder is refused in one
line. (The same damage through the CLI, and a damaged training checkpoint, are cases of tests/badinput_cases.py.)

Kills here are an exception raised from the progress callback after N frames (the web UI's Cancel works the same way:
finished work stays saved); tests/test_crash_resume.py does a real SIGKILL of the CLI. The uninterrupted runs resumed
runs are compared with are made in another process (tests/other_process.py).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from fixtures import get_dummy_propagation_models
from other_process import run_python

import magicprop.propagation.propdpm.sampling as sampling
from magicprop.errors import UsageError
from magicprop.integrity import FORMAT, Damaged, check_folder, read_piece, write_checksums, write_piece
from magicprop.propagation import PROPAGATORS, PropagationRequest, PropagationSettings
from magicprop.propagation.store import FrameStore, LatentStore
from magicprop.synthetic import render_clip

T = 6  # keyframe 0: one chain of 5 steps
FAST = PropagationSettings(num_inference_steps=2, seed=3)


class Killed(Exception):
    """The simulated kill: raised from the progress callback."""


@pytest.fixture(scope="module")
def models():
    return get_dummy_propagation_models()


@pytest.fixture(scope="module")
def clip():
    return render_clip(3, frames=T, size=(32, 48))


RESUMED = ["propdpm", "hybrid", "flow", "copy"]


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, np.ndarray]:
    """Every resumed propagator's uninterrupted frames, (T, H, W, 3) each, computed in another process."""
    path = tmp_path_factory.mktemp("references") / "frames.npz"
    run_python(
        "import numpy as np\nfrom fixtures import get_dummy_propagation_models\nfrom magicprop.synthetic import render_clip\n"
        "from test_damaged_work import run, T\nclip, models = render_clip(3, frames=T, size=(32, 48)), get_dummy_propagation_models()\n"
        f"np.savez({str(path)!r}, **{{name: np.stack(run(name, clip, models)) for name in {RESUMED!r}}})\n"
    )  # fmt: skip
    with np.load(path) as saved:
        return {name: saved[name] for name in RESUMED}


def run(name, clip, models, work=None, *, resume=False, kill_at=None) -> list[np.ndarray]:
    """All frames of PROPAGATORS[name] on the clip (keyframe 0); with kill_at, raise Killed from the progress report
    once kill_at numbered pieces (PropDPM steps, frames) are saved in `work`, or, where none are, at the kill_at-th
    report. Saved work is counted rather than the reports' `done`: without a progress bar the sampling loop reports
    tqdm's count, which a disabled bar never advances."""
    reports: list[tuple[int, int]] = []

    def callback(done, total):
        reports.append((done, total))
        saved = len(list(work.rglob("[0-9]*.safetensors"))) if work is not None and work.exists() else 0
        if kill_at is not None and (saved or len(reports)) >= kill_at:
            raise Killed(f"killed after {saved} saved pieces, {len(reports)} reports")

    request = PropagationRequest(source=clip.source, keyframes={0: clip.edited[0]}, depth=clip.depth, models=models,
                                 settings=FAST, work_dir=work, resume=resume, progress=False, callback=callback)  # fmt: skip
    return list(PROPAGATORS[name](request))


def denoised_frames(monkeypatch) -> list[int]:
    """Counts frames the PropDPM sampling loop renders from now on."""
    counted: list[int] = []
    real = sampling.denoise

    def counting(*args, **kwargs):
        counted.append(args[2].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "denoise", counting)
    return counted


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# ---------------------------------------------------------------------------------------------------------------------
# Pieces: what each kind of damage looks like to read_piece
# ---------------------------------------------------------------------------------------------------------------------
DAMAGE = {
    "truncated": lambda b: b[: len(b) // 2],
    "zero_bytes": lambda b: b"",
    "flipped_byte": lambda b: b[:-5] + bytes([b[-5] ^ 0x40]) + b[-4:],
    "garbled_header": lambda b: b[:12] + b"#" * 16 + b[28:],
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_piece_is_named_never_loaded(tmp_path, kind):
    path = tmp_path / "00001.safetensors"
    tensors = {"1": torch.randn(4, 4, 6), "frame/1": np.arange(96, dtype=np.uint8).reshape(4, 8, 3)}
    write_piece(path, tensors)
    back = read_piece(path)
    assert np.array_equal(back["1"], tensors["1"].numpy()) and np.array_equal(back["frame/1"], tensors["frame/1"])  # numpy back
    path.write_bytes(DAMAGE[kind](path.read_bytes()))
    with pytest.raises(Damaged) as exc:
        read_piece(path)
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 80
    with pytest.raises(Damaged, match="missing"):
        read_piece(tmp_path / "00002.safetensors")


# ---------------------------------------------------------------------------------------------------------------------
# Kill and resume, every propagator
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", RESUMED)
def test_every_propagator_killed_midway_resumes_to_identical_frames(name, clip, models, references, tmp_path, record_property):
    record_property("resume", f"registry_{name}")
    reference = references[name]
    work = tmp_path / "work"
    with pytest.raises(Killed):
        run(name, clip, models, work, kill_at=3)
    resumed = run(name, clip, models, work, resume=True)
    assert len(resumed) == T
    for t in range(T):
        np.testing.assert_array_equal(resumed[t], reference[t], err_msg=f"{name}: frame {t}")
    record_property("identical", True)


@pytest.mark.parametrize("name", ["propdpm", "hybrid"])
def test_resume_redoes_only_the_unfinished_steps(name, clip, models, tmp_path, monkeypatch):
    work = tmp_path / "work"
    with pytest.raises(Killed):
        run(name, clip, models, work, kill_at=3)  # 3 steps done
    counted = denoised_frames(monkeypatch)
    run(name, clip, models, work, resume=True)
    assert sum(counted) == T - 1 - 3


# ---------------------------------------------------------------------------------------------------------------------
# A damaged step: reported in one line, redone from the last good one, still identical
# ---------------------------------------------------------------------------------------------------------------------
def _damage(work, kind: str):
    """Damage the work folder of a run killed after 4 of its 5 steps; return the first step to redo."""
    steps = work / "steps"
    if kind == "deleted_middle":
        (steps / "00003.safetensors").unlink()
        return 3
    path = steps / "00002.safetensors"
    path.write_bytes(DAMAGE[kind](path.read_bytes()))
    return 2


# hybrid shares propdpm's step store (its steps also hold pixels): two kinds of damage are enough there
STEP_DAMAGE = [("propdpm", kind) for kind in [*DAMAGE, "deleted_middle"]] + [("hybrid", "truncated"), ("hybrid", "deleted_middle")]


@pytest.mark.parametrize("name,kind", STEP_DAMAGE, ids=[f"{n}-{k}" for n, k in STEP_DAMAGE])
def test_damaged_step_is_redone_from_the_last_good_one(name, kind, clip, models, references, tmp_path, monkeypatch, caplog,
                                                       record_property):  # fmt: skip
    record_property("damaged_work", f"{name}_{kind}")
    reference = references[name]
    work = tmp_path / "work"
    with pytest.raises(Killed):
        run(name, clip, models, work, kill_at=4)  # steps 1..4 saved
    first_bad = _damage(work, kind)
    counted = denoised_frames(monkeypatch)
    with caplog.at_level(logging.INFO):
        resumed = run(name, clip, models, work, resume=True)
    for t in range(T):
        np.testing.assert_array_equal(resumed[t], reference[t], err_msg=f"frame {t}")
    assert sum(counted) == T - first_bad  # steps first_bad..5, one frame each
    lines = warnings_of(caplog)
    good = f"step {first_bad - 1}"
    assert len(lines) == 1 and f"step {first_bad} of {work} is damaged" in lines[0] and f"redoing from {good}" in lines[0], lines
    record_property("identical", True)


def test_damaged_first_step_redoes_from_the_keyframe(clip, models, references, tmp_path, caplog):
    reference = references["propdpm"]
    work = tmp_path / "work"
    with pytest.raises(Killed):
        run("propdpm", clip, models, work, kill_at=3)
    (work / "steps" / "00001.safetensors").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        resumed = run("propdpm", clip, models, work, resume=True)
    assert all(np.array_equal(a, b) for a, b in zip(resumed, reference))
    assert [m for m in warnings_of(caplog) if "redoing from the keyframe" in m]


# ---------------------------------------------------------------------------------------------------------------------
# Folders that are not ours to resume: one line naming --resume and the fix
# ---------------------------------------------------------------------------------------------------------------------
FOREIGN = {
    "garbage_job_json": (lambda job: job.write_bytes(b"\x00\xffnot json{"), "is damaged"),
    "job_json_not_a_mapping": (lambda job: job.write_text("[1, 2]"), "is damaged"),
    "other_format": (lambda job: job.write_text(json.dumps({**json.loads(job.read_text()), "format": FORMAT + 1})), "another version"),
    "unversioned": (lambda job: job.write_text(json.dumps({k: v for k, v in json.loads(job.read_text()).items() if k != "format"})),
                    "another version"),
}  # fmt: skip


@pytest.mark.parametrize("kind", FOREIGN)
def test_foreign_or_unreadable_job_json_is_refused_in_one_line(kind, clip, models, tmp_path, record_property):
    record_property("damaged_work", kind)
    work = tmp_path / "work"
    with pytest.raises(Killed):
        run("propdpm", clip, models, work, kill_at=3)
    damage, says = FOREIGN[kind]
    damage(work / "job.json")
    with pytest.raises(UsageError) as exc:
        run("propdpm", clip, models, work, resume=True)
    message = str(exc.value)
    assert says in message and "--resume" in message and "run without --resume to start over" in message and "\n" not in message
    assert len(run("propdpm", clip, models, work)) == T  # and without --resume it starts over
    assert json.loads((work / "job.json").read_text())["format"] == FORMAT
    record_property("identical", True)


def test_job_json_records_the_format(tmp_path):
    LatentStore(tmp_path / "w", {"seed": 0}, resume=False)
    assert json.loads((tmp_path / "w" / "job.json").read_text()) == {"format": FORMAT, "seed": 0}
    with pytest.raises(ValueError, match="format"):
        LatentStore(tmp_path / "v", {"format": 3}, resume=False)


# ---------------------------------------------------------------------------------------------------------------------
# FrameStore (the weight-free propagators' store): a damaged piece is "not there", said once
# ---------------------------------------------------------------------------------------------------------------------
def _frame_store(tmp_path, n=4) -> FrameStore:
    store = FrameStore(tmp_path / "w", {"propagator": "flow"}, resume=False)
    for t in range(n):
        store.save(t, np.full((4, 6, 3), t, np.uint8))
    store.save_state("forward", n - 1, {"coords": np.arange(6, dtype=np.float32)})
    return store


@pytest.mark.parametrize("kind", DAMAGE)
def test_frame_store_treats_a_damaged_frame_as_not_done(kind, tmp_path, caplog, record_property):
    record_property("damaged_work", f"frame_store_{kind}")
    _frame_store(tmp_path)
    path = tmp_path / "w" / "frames" / "00002.safetensors"
    path.write_bytes(DAMAGE[kind](path.read_bytes()))
    store = FrameStore(tmp_path / "w", {"propagator": "flow"}, resume=True)
    with caplog.at_level(logging.WARNING):
        assert [store.has(t) for t in range(5)] == [True, True, False, True, False]
        assert not store.has(2)  # asked again: still not done, and not said twice
    assert np.array_equal(store.load(3), np.full((4, 6, 3), 3, np.uint8))
    lines = warnings_of(caplog)
    assert len(lines) == 1 and "frame 2" in lines[0] and "damaged" in lines[0], lines
    store.save(2, np.full((4, 6, 3), 2, np.uint8))  # the caller redoes it
    assert store.has(2) and store.load(2)[0, 0, 0] == 2
    record_property("identical", True)


def test_frame_store_treats_a_damaged_state_as_none(tmp_path, caplog):
    store = _frame_store(tmp_path)
    index, state = store.load_state("forward")
    assert index == 3 and np.array_equal(state["coords"], np.arange(6, dtype=np.float32))
    path = tmp_path / "w" / "state-forward.safetensors"
    path.write_bytes(path.read_bytes()[:-7])
    store = FrameStore(tmp_path / "w", {"propagator": "flow"}, resume=True)
    with caplog.at_level(logging.WARNING):
        assert store.load_state("forward") is None
        assert store.load_state("backward") is None  # never saved: nothing to say
    lines = warnings_of(caplog)
    assert len(lines) == 1 and "chain forward" in lines[0], lines


def test_frame_store_refuses_a_foreign_folder_and_starts_over_without_resume(tmp_path):
    _frame_store(tmp_path)
    (tmp_path / "w" / "job.json").write_text("{")
    with pytest.raises(UsageError, match="--resume.*damaged.*run without --resume"):
        FrameStore(tmp_path / "w", {"propagator": "flow"}, resume=True)
    store = FrameStore(tmp_path / "w", {"propagator": "flow"}, resume=False)
    assert not store.has(0) and store.load_state("forward") is None


def test_frame_store_without_a_work_folder_cleans_up(tmp_path):
    store = FrameStore(None, {}, resume=False)
    store.save(0, np.zeros((2, 2, 3), np.uint8))
    assert store.has(0)
    folder = store.work_dir
    store.close()
    assert not folder.exists()


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoint folders: checksums.json
# ---------------------------------------------------------------------------------------------------------------------
def test_checksums_catch_a_truncated_missing_or_changed_file(tmp_path):
    folder = tmp_path / "step-0000004"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (folder / "optimizer.bin").write_bytes(b"x" * 1000)
    write_checksums(folder)
    assert check_folder(folder) is None
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 32)
    assert "model.safetensors is 8192 bytes" in check_folder(folder)
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 63 + bytes(256))
    assert "not the ones written" in check_folder(folder)
    (folder / "model.safetensors").unlink()
    assert "model.safetensors is missing" in check_folder(folder)
    (folder / "checksums.json").write_text("garbage")
    assert "unreadable" in check_folder(folder)


def _fake_checkpoint(out, step: int):
    from magicprop.training.checkpoint import STATE_FILE, checkpoint_dir

    folder = checkpoint_dir(out, step)
    folder.mkdir(parents=True)
    write_piece(folder / "model.safetensors", {"w": torch.full((64,), float(step))})
    (folder / "optimizer.bin").write_bytes(bytes([step]) * 500)
    write_checksums(folder)  # as save_checkpoint does: after the files, before train_state.json
    (folder / STATE_FILE).write_text(json.dumps({"step": step}))
    return folder


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing_file", "garbled_state"])
def test_resume_latest_falls_back_past_a_damaged_checkpoint(tmp_path, caplog, damage, record_property):
    from magicprop.training.checkpoint import resolve_resume

    record_property("damaged_work", f"checkpoint_{damage}")
    older, newest = _fake_checkpoint(tmp_path, 4), _fake_checkpoint(tmp_path, 8)
    weights = newest / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "garbage":
        weights.write_bytes(bytes(weights.stat().st_size))
    elif damage == "missing_file":
        (newest / "optimizer.bin").unlink()
    else:
        (newest / "train_state.json").write_text("{")
    assert resolve_resume(tmp_path, str(older)) == older
    with caplog.at_level(logging.WARNING):
        assert resolve_resume(tmp_path, "latest") == older
        assert resolve_resume(tmp_path, "latest") == older  # `magicprop train` asks twice: said once
    lines = warnings_of(caplog)
    assert len(lines) == 1 and "step-0000008 is damaged" in lines[0] and "resuming from step-0000004" in lines[0], lines
    with pytest.raises(UsageError, match=r"--resume .*step-0000008: the checkpoint is damaged") as exc:
        resolve_resume(tmp_path, str(newest))
    assert "\n" not in str(exc.value)
    record_property("identical", True)


def test_resume_latest_with_every_checkpoint_damaged_is_one_line(tmp_path):
    from magicprop.training.checkpoint import resolve_resume

    for step in (4, 8):
        (_fake_checkpoint(tmp_path, step) / "model.safetensors").write_bytes(b"")
    with pytest.raises(UsageError, match="every checkpoint .* is damaged; start without --resume"):
        resolve_resume(tmp_path, "latest")


def test_a_job_removes_what_a_killed_writer_left_and_batch_tidies_a_complete_job(tmp_path):
    """SIGKILL runs no cleanup: the next run of the job deletes its outputs' stale temporaries, and batch, skipping a
    complete job, removes a work folder a kill after OUT.json left."""
    from magicprop.fileio import remove_stale_temporaries
    from magicprop.jobs import Outputs

    out = tmp_path / "clip.mp4"
    left = [tmp_path / ".clip.ab12cd_x.tmp.mp4", tmp_path / ".clip.keyframe.x1y2z3w4.tmp.png"]
    for p in left:
        p.write_bytes(b"half")
    (tmp_path / ".clip.mp4.q9r8s7t6.tmp").mkdir()  # a frame folder writer's temporary
    keep = [tmp_path / "clip.other.mp4", tmp_path / ".hidden.tmp", tmp_path / ".clip.v2.abcdefgh.tmp.mp4"]  # not ours
    for p in keep:
        p.write_bytes(b"user's")
    assert [p.name for p in remove_stale_temporaries(out)] == [".clip.ab12cd_x.tmp.mp4", ".clip.mp4.q9r8s7t6.tmp"]
    outputs = Outputs.of(out)
    outputs.work.mkdir()
    outputs.tidy()
    assert not outputs.work.exists() and all(p.exists() for p in keep) and not any(p.exists() for p in left)


@pytest.mark.parametrize("damage", ["garbage_json", "truncated_png"])
def test_a_damaged_kept_keyframe_is_edited_again(damage, clip, tmp_path, caplog):
    from magicprop.pipeline import MagicPropPipeline

    source, edited = clip.source, clip.edited
    pipe = MagicPropPipeline(propagator="copy")
    work = tmp_path / "w"
    seed = lambda: torch.Generator().manual_seed(0)  # noqa: E731 - the seed is part of the keyframe's record
    first = pipe(source, keyframe_image=edited[2], keyframe_index=2, work_dir=work, generator=seed()).frames
    target = work / ("keyframe.json" if damage == "garbage_json" else "keyframe.png")
    target.write_bytes(b"\x00garbage" if damage == "garbage_json" else target.read_bytes()[:40])
    with caplog.at_level(logging.WARNING):
        again = pipe(source, keyframe_image=edited[2], keyframe_index=2, work_dir=work, resume=True, generator=seed()).frames
    assert np.array_equal(again, first) and "kept keyframe" in caplog.text and "damaged" in caplog.text
