"""`magicprop edit`, `propagate` and `batch` from files to files, with tiny models in folders (in-process CLI)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from fixtures import save_tiny_magicprop_models

from magicprop.cli import main
from magicprop.editing import feather_mask
from magicprop.synthetic import render_clip
from magicprop.video import read_video, save_image, write_video

FPS = 12.0


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    paths = save_tiny_magicprop_models(tmp_path_factory.mktemp("models"))
    return ["--base-model", str(paths["sd"]), "--controlnet", str(paths["controlnet"]), "--depth-model", str(paths["depth"]),
            "--model", str(paths["model"])]  # fmt: skip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    c = render_clip(5, frames=5, size=(48, 80), edit="local")
    write_video(folder / "source.mp4", c.source, FPS)
    (folder / "masks").mkdir()
    for t, m in enumerate(c.masks):
        save_image(folder / "masks" / f"{t}.png", m)
    c.meta["folder"] = folder
    return c


def edit(*args: str) -> int:
    return main(["edit", *map(str, args), "--steps", "2", "--propagation-steps", "2"])


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("magicprop ")]
    assert len(err) == 1, err
    return err[0]


def test_edit_writes_everything_and_config_reproduces(models, clip, tmp_path):
    # Frames are compared through folders of PNGs: lossless, where two H.264 encodes of equal frames need not match.
    src = clip.meta["folder"] / "source.mp4"
    out = tmp_path / "out"
    assert edit(src, "--prompt", "a red cat", "--seed", "3", *models, "-o", out) == 0
    source, _ = read_video(src)
    frames = read_video(out)[0]
    assert frames.shape == source.shape
    for name in ("out.keyframe.png", "out.comparison.mp4", "out.json"):
        assert (tmp_path / name).is_file()
    comparison, fps = read_video(tmp_path / "out.comparison.mp4")
    assert len(comparison) == 5 and fps == pytest.approx(FPS)
    assert not (tmp_path / "out.magicprop-work").exists()
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["settings"]["seed"] == 3 and record["settings"]["keyframe_index"] == 2 and record["settings"]["prompt"] == "a red cat"
    assert record["models"]["base_model"].endswith("sd") and record["source"]["fps"] == pytest.approx(FPS)
    assert main(["edit", str(src), "--config", str(tmp_path / "out.json"), "-o", str(tmp_path / "again")]) == 0
    np.testing.assert_array_equal(read_video(tmp_path / "again")[0], frames)


def test_per_frame_masks_leave_the_background_untouched(models, clip, tmp_path):
    folder = clip.meta["folder"]
    out = tmp_path / "frames"  # no suffix: a folder of PNGs, lossless, so equality can be exact
    code = edit(folder / "source.mp4", "--prompt", "a red cat", "--masks", folder / "masks", "--feather", "2", "--seed", "0", *models, "-o", out)
    assert code == 0
    source, frames = read_video(folder / "source.mp4")[0], read_video(out)[0]
    for t in range(5):
        outside = feather_mask(clip.masks[t], 2) == 0
        np.testing.assert_array_equal(frames[t][outside], source[t][outside])
    assert (tmp_path / "frames.comparison.mp4").is_file() and (tmp_path / "frames.json").is_file()


def test_mask_of_another_size_is_resized_with_a_warning(models, clip, tmp_path, caplog):
    mask = np.zeros((24, 40), np.uint8)
    mask[5:15, 10:30] = 180  # grey: thresholded
    save_image(tmp_path / "m.png", mask)
    assert edit(clip.meta["folder"] / "source.mp4", "--prompt", "a cat", "--mask", tmp_path / "m.png", "--seed", "0", *models, "-o", tmp_path / "o.mp4") == 0
    assert "resizing" in caplog.text
    frames, fps = read_video(tmp_path / "o.mp4")
    assert frames.shape == clip.source.shape and fps == pytest.approx(FPS)


def test_user_keyframe_with_propagate(models, clip, tmp_path, caplog):
    key = tmp_path / "key.png"
    save_image(key, np.full((64, 64, 3), 120, np.uint8))  # square: stretched, with a warning
    out = tmp_path / "p.mp4"
    stage2 = models[-2:] + ["--depth-model", models[5]]
    assert main(["propagate", str(clip.meta["folder"] / "source.mp4"), "--keyframe-image", str(key), "--keyframe-index", "0",
                 "--steps", "2", "--seed", "1", *stage2, "-o", str(out)]) == 0  # fmt: skip
    assert "stretches" in caplog.text
    frames, fps = read_video(out)
    assert frames.shape == clip.source.shape and fps == pytest.approx(FPS)
    assert "base_model" not in json.loads((tmp_path / "p.json").read_text())["models"]
    # the same with --propagator hybrid: PropDPM fused with flow, recorded as such; it needs the same models
    assert main(["propagate", str(clip.meta["folder"] / "source.mp4"), "--keyframe-image", str(key), "--keyframe-index", "0",
                 "--steps", "2", "--seed", "1", "--propagator", "hybrid", *stage2, "-o", str(tmp_path / "h.mp4")]) == 0  # fmt: skip
    record = json.loads((tmp_path / "h.json").read_text())
    assert record["settings"]["propagator"] == "hybrid" and {"propagation_model", "depth_model"} <= set(record["models"])
    assert read_video(tmp_path / "h.mp4")[0].shape == clip.source.shape


def test_usage_errors_are_one_line_exit_2(models, clip, tmp_path, capsys):
    src = clip.meta["folder"] / "source.mp4"
    assert edit(src, *models, "-o", tmp_path / "x.mp4") == 2
    assert "prompt" in one_error_line(capsys)
    empty = tmp_path / "empty.png"
    save_image(empty, np.zeros((48, 80), np.uint8))
    assert edit(src, "--prompt", "a cat", "--mask", empty, *models, "-o", tmp_path / "x.mp4") == 2
    assert "empty" in one_error_line(capsys)
    with pytest.raises(SystemExit) as exit_info:
        edit(src, "--prompt", "a cat", "--propagator", "magic", "-o", tmp_path / "x.mp4")
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert not list(tmp_path.glob("x*"))


def test_output_equal_to_input_is_refused(models, clip, tmp_path, capsys):
    src = tmp_path / "in.mp4"
    src.write_bytes((clip.meta["folder"] / "source.mp4").read_bytes())
    before = src.read_bytes()
    assert edit(src, "--prompt", "a cat", *models, "-o", src) == 2
    assert "same as the input" in one_error_line(capsys)
    assert src.read_bytes() == before


def test_missing_model_offline_fails_fast(models, clip, tmp_path, capsys):
    t0 = time.time()
    code = edit(clip.meta["folder"] / "source.mp4", "--prompt", "a cat", *models, "--base-model", "nobody/no-such-sd", "-o", tmp_path / "x.mp4")
    assert code == 1 and time.time() - t0 < 10
    line = one_error_line(capsys)
    assert "nobody/no-such-sd" in line and "--base-model" in line


def test_resume_continues_a_killed_run(models, clip, tmp_path, monkeypatch):
    import magicprop.jobs
    import magicprop.propagation.propdpm.sampling

    src, out, fresh = clip.meta["folder"] / "source.mp4", tmp_path / "r", tmp_path / "fresh"  # PNG folders: lossless
    assert edit(src, "--prompt", "a cat", "--seed", "4", *models, "-o", fresh) == 0

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(magicprop.jobs, "atomic_write_json", killed)  # dies after propagating, before OUT.json
    assert edit(src, "--prompt", "a cat", "--seed", "4", *models, "-o", out) == 130
    assert (tmp_path / "r.magicprop-work" / "keyframe.png").is_file()
    monkeypatch.undo()
    monkeypatch.setattr(magicprop.propagation.propdpm.sampling, "denoise", lambda *a, **k: pytest.fail("a finished step ran again"))
    assert edit(src, "--prompt", "a cat", "--seed", "4", *models, "--resume", "-o", out) == 0
    np.testing.assert_array_equal(read_video(out)[0], read_video(fresh)[0])
    assert not (tmp_path / "r.magicprop-work").exists()


def test_batch_skips_done_jobs_and_reports_failures(models, clip, tmp_path, capsys):
    opts = dict(zip([m.lstrip("-").replace("-", "_") for m in models[::2]], models[1::2]))
    src = str(clip.meta["folder"] / "source.mp4")
    jobs = [
        {"video": src, "prompt": "a cat", "seed": 0, "steps": 2, "propagation_steps": 2, "output": "a.mp4", **opts},
        {"video": "missing.mp4", "prompt": "a cat", "output": "b.mp4", **opts},
        {"video": src, "keyframe_image": str(clip.meta["folder"] / "masks" / "0.png"), "keyframe_index": 0, "propagator": "copy"},
    ]
    (tmp_path / "jobs.jsonl").write_text("\n".join(json.dumps(j) for j in jobs) + "\n")
    assert main(["batch", str(tmp_path / "jobs.jsonl"), "--output-dir", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if "error" in line] == [
        f"jobs.jsonl:2: error: video not found: {tmp_path / 'missing.mp4'}; check the path"
    ]
    assert (tmp_path / "out" / "a.json").is_file() and (tmp_path / "out" / "source-3.json").is_file()
    assert "2 done, 0 skipped (already complete), 1 failed" in captured.out
    assert main(["batch", str(tmp_path / "jobs.jsonl"), "--output-dir", str(tmp_path / "out")]) == 1
    assert "0 done, 2 skipped (already complete), 1 failed" in capsys.readouterr().out


def test_mask_from_a_click(models, clip, tmp_path):
    from fixtures import save_tiny_sam

    sam = save_tiny_sam(tmp_path / "sam")
    out = tmp_path / "click.mp4"
    assert edit(clip.meta["folder"] / "source.mp4", "--prompt", "a cat", "--mask-point", "40,24", "--sam-model", sam, "--seed", "0", *models, "-o", out) == 0
    record = json.loads((tmp_path / "click.json").read_text())
    assert record["settings"]["mask_points"] == [[40.0, 24.0]] and record["models"]["sam_model"] == str(sam)


def test_batch_under_accelerate_takes_every_other_job(clip, tmp_path, monkeypatch, capsys):
    import accelerate

    class Rank1Of2:
        num_processes, process_index, device = 2, 1, "cpu"

    monkeypatch.setattr(accelerate, "PartialState", Rank1Of2)
    monkeypatch.setenv("WORLD_SIZE", "2")  # what accelerate's launcher sets: without it, the batch runs alone
    job = {"video": str(clip.meta["folder"] / "source.mp4"), "keyframe_image": str(clip.meta["folder"] / "masks" / "0.png"),
           "keyframe_index": 0, "propagator": "copy"}  # fmt: skip
    (tmp_path / "jobs.jsonl").write_text("\n".join(json.dumps({**job, "output": f"{i}.mp4"}) for i in range(3)) + "\n")
    assert main(["batch", str(tmp_path / "jobs.jsonl")]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["1.json"]
    assert "(process 1 of 2): 1 done" in capsys.readouterr().out


def test_default_model_ids_are_the_real_hub_ids():
    from magicprop.jobs import EditJob

    job = EditJob(video="v.mp4", output="o.mp4")
    assert job.base_model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert job.controlnet == "lllyasviel/control_v11f1p_sd15_depth"
    assert job.depth_model == "depth-anything/Depth-Anything-V2-Small-hf"


def test_yaml_config_paths_are_relative_to_the_file(tmp_path):
    from magicprop.errors import UsageError
    from magicprop.jobs import load_config

    (tmp_path / "models" / "sd").mkdir(parents=True)
    (tmp_path / "edit.yaml").write_text("prompt: a red cat\nmask: masks/key.png\nbase_model: models/sd\ncontrolnet: some/hub-id\nvideo: ignored.mp4\n")
    config = load_config(tmp_path / "edit.yaml")
    assert config == {"prompt": "a red cat", "mask": str(tmp_path / "masks/key.png"), "base_model": str(tmp_path / "models/sd"),
                      "controlnet": "some/hub-id"}  # fmt: skip
    (tmp_path / "bad.yaml").write_text("promt: typo\n")
    with pytest.raises(UsageError, match="unknown setting.*promt"):
        load_config(tmp_path / "bad.yaml")
