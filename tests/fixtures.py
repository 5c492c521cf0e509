"""Tiny components for tests, built from configs in code (no hub, no weights).

Every builder seeds torch before constructing a module, so two calls give identical weights. `save_*` helpers write a
component with `save_pretrained` into a folder so tests exercise the real loading code, exactly as a hub id would.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SEED = 0


# --------------------------------------------------------------------------------------------------------------------
# Depth (transformers)
# --------------------------------------------------------------------------------------------------------------------
def get_tiny_depth_model():
    """A Depth Anything model with a 4-layer, 16-wide DINOv2 backbone (about 38k parameters)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(SEED)
    backbone = Dinov2Config(
        image_size=28,
        patch_size=14,
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        neck_hidden_sizes=[8, 8, 8, 8],
        fusion_hidden_size=8,
        head_hidden_size=4,
        reassemble_hidden_size=16,
        patch_size=14,
    )
    return DepthAnythingForDepthEstimation(config).eval()


def save_tiny_depth_model(folder: str | Path) -> Path:
    """Save the tiny depth model and a matching image processor (42 px inputs) as a hub-style folder."""
    from transformers import DPTImageProcessor

    folder = Path(folder)
    get_tiny_depth_model().save_pretrained(folder)
    processor = DPTImageProcessor(
        do_resize=True,
        size={"height": 42, "width": 42},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    processor.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------------------------------
# Stage II: PropDPM, VAE, CLIP image tower (the dummy components of every model/propagation/training test)
# --------------------------------------------------------------------------------------------------------------------
DUMMY_PROPDPM = {
    "sample_size": 8,
    "block_out_channels": (8, 8),
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "layers_per_block": 1,
    "attention_head_dim": 2,
    "cross_attention_dim": 16,
    "norm_num_groups": 2,
}


def get_dummy_unet():
    """A 4-channel SD-shaped UNet with the dummy PropDPM's blocks (for the zero-init equivalence test)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(SEED)
    cfg = {k: v for k, v in DUMMY_PROPDPM.items()}
    return UNet2DConditionModel(in_channels=4, out_channels=4, **cfg).eval()


def get_dummy_propdpm(**overrides):
    from magicprop.models import PropDPM

    torch.manual_seed(SEED)
    return PropDPM(**{**DUMMY_PROPDPM, **overrides}).eval()


def get_dummy_vae():
    """AutoencoderKL with one downsampling: 32x32 frames -> 4x16x16 latents."""
    from diffusers import AutoencoderKL

    torch.manual_seed(SEED)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=2,
        sample_size=32,
    ).eval()


def get_dummy_image_encoder():
    """CLIP vision tower whose projection width (16) equals the dummy cross-attention width, as 768 does for SD 1.5."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(SEED)
    config = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
        projection_dim=16,
    )  # fmt: skip
    return CLIPVisionModelWithProjection(config).eval()


def get_dummy_propagation_models(**propdpm_overrides):
    from magicprop.models import PropagationModels
    from magicprop.schedulers import make_scheduler

    return PropagationModels(
        propdpm=get_dummy_propdpm(**propdpm_overrides),
        vae=get_dummy_vae(),
        image_encoder=get_dummy_image_encoder(),
        scheduler_config=dict(make_scheduler("ddim").config),
        source="dummy",
    ).eval()


def save_dummy_propagation_models(folder: str | Path, **propdpm_overrides) -> Path:
    folder = Path(folder)
    get_dummy_propagation_models(**propdpm_overrides).save_pretrained(folder, card={"config": "dummy"})
    return folder


