"""Half precision end to end, on tiny models: propagation with every PropDPM option in bfloat16 and float16 (what
`--dtype bf16|fp16` runs on a GPU), and training under the bf16 autocast of the `sd15-256` recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures import get_dummy_propagation_models, training_workspace

from magicprop.cli import main
from magicprop.propagation import PROPAGATORS, PropagationRequest, PropagationSettings
from magicprop.synthetic import render_clip

OPTIONS = {
    "paper": {},
    "anchored": {"use_anchored_reference": True},
    "residual": {"use_warped_previous": True, "predict_residual": True},
    "context": {"context_level_embedding": True, "inference_context_level": 0.1},
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("option", OPTIONS)
def test_propagation_runs_in_half_precision(dtype, option):
    clip = render_clip(3, frames=5, size=(32, 48))
    full = get_dummy_propagation_models(**OPTIONS[option])
    half = get_dummy_propagation_models(**OPTIONS[option]).to(dtype=dtype)
    settings = PropagationSettings(num_inference_steps=2, guidance_scale=2.0, seed=1)  # both branches, one batch
    outputs = {}
    for name, models in (("full", full), ("half", half)):
        request = PropagationRequest(source=clip.source, keyframes={2: clip.edited[2]}, depth=clip.depth, models=models,
                                     settings=settings, progress=False)  # fmt: skip
        outputs[name] = np.stack(list(PROPAGATORS["hybrid" if option == "anchored" else "propdpm"](request)))
    assert outputs["half"].shape == (5, 32, 48, 3) and outputs["half"].dtype == np.uint8
    assert np.array_equal(outputs["half"][2], clip.edited[2])  # the keyframe stays exact
    # the same model rounded to half precision: near the float32 frames (levels of 0..255)
    assert np.abs(outputs["half"].astype(int) - outputs["full"].astype(int)).mean() < 4


def test_training_under_bf16_autocast_exports_a_model(tmp_path):
    ws = training_workspace(tmp_path / "ws", 2, frames=8)
    recipe = {"resolution": 16, "frames_per_clip": 8, "frame_stride": 1, "batch_size": 2, "num_workers": 0, "use_ema": False,
              "mixed_precision": "bf16", "gradient_checkpointing": True, "log_every": 1}  # fmt: skip
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    assert main(["train", "--config", "tiny-synthetic", "--recipe", str(tmp_path / "recipe.json"), "--pretrained", str(ws / "sd"),
                 "--image-encoder", str(ws / "clip"), "--data", str(ws / "clips"), "--output-dir", str(tmp_path / "run"),
                 "--max-steps", "2"]) == 0  # fmt: skip
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "logs" / "train_log.jsonl").read_text().splitlines()
              if '"loss"' in line]  # fmt: skip
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert (tmp_path / "run" / "final" / "propdpm" / "diffusion_pytorch_model.safetensors").is_file()
