"""The public models at their real size, with random weights: what a user with a GPU loads, built without a download.

Every default id (`hub.DEFAULT_IDS`) has a builder here, from the configurations in `configs.py`: SD 1.5's UNet, VAE and
text encoder, CLIP ViT-L/14 (its vision tower makes the reference tokens), the depth ControlNet and Depth Anything V2
Small. Random weights cost exactly what trained ones cost in time and memory, so `benchmarks/real_size.py` measures a
real run with them, and the CI test builds them on the `meta` device (shapes only: no memory, no time).

Build under `torch.device("meta")` for shapes and FLOPs; `save_hub_folders` writes the folders the real commands read
(`--base-model`, `--controlnet`, `--depth-model`, `--image-encoder`), one component at a time, so peak memory stays at
the largest one (the UNet: 3.4 GB in fp32).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .configs import (
    CLIP_VIT_L14_TEXT_CONFIG,
    CLIP_VIT_L14_VISION_CONFIG,
    CLIP_VOCAB_SIZE,
    DEPTH_ANYTHING_INPUT,
    DEPTH_ANYTHING_V2_SMALL_CONFIG,
    SD15_CONTROLNET_EMBEDDING,
    SD15_UNET_CONFIG,
    SD15_VAE_CONFIG,
)

logger = logging.getLogger(__name__)


def sd15_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**SD15_UNET_CONFIG)


def sd15_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**SD15_VAE_CONFIG)


def clip_text_encoder():
    """SD 1.5's text encoder: CLIP ViT-L/14's text tower (123M parameters)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L14_TEXT_CONFIG))


