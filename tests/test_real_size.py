"""PropDPM at its real size, on the `meta` device (shapes only: seconds, no memory): SD 1.5's UNet converted as a real
one is, CLIP ViT-L/14's tokens through the adaptor, `assemble_conditioning`, one UNet call, and what it costs. A change
that breaks the real size fails here, not on a user's GPU. `benchmarks/real_size.py` runs the same models for real.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from magicprop.models import PropDPM, real
from magicprop.models.encoders import clip_image_tokens, vae_encode


@pytest.fixture(scope="module")
def meta():
    with torch.device("meta"):
        unet = real.sd15_unet()
        return {"unet": unet, "propdpm": PropDPM.from_stable_diffusion(real.sd15_unet()), "vae": real.sd15_vae(),
                "clip": real.clip_vision_tower()}  # fmt: skip


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_the_public_models_have_their_published_sizes(meta):
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(meta["unet"]) == 859_520_964  # stable-diffusion-v1-5 unet/
    assert count(meta["vae"]) == 83_653_863
    assert count(meta["clip"]) == 303_966_208  # CLIP ViT-L/14 vision tower + visual projection
    assert count(meta["propdpm"]) - count(meta["unet"]) == 11_223_552 + 320 * 6 * 9  # the adaptor, conv_in's new channels
    with torch.device("meta"):
        assert count(real.depth_controlnet()) == 361_279_120  # pinned as built (published: 361.3M)
        assert count(real.depth_anything_small()) == 24_785_089  # Depth-Anything-V2-Small-hf


@pytest.mark.parametrize("resolution", [256, 512])
def test_real_size_shapes_through_the_adaptor_conditioning_and_one_unet_call(meta, resolution):
    h = resolution // 8
    image = torch.rand(1, 3, resolution, resolution, device="meta")
    tokens = clip_image_tokens(meta["clip"], image)
    assert tokens.shape == (1, 1 + 16 * 16, 768)  # 1024 wide inside the tower, projected to SD's cross-attention width
    latent = vae_encode(meta["vae"], image)
    assert latent.shape == (1, 4, h, h)
    propdpm = meta["propdpm"]
    x, t, cond, _ = real.example_conditioning(propdpm, resolution, batch=2, image_encoder=meta["clip"])
    assert cond.spatial.shape == (2, 6, h, h) and cond.reference_tokens.shape == (1, 1 + (h // 2) ** 2, 768)
    null = propdpm.encode_reference(tokens, latent, drop=torch.ones(1, dtype=torch.bool, device="meta"))
    assert null.shape == cond.reference_tokens.shape
    kv = propdpm.cache_reference(torch.cat([cond.reference_tokens, null]))
    assert propdpm(x, t, cond).shape == propdpm(x, t, cond, kv.select([0, 1])).shape == (2, 4, h, h)


def test_anchored_and_warped_models_take_their_channels_at_real_size():
    with torch.device("meta"):
        model = PropDPM.from_stable_diffusion(real.sd15_unet(), use_anchored_reference=True, use_warped_previous=True)
    assert model.unet.conv_in.weight.shape == (320, 4 + 6 + 4 + 5, 3, 3)
    x, t, cond, _ = real.example_conditioning(model, 256, batch=1)
    cond.spatial = torch.cat([cond.spatial, torch.zeros(1, 4, 32, 32, device="meta")], 1)  # the warped previous latent
    assert model(x, t, cond).shape == (1, 4, 32, 32)


def test_propdpm_costs_at_most_five_percent_more_than_a_plain_sd_call_at_the_papers_size(meta):
    """Per frame, from FLOPs: the reference's keys and values are cached once per clip (models/attention.py); the rest
    is attention over 257 reference tokens instead of 77 text tokens and conv_in's 6 more input channels."""
    ratios = {}
    for resolution in (256, 512):
        h = resolution // 8
        x, t, cond, _ = real.example_conditioning(meta["propdpm"], resolution, batch=1)
        kv = meta["propdpm"].cache_reference(cond.reference_tokens).select(None)
        cached = flops(lambda: meta["propdpm"](x, t, cond, kv))
        uncached = flops(lambda: meta["propdpm"](x, t, cond))
        plain = flops(lambda: meta["unet"](x, t, encoder_hidden_states=torch.randn(1, 77, 768, device="meta")))
        ratios[resolution] = (uncached / plain, cached / plain)
    assert ratios[256][1] <= 1.0 < 1.05 <= ratios[256][0]  # 0.995 cached, 1.050 before
    assert ratios[512][1] < 1.052 < 1.09 < ratios[512][0]  # 1.051 cached (1025 reference tokens), 1.100 before


