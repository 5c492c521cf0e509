"""Models that are not what a flag expects, each refused in one line (exit 2) before any weight is read, or, for
float16 weights on the CPU, run in float32 with one line saying so: a hub folder missing a component, a checkpoint
of another architecture (SD 2.x, SDXL, weights of other shapes than their config), a model saved in float16.

SD 2.x and SDXL are told apart by their configs alone (linear attention projections; text_time embeddings), so the
folders here hold tiny SD 1.x weights under an edited unet/config.json: the check must come before the weights.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from badinputs import make_workspace
from fixtures import get_dummy_propagation_models, save_dummy_image_encoder, save_tiny_controlnet, save_tiny_sd

from magicprop.cli import main

ARCHITECTURES = {  # unet/config.json fields that make a tiny SD 1.x folder look like another architecture
    "sd21": ({"use_linear_projection": True, "attention_head_dim": [2, 2], "upcast_attention": True}, "Stable Diffusion 2.x"),
    "sdxl": ({"addition_embed_type": "text_time", "addition_time_embed_dim": 8, "cross_attention_dim": 2048}, "SDXL"),
}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("wrong"))
    ws.sd = save_tiny_sd(ws.root / "sd")
    ws.controlnet = save_tiny_controlnet(ws.root / "controlnet")
    return ws


def edit_args(ws, out, base=None, controlnet=None) -> list[str]:
    return ["edit", str(ws.clip), "--prompt", "a red cat", "--steps", "1", "--propagation-steps", "1", "--keyframe-index", "3",
            "--base-model", str(base or ws.sd), "--controlnet", str(controlnet or ws.controlnet), "--model", str(ws.model),
            "--depth-model", str(ws.depth), "-o", str(out)]  # fmt: skip


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.splitlines()
    lines = [line for line in err if line.startswith("magicprop ")]
    assert len(lines) == 1 and "Traceback" not in "\n".join(err), err
    return lines[0]


def copy_as(ws, tmp_path, name: str, subfolder: str | None = "unet") -> object:
    """The tiny SD folder (or ControlNet, subfolder None) with the config fields of another architecture."""
    source = ws.sd if subfolder else ws.controlnet
    folder = shutil.copytree(source, tmp_path / name)
    config = (folder / subfolder if subfolder else folder) / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **ARCHITECTURES[name][0]}))
    return folder


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_another_architecture_as_base_model_controlnet_or_pretrained_is_one_line(ws, tmp_path, capsys, name):
    says = ARCHITECTURES[name][1]
    assert main(edit_args(ws, tmp_path / "o.mp4", base=copy_as(ws, tmp_path, name))) == 2
    line = one_error_line(capsys)
    assert f"--base-model {tmp_path / name} is a{'n' if name == 'sdxl' else ''} {says} UNet" in line
    assert "not Stable Diffusion 1.x" in line and "stable-diffusion-v1-5" in line
    assert main(edit_args(ws, tmp_path / "o.mp4", controlnet=copy_as(ws, tmp_path / "cn", name, subfolder=None))) == 2
    assert says in one_error_line(capsys)
    clips = ws.root / "train-clips"
    if not clips.exists():
        main(["synth", "--out", str(clips), "--count", "1", "--frames", "6", "--size", "32", "32"])
    save_dummy_image_encoder(tmp_path / "clip")
    train = ["train", "--config", "tiny-synthetic", "--data", str(clips), "--output-dir", str(tmp_path / "run"),
             "--pretrained", str(tmp_path / name), "--image-encoder", str(tmp_path / "clip")]  # fmt: skip
    assert main(train) == 2
    assert says in one_error_line(capsys) and not (tmp_path / "run" / "checkpoints").exists()


def test_a_hub_folder_missing_a_component_is_one_line(ws, tmp_path, capsys):
    sd = shutil.copytree(ws.sd, tmp_path / "sd")
    shutil.rmtree(sd / "text_encoder")
    assert main(edit_args(ws, tmp_path / "o.mp4", base=sd)) == 2
    line = one_error_line(capsys)
    assert f"{sd} has no text_encoder/ folder" in line and "--base-model" in line and "safetensors" not in line
    model = shutil.copytree(ws.model, tmp_path / "model")
    shutil.rmtree(model / "vae")
    assert main(["propagate", str(ws.clip), "--keyframe-image", str(ws.key), "--keyframe-index", "3", "--model", str(model),
                 "--depth-model", str(ws.depth), "-o", str(tmp_path / "p.mp4")]) == 2  # fmt: skip
    assert "has no vae/ folder" in one_error_line(capsys)


def test_weights_of_other_shapes_than_their_config_are_one_line(ws, tmp_path, capsys):
    """A CLIP checkpoint whose vision config leaves the projection width out (CLIPVisionModelWithProjection then builds
    transformers' default, 512): the load fails on shapes, which is said in one line, not a load report and traceback."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    CLIPModel(CLIPConfig(text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
                         vision_config=vision, projection_dim=16)).save_pretrained(tmp_path / "clip")  # fmt: skip
    model = shutil.copytree(ws.model, tmp_path / "model")
    shutil.rmtree(model / "image_encoder")
    card = json.loads((model / "magicprop.json").read_text())
    (model / "magicprop.json").write_text(json.dumps({**card, "components": {"image_encoder": {"id": str(tmp_path / "clip")}}}))
    assert main(["propagate", str(ws.clip), "--keyframe-image", str(ws.key), "--keyframe-index", "3", "--model", str(model),
                 "--depth-model", str(ws.depth), "-o", str(tmp_path / "p.mp4")]) == 2  # fmt: skip
    line = one_error_line(capsys)
    assert "holds weights of other shapes than its config describes" in line and str(tmp_path / "clip") in line