def clip_vision_tower():
    """CLIP ViT-L/14's vision tower with its projection (304M parameters): the reference's 1 + 16 * 16 tokens, 768 wide."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_VIT_L14_VISION_CONFIG))


def clip_model():
    """Both towers, as openai/clip-vit-large-patch14 ships them (the vision tower loads from it alone)."""
    from transformers import CLIPConfig, CLIPModel

    # each tower's config names the projection width too, as the hub's config.json does: CLIPVisionModelWithProjection
    # loads from the vision part alone and would build a 512-wide projection (the default) without it
    return CLIPModel(CLIPConfig(text_config=CLIP_VIT_L14_TEXT_CONFIG, vision_config=CLIP_VIT_L14_VISION_CONFIG, projection_dim=768))


def depth_controlnet(unet=None):
    """The depth ControlNet: SD 1.5's encoder half (copied from `unet` when given, else random) and the depth image's
    embedding."""
    from diffusers import ControlNetModel

    if unet is not None:
        return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=SD15_CONTROLNET_EMBEDDING)
    with torch.device("meta"):  # only its config: no 3.4 GB UNet to copy from
        config = ControlNetModel.from_unet(sd15_unet(), conditioning_embedding_out_channels=SD15_CONTROLNET_EMBEDDING).config
    return ControlNetModel.from_config(config)


def depth_anything_small():
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

    return DepthAnythingForDepthEstimation(DepthAnythingConfig(**DEPTH_ANYTHING_V2_SMALL_CONFIG))


def write_clip_tokenizer(folder: str | Path):
    """A CLIP BPE tokenizer of the real vocabulary size (49408 ids, <|endoftext|> the last, as SD's text encoder pools
    at the highest id), from a vocab.json and merges.txt written here; returns it, loaded from the folder.

    The 256 byte symbols alone and word-final come first, as in OpenAI's vocabulary; the 48894 merges are every pair
    and triple of lower-case letters, then quadruples, in order (each merge's parts exist before it, as BPE requires).
    """
    from itertools import product

    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    letters = "abcdefghijklmnopqrstuvwxyz"
    pairs = ["".join(p) for p in product(letters, repeat=2)]
    merges = [(a, b) for a, b in product(letters, letters)] + [(a, b + "</w>") for a, b in product(letters, letters)]
    merges += [(ab, c) for ab, c in product(pairs, letters)] + [(ab, c + "</w>") for ab, c in product(pairs, letters)]
    merges += [(ab, cd + "</w>") for ab, cd in product(pairs, pairs)]
    merges = merges[: CLIP_VOCAB_SIZE - len(tokens) - 2]
    tokens += ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == len(set(tokens)) == CLIP_VOCAB_SIZE
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(folder)
    return CLIPTokenizer.from_pretrained(folder)


def save_hub_folders(root: str | Path, *, seed: int = 0) -> dict[str, Path]:
    """Write every public model in its hub layout under `root` (about 8 GB of fp32 safetensors), one at a time:

        sd15/ (unet/, vae/, text_encoder/, tokenizer/, scheduler/)   what --base-model and --pretrained read
        controlnet/                                                  --controlnet
        clip/ (CLIPModel, both towers)                               --image-encoder (the vision tower loads from it)
        depth/ (+ its DPT image processor)                           --depth-model
    A folder that is already complete is kept. Returns {"sd15", "controlnet", "clip", "depth"} -> folder."""
    from diffusers import DDIMScheduler
    from transformers import DPTImageProcessor

    root = Path(root)
    folders = {name: root / name for name in ("sd15", "controlnet", "clip", "depth")}

    def build(folder: Path, make) -> None:
        if (folder / "config.json").is_file() or (folder / "model_index.json").is_file():
            return
        torch.manual_seed(seed)
        logger.info("building %s", folder)
        make(folder)

    def sd15(folder: Path) -> None:
        write_clip_tokenizer(folder / "tokenizer")
        for name, make in (("unet", sd15_unet), ("vae", sd15_vae), ("text_encoder", clip_text_encoder)):
            module = make()
            module.save_pretrained(folder / name)
            del module
        DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1).save_pretrained(folder / "scheduler")  # fmt: skip
        (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))  # written last

    def controlnet(folder: Path) -> None:
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(folders["sd15"] / "unet")  # copied from SD, as the real one was
        depth_controlnet(unet).save_pretrained(folder)

    def depth(folder: Path) -> None:
        depth_anything_small().save_pretrained(folder)
        side = DEPTH_ANYTHING_INPUT
        DPTImageProcessor(do_resize=True, size={"height": side, "width": side}, keep_aspect_ratio=True, ensure_multiple_of=14,
                          do_rescale=True, do_normalize=True, image_mean=[0.485, 0.456, 0.406],
                          image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)  # fmt: skip

    build(folders["sd15"], sd15)
    build(folders["controlnet"], controlnet)
    build(folders["clip"], lambda f: clip_model().save_pretrained(f))
    build(folders["depth"], depth)
    return folders


def example_conditioning(propdpm, resolution: int, batch: int = 2, *, image_encoder=None, anchored: bool | None = None,
                         device: str | torch.device = "meta"):  # fmt: skip
    """The inputs of one PropDPM call at `resolution` (square frames), built the way sampling builds them: CLIP tokens
    of the keyframe (from `image_encoder` when given, else random of ViT-L/14's shape), the adaptor's reference tokens,
    and `assemble_conditioning` for `batch` frames (the two chains). Returns (noisy latent, timestep, PropConditioning)
    and the adaptor's input, {"clip_tokens", "reference_latent"}."""
    from .encoders import clip_image_tokens
    from .propdpm import assemble_conditioning

    h = resolution // 8  # SD's VAE factor
    dtype = propdpm.dtype
    rand = lambda *shape: torch.randn(*shape, device=device, dtype=dtype)  # noqa: E731
    key_latent = rand(1, 4, h, h)
    if image_encoder is not None:
        clip_tokens = clip_image_tokens(image_encoder, torch.rand(1, 3, resolution, resolution, device=device))
    else:
        grid = CLIP_VIT_L14_VISION_CONFIG["image_size"] // CLIP_VIT_L14_VISION_CONFIG["patch_size"]
        clip_tokens = rand(1, 1 + grid * grid, CLIP_VIT_L14_VISION_CONFIG["projection_dim"])
    reference = propdpm.encode_reference(clip_tokens.to(dtype), key_latent)  # (1, 1 + h/2 * h/2, 768)
    anchored = propdpm.config.get("use_anchored_reference", False) if anchored is None else anchored
    depth = torch.rand(batch, 1, resolution, resolution, device=device, dtype=dtype)
    extra = {"anchored_latent": rand(batch, 4, h, h), "anchored_valid": depth} if anchored else {}
    cond = assemble_conditioning(depth, rand(batch, 4, h, h), depth, reference, **extra)
    timestep = torch.tensor(999, device=device)
    return rand(batch, 4, h, h), timestep, cond, {"clip_tokens": clip_tokens, "reference_latent": key_latent}