# --------------------------------------------------------------------------------------------------------------------
# CLIP text + image (evaluation's ClipScorer; the tokenizer also serves SD-style pipelines)
# --------------------------------------------------------------------------------------------------------------------
TINY_TOKENIZER_WORDS = (
    "a", "an", "the", "of", "in", "on", "with", "and", "at", "by", "photo", "painting", "picture", "drawing", "style",
    "red", "blue", "green", "yellow", "white", "black", "orange", "purple", "golden", "dark", "bright",
    "cat", "dog", "elephant", "wolf", "bird", "horse", "car", "man", "woman", "person", "tree", "flower", "house",
    "snow", "rain", "fire", "water", "sky", "sun", "night", "sunset", "forest", "beach", "mountain", "river", "city",
    "street", "road", "winter", "autumn", "oil", "watercolor", "sketch", "cartoon", "anime", "van", "gogh", "monet",
    "running", "walking", "standing", "sitting", "playing", "high", "quality", "detailed", "realistic",
)  # fmt: skip
TINY_TOKENIZER_MERGES = 320  # enough for every word above to become one token, plus pieces shared between words


def _bpe_train(words: tuple[str, ...], max_merges: int) -> list[tuple[str, str]]:
    """Plain BPE over the word list (each word counted once): merge the most frequent adjacent pair, ties by order."""
    segs = [list(w[:-1]) + [w[-1] + "</w>"] for w in words]
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        counts: dict[tuple[str, str], int] = {}
        for seg in segs:
            for pair in zip(seg, seg[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = max(counts, key=lambda p: counts[p])  # dicts keep insertion order, so ties go to the first seen
        merges.append(best)
        for i, seg in enumerate(segs):
            j, out = 0, []
            while j < len(seg):
                if j + 1 < len(seg) and (seg[j], seg[j + 1]) == best:
                    out.append(seg[j] + seg[j + 1])
                    j += 2
                else:
                    out.append(seg[j])
                    j += 1
            segs[i] = out
    return merges


def write_tiny_tokenizer(folder: str | Path):
    """A real CLIP BPE tokenizer (about 400 tokens) from a vocab.json + merges.txt written here; returns it, loaded.

    Vocabulary: every printable ASCII character alone and with "</w>" (so any ASCII prompt tokenizes without unknowns),
    the merges of a small BPE run over TINY_TOKENIZER_WORDS (so "a photo of a red cat" is one token per word), and the
    two special tokens last, as in OpenAI's CLIP (the text tower pools at the highest id, "<|endoftext|>").
    The folder gets vocab.json, merges.txt and the files `save_pretrained` writes, so `CLIPTokenizer.from_pretrained`
    (and diffusers pipelines, from a "tokenizer" subfolder) load it.
    """
    import json

    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(33, 127)]
    merges = _bpe_train(TINY_TOKENIZER_WORDS, TINY_TOKENIZER_MERGES)
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens = list(dict.fromkeys(tokens)) + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    ids = tokenizer("a photo of a red cat")["input_ids"]
    # Guard against a tokenizer that silently lost its vocabulary (it would encode every prompt to 2 ids).
    assert len(ids) == 8, f"tiny tokenizer encodes 'a photo of a red cat' to {ids}, expected 8 ids"
    return tokenizer


def get_tiny_clip_model(vocab_size: int):
    """CLIPModel with 2-layer, 32-wide towers, 32 px images in 8 px patches, 16-dim projections (about 60k parameters)."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(SEED)
    text = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    )  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()


def save_tiny_clip(folder: str | Path) -> Path:
    """Save a tiny CLIPModel, its tokenizer and a 32 px CLIPImageProcessor into one hub-style folder."""
    from transformers import CLIPImageProcessor

    folder = Path(folder)
    tokenizer = write_tiny_tokenizer(folder)
    get_tiny_clip_model(len(tokenizer)).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------------------------------
# Stage I: Stable Diffusion 1.x folder layout + depth ControlNet + Segment Anything (editing, pipeline and CLI tests)
# --------------------------------------------------------------------------------------------------------------------
TINY_SD_UNET = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (8, 8),
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "layers_per_block": 1,
    "attention_head_dim": 2,
    "cross_attention_dim": 32,  # the tiny text encoder's width, as 768 is CLIP ViT-L's for SD 1.5
    "norm_num_groups": 2,
}


def get_tiny_sd_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(SEED)
    return UNet2DConditionModel(**TINY_SD_UNET).eval()


def save_tiny_sd(folder: str | Path) -> Path:
    """An SD 1.x-shaped model in the hub layout (unet/, vae/, text_encoder/, tokenizer/, scheduler/; no safety checker),
    about 400 kB. The VAE downsamples once (factor 2), so 48x80 frames give 24x40 latents."""
    from diffusers import DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    tokenizer = write_tiny_tokenizer(folder / "tokenizer")
    get_tiny_sd_unet().save_pretrained(folder / "unet")
    get_dummy_vae().save_pretrained(folder / "vae")
    torch.manual_seed(SEED)
    n = len(tokenizer)
    text = CLIPTextConfig(
        vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=n - 1,
    )  # fmt: skip
    CLIPTextModel(text).eval().save_pretrained(folder / "text_encoder")
    DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False
    ).save_pretrained(folder / "scheduler")
    return folder


def save_tiny_controlnet(folder: str | Path) -> Path:
    """A ControlNet copied from the tiny SD UNet; its conditioning embedding downsamples once, like the tiny VAE."""
    from diffusers import ControlNetModel

    torch.manual_seed(SEED)
    net = ControlNetModel.from_unet(get_tiny_sd_unet(), conditioning_embedding_out_channels=(8, 8))
    net.save_pretrained(folder)
    return Path(folder)


def save_tiny_sam(folder: str | Path) -> Path:
    """Segment Anything with a 2-layer, 16-wide ViT on 64 px inputs (about 22k parameters) and its processor."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    torch.manual_seed(SEED)
    config = SamConfig(
        vision_config=dict(
            hidden_size=16, output_channels=16, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=8,
            window_size=4, global_attn_indexes=[1], num_pos_feats=8, mlp_dim=32,
        ),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=16),
    )  # fmt: skip
    SamModel(config).eval().save_pretrained(folder)
    processor = SamImageProcessor(
        size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
        mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16},
    )  # fmt: skip
    SamProcessor(image_processor=processor).save_pretrained(folder)
    return Path(folder)