def test_a_model_saved_in_float16_runs_on_the_cpu_in_float32(ws, tmp_path, caplog):
    """transformers loads weights in their saved dtype, diffusers in float32: the CLIP tower came in float16 and met a
    float32 adaptor ('Input type (c10::Half) and bias type (float) should be the same'). Every part loads in float32
    now, and one line says the weights were half precision."""
    models = get_dummy_propagation_models()
    for module in (models.propdpm, models.vae, models.image_encoder):
        module.to(torch.float16)
    models.save_pretrained(tmp_path / "fp16", card={"config": "dummy"})
    args = ["propagate", str(ws.clip), "--keyframe-image", str(ws.key), "--keyframe-index", "3", "--depth-model", str(ws.depth),
            "--steps", "1", "--seed", "0"]  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert main([*args, "--model", str(tmp_path / "fp16"), "-o", str(tmp_path / "half.mp4")]) == 0
    said = [r.getMessage() for r in caplog.records if "half-precision weights" in r.getMessage()]
    assert len(said) == 1 and "run in float32" in said[0]
    sd = shutil.copytree(ws.sd, tmp_path / "sd16")  # stage I too: SD saved in float16 (its text encoder is transformers')
    from transformers import CLIPTextModel

    CLIPTextModel.from_pretrained(sd / "text_encoder", dtype=torch.float16).save_pretrained(sd / "text_encoder")
    assert main(edit_args(ws, tmp_path / "e.mp4", base=sd)) == 0


def test_the_vision_tower_loads_from_a_whole_clip_folder_quietly_and_says_what_its_files_lack(tmp_path, caplog, capsys):
    """openai/clip-vit-large-patch14 holds both towers: transformers' load report listed every text weight (25 lines
    per run in the real-size dry run). Weights the files lack are still said, in one line."""
    from safetensors.torch import load_file, save_file
    from transformers import CLIPConfig, CLIPModel, CLIPVisionModelWithProjection

    from magicprop.hub import load_component

    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    text = {**tower, "vocab_size": 99, "bos_token_id": 97, "eos_token_id": 98, "pad_token_id": 98}
    config = CLIPConfig(text_config=text, vision_config={**tower, "image_size": 32, "patch_size": 8, "projection_dim": 16},
                        projection_dim=16)  # fmt: skip
    CLIPModel(config).save_pretrained(tmp_path)
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        load_component(CLIPVisionModelWithProjection, tmp_path, what="CLIP image encoder", flag="--image-encoder")
    assert "LOAD REPORT" not in capsys.readouterr().err + caplog.text and "text_model" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if k != "visual_projection.weight"}, tmp_path / "model.safetensors")
    caplog.clear()
    load_component(CLIPVisionModelWithProjection, tmp_path, what="CLIP image encoder", flag="--image-encoder")
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "lacks 1 weights, left random (visual_projection.weight)" in line