def test_the_tokenizer_has_clips_vocabulary_size(tmp_path):
    tokenizer = real.write_clip_tokenizer(tmp_path / "tokenizer")
    ids = tokenizer("a watercolor painting of a city")["input_ids"]
    assert len(tokenizer) == 49408 and ids[0] == 49406 and ids[-1] == 49407 and max(ids[1:-1]) < 49406


def test_frames_decode_in_batches_of_at_most_eight_256x256_frames_of_pixels():
    """SD's VAE decoder holds ~0.38 GB of bf16 activations per 256x256 frame: 8 frames at 512x512 held 3.0 GB."""
    from magicprop.propagation.propdpm.sampling import decode_batch_size

    assert [decode_batch_size(*s) for s in ((64, 64), (256, 256), (256, 512), (512, 512), (1080, 1920))] == [8, 8, 4, 2, 1]


def load_benchmark(name: str):
    """A module of benchmarks/ (real_size.py imports its sibling real_size_costs.py by name)."""
    import importlib
    import sys
    from pathlib import Path

    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def test_the_dry_runs_cost_code_counts_the_overhead_and_projects_it(meta):
    """benchmarks/real_size_costs.py measures its calls as the test above does, and its per-frame arithmetic is
    25 UNet calls + one decode, projected at 40% of an H100's 989 bf16 TFLOP/s."""
    costs = load_benchmark("real_size_costs")
    models = {"sd15_unet": meta["unet"], "propdpm": meta["propdpm"], "vae": meta["vae"], "clip_vision": meta["clip"]}
    made = costs.calls(models, 256)
    g = {name: costs.flops(made[name]()[1]) / 1e9 for name in ("sd15_unet@256", "propdpm@256", "vae_decode@256")}
    assert g["propdpm@256"] / g["sd15_unet@256"] <= 1.0  # cached reference keys and values: 0.995
    assert costs.params(made["adaptor@256"]()[0]) == 11_223_552
    rows = {name: {"gflops": value} for name, value in {
        "propdpm@256": 100.0, "propdpm@512": 400.0, "sd15_unet@256": 99.0, "sd15_unet@512": 390.0,
        "propdpm_uncached@256": 104.0, "propdpm_uncached@512": 430.0, "vae_decode@256": 300.0, "vae_decode@512": 1200.0,
        "text_encoder": 7.0, "controlnet@512": 200.0, "depth_anything@518": 60.0, "vae_encode@256": 140.0,
        "clip_vision": 160.0, "train_step@256": 900.0, "train_step@256_checkpointed": 1200.0}.items()}  # fmt: skip
    out = costs.per_frame(rows)
    assert out["gflops"]["propdpm_frame@256"] == 25 * 100 + 300
    assert out["gflops"]["overhead_ratio@512"] == 400 / 390
    assert out["projection"]["h100_propdpm_frames_per_s@256"] == 989.4e12 * 0.4 / 1e9 / 2800


def test_the_dry_run_gives_a_command_its_own_flags(tmp_path):
    """The child that measures a command passes every flag on, also those the script itself has (--frames, --steps,
    --device, --dtype): parsed by the script, they were dropped, and `edit --steps 2` ran stage I at its 30."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "real_size.py"
    argv = ["--measure-cli", tmp_path / "m.json", "synth", "--out", tmp_path / "clip", "--frames", "2", "--size", "32", "32"]
    subprocess.run([sys.executable, script, *map(str, argv)], check=True, capture_output=True)
    assert json.loads((tmp_path / "clip" / "meta.json").read_text())["frames"] == 2
    measured = json.loads((tmp_path / "m.json").read_text())
    assert measured["cpu_seconds"] > 0 and 0.05 < measured["peak_gb"] < 3


def test_reuse_keeps_a_record_an_earlier_call_made_and_a_rerun_drops_it(tmp_path):
    """`real_size.py --reuse` reports what an earlier call finished (edit and train took an hour here), marked with
    when; without it the old record goes first, so a rerun that fails cannot leave it looking current."""
    import json
    from types import SimpleNamespace

    earlier_record = load_benchmark("real_size_commands").earlier_record
    record = tmp_path / "edit.result.json"
    record.write_text(json.dumps({"rc": 0, "cpu_seconds": 215.0}))
    kept = earlier_record(SimpleNamespace(reuse=True), record)
    assert kept["cpu_seconds"] == 215.0 and kept["reused"].endswith("UTC")
    assert earlier_record(SimpleNamespace(reuse=False), record) is None and not record.exists()
    assert earlier_record(SimpleNamespace(reuse=True), record) is None