# --------------------------------------------------------------------------------------------------------------------
# Training: an SD-1.5-shaped folder of dummy components, a CLIP folder, synthetic and broken clips
# --------------------------------------------------------------------------------------------------------------------
def save_dummy_sd_folder(folder: str | Path) -> Path:
    """unet/ and vae/ of the dummy sizes, laid out like stable-diffusion-v1-5 (what `magicprop train --pretrained` reads)."""
    folder = Path(folder)
    get_dummy_unet().save_pretrained(folder / "unet")
    get_dummy_vae().save_pretrained(folder / "vae")
    return folder


def save_dummy_image_encoder(folder: str | Path) -> Path:
    get_dummy_image_encoder().save_pretrained(folder)
    return Path(folder)


def write_training_clips(folder: str | Path, n: int = 2, *, frames: int = 12, size: tuple[int, int] = (32, 32), seed: int = 0) -> list[Path]:
    """`n` synthetic clip folders (source.mp4 + depth.npz, as `magicprop synth` writes them) named clip0, clip1, ..."""
    from magicprop.synthetic import render_clip, write_clip

    return [write_clip(render_clip(seed + i, frames=frames, size=size), Path(folder) / f"clip{i}") for i in range(n)]


def training_workspace(root: str | Path, num_clips: int, frames: int) -> Path:
    """A folder for tiny training runs: `clips/` (synthetic 32x32 clips), `sd/` (an SD-shaped folder of dummy
    components) and `clip/` (a dummy CLIP vision tower)."""
    root = Path(root)
    write_training_clips(root / "clips", num_clips, frames=frames, size=(32, 32))
    save_dummy_sd_folder(root / "sd")
    save_dummy_image_encoder(root / "clip")
    return root


def write_bad_videos(folder: str | Path) -> list[Path]:
    """Three clips a dataset must skip: a 0-byte .mp4, a text file named .mp4, and a 2-frame clip (a triplet needs 3)."""
    from magicprop.synthetic import render_clip, write_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("this is not a video\n")
    short = write_clip(render_clip(99, frames=2, size=(32, 32)), folder / "short")
    return [folder / "empty.mp4", folder / "notes.mp4", short]


