"""CLIP-based metrics: text alignment (CLIP-T) and frame consistency.

Kept apart from `evaluation` so that the pixel metrics import without torch or transformers. `ClipScorer` loads any
transformers CLIP checkpoint (a hub id or a local folder holding the model, its image processor and its tokenizer).

Scales, because papers differ: `text_alignment` is cosine * 100 per frame, with no clipping at 0 and no 2.5 weight (the
"CLIPScore" of Hessel et al. 2021 is 2.5 * max(cos, 0)); `frame_consistency` is plain cosine in [-1, 1].
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import MagicPropError, UsageError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"


class ClipScorer:
    """A CLIP model with its preprocessing, for scoring frames against each other and against a prompt."""

    def __init__(self, model: Any, image_processor: Any, tokenizer: Any, *, device: str | None = None, batch_size: int = 16):
        from ..devices import resolve_device

        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.batch_size = batch_size  # frames per forward pass; bounds memory on long clips

    @classmethod
    def from_pretrained(cls, model_id_or_path: str = DEFAULT_CLIP_MODEL, *, device: str | None = None) -> "ClipScorer":
        """Load CLIPModel + CLIPImageProcessor + CLIPTokenizer from a hub id or folder; MagicPropError if unavailable."""
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        from pathlib import Path

        if Path(model_id_or_path).is_dir():
            fix = "the folder needs config.json, model weights, preprocessor_config.json and the tokenizer files"
        else:
            fix = f"download it first (hf download {model_id_or_path}) or pass a local CLIP folder"
        try:
            model = CLIPModel.from_pretrained(model_id_or_path, use_safetensors=True)  # never unpickle a downloaded file
            image_processor = CLIPImageProcessor.from_pretrained(model_id_or_path)
            tokenizer = CLIPTokenizer.from_pretrained(model_id_or_path)
        except Exception as exc:  # noqa: BLE001 - hub, disk and config errors all mean "this model cannot be used here"
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise MagicPropError(f"cannot load CLIP model {model_id_or_path!r} ({reason}); {fix}") from exc
        # Offline, a tokenizer can "load" from a folder without its vocab files and come back with only its special
        # tokens; every prompt would then score the same. Refuse it rather than report meaningless CLIP-T.
        if len(tokenizer) <= 3:
            raise MagicPropError(
                f"the tokenizer of CLIP model {model_id_or_path!r} has only {len(tokenizer)} tokens "
                f"(vocab.json/merges.txt missing); {fix}"
            )
        logger.debug("loaded CLIP model %s", model_id_or_path)
        return cls(model, image_processor, tokenizer, device=device)

    def image_embeddings(self, frames: np.ndarray | Sequence[np.ndarray]) -> "torch.Tensor":
        """(T, D) float32 on the CPU, each row L2-normalised; frames are (T, H, W, 3) uint8 RGB."""
        import torch

        frames = list(frames)
        if not frames:
            raise UsageError("no frames to embed; pass a clip with at least one frame")
        chunks = []
        with torch.inference_mode():
            for i in range(0, len(frames), self.batch_size):
                batch = self.image_processor(images=frames[i : i + self.batch_size], return_tensors="pt")
                pixel_values = batch["pixel_values"].to(self.device, dtype=self.model.dtype)
                chunks.append(_features(self.model.get_image_features(pixel_values=pixel_values)).float().cpu())
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    def text_embedding(self, prompt: str) -> "torch.Tensor":
        """(D,) float32 on the CPU, L2-normalised; prompts longer than the text tower's context are truncated."""
        import torch

        max_length = min(self.tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings)
        tokens = self.tokenizer([prompt], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            features = self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
            )
        return torch.nn.functional.normalize(_features(features).float().cpu()[0], dim=-1)

    def text_alignment(self, frames: np.ndarray | Sequence[np.ndarray], prompt: str) -> np.ndarray:
        """CLIP-T per frame, (T,): 100 * cosine(image embedding, prompt embedding); ViT-L/14 gives about 30 for a match."""
        images = self.image_embeddings(frames)
        text = self.text_embedding(prompt)
        return (100.0 * (images @ text)).numpy().astype(np.float64)

    def frame_consistency(self, frames: np.ndarray | Sequence[np.ndarray]) -> dict[str, Any]:
        """{"consecutive": mean cosine of frames t, t+1; "all_pairs": mean over i < j; "per_frame": consecutive list}.

        "consecutive" catches flicker; "all_pairs" (Tune-A-Video's definition) also penalises slow drift. A single frame
        has no pairs: both means are NaN and the list is empty.
        """
        emb = self.image_embeddings(frames)
        sims = (emb @ emb.T).numpy().astype(np.float64)  # (T, T) cosines
        consecutive = np.diagonal(sims, offset=1)
        upper = sims[np.triu_indices(len(sims), k=1)]
        return {
            "consecutive": float(consecutive.mean()) if consecutive.size else float("nan"),
            "all_pairs": float(upper.mean()) if upper.size else float("nan"),
            "per_frame": consecutive.tolist(),
        }


def _features(output: Any) -> "torch.Tensor":
    """transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x returned the tensor."""
    return output if not hasattr(output, "pooler_output") else output.pooler_output