def save_tiny_magicprop_models(root: str | Path) -> dict[str, Path]:
    """Every model `magicprop edit` loads, tiny, in folders: {"sd", "controlnet", "depth", "model"} (model = PropDPM)."""
    root = Path(root)
    return {
        "sd": save_tiny_sd(root / "sd"),
        "controlnet": save_tiny_controlnet(root / "controlnet"),
        "depth": save_tiny_depth_model(root / "depth"),
        "model": save_dummy_propagation_models(root / "propdpm"),
    }


# --------------------------------------------------------------------------------------------------------------------
# Depth with a signal (motion tests)
# --------------------------------------------------------------------------------------------------------------------
def save_tiny_depth_model_with_signal(folder: str | Path) -> Path:
    """The tiny depth model with its neck and head re-initialised at unit gain, saved like `save_tiny_depth_model`.

    At the default 0.02 init the tiny head outputs disparities around 1e-12, almost all exactly 0 after its final ReLU:
    batch-invariance and normalisation tests would compare zeros. Kaiming-initialised convolutions and a final layer
    with positive weights and bias give a positive disparity that varies over the image (tens, spread about 15).
    """
    folder = save_tiny_depth_model(folder)
    model = get_tiny_depth_model()
    torch.manual_seed(SEED)
    with torch.no_grad():
        for module in [*model.neck.modules(), *model.head.modules()]:
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    module.bias.zero_()
        model.head.conv3.weight.abs_()
        model.head.conv3.bias.fill_(0.1)
    model.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------------------------------
# Clips with a known motion
# --------------------------------------------------------------------------------------------------------------------
def panning_clip(frames: int, size: int | tuple[int, int], step: tuple[int, int], seed: int = 0,
                 value_range: tuple[int, int] = (0, 255)):  # fmt: skip
    """(frames, h, w, 3) uint8 windows (`size` = s or (h, w)) sliding `step` = (down, right) px per frame over one
    smooth-noise texture: an exact integer translation, so the true flow is known everywhere away from the borders."""
    import cv2
    import numpy as np

    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    big = max(h, w) + frames * max(step)
    tex = np.zeros((big, big, 3), np.float32)
    for sigma in (1.5, 3.0, 6.0):
        n = cv2.GaussianBlur(rng.normal(size=(big, big, 3)).astype(np.float32), (0, 0), sigma)
        tex += n / n.std()
    lo, hi = value_range
    tex = (lo + (tex - tex.min()) / (tex.max() - tex.min()) * (hi - lo)).round().astype(np.uint8)
    return np.stack([tex[t * step[0] : t * step[0] + h, t * step[1] : t * step[1] + w] for t in range(frames)])


# --------------------------------------------------------------------------------------------------------------------
# Video files our own writer never makes
# --------------------------------------------------------------------------------------------------------------------
def write_with_pyav(path, frames, fmt: str, codec: str, pix_fmt: str, src_fmt: str, *, pts: list[int] | None = None,
                    time_base=None, rotation: int | None = None):  # fmt: skip
    """Files our writer never makes: other pixel formats, variable frame rate, rotation metadata."""
    from fractions import Fraction

    import av

    time_base = time_base or Fraction(1, 24)
    container = av.open(str(path), "w", format=fmt)
    stream = container.add_stream(codec, rate=24)
    stream.pix_fmt, stream.height, stream.width = pix_fmt, frames.shape[1], frames.shape[2]
    if pts is not None:
        stream.codec_context.time_base = time_base
    if rotation is not None:
        stream.set_display_rotation(rotation)
    for i, f in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(f, format=src_fmt)
        vf.pts, vf.time_base = (i if pts is None else pts[i]), time_base
        container.mux(stream.encode(vf))
    container.mux(stream.encode(None))
    container.close()
    return path


def load_benchmark(name: str):
    """The module of benchmarks/NAME.py (the benchmarks are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
