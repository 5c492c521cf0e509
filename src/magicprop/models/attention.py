"""Cross-attention to the reference with its keys and values computed once per clip.

PropDPM's cross-attention reads the adaptor's tokens of the edited keyframe, which are the same for every frame and
every denoising step of a clip. diffusers projects them to keys and values again at every call: at 512x512 that is
1025 tokens through the to_k and to_v of 16 attention layers, 39 GFLOPs of an 884-GFLOP call (and twice that with the
two chains batched). `cache_reference` projects them once; `ReferenceAttnProcessor` then reads the cached keys and
values, and computes everything else as diffusers' `AttnProcessor2_0` does (which it falls back to for self-attention,
for calls without a cache, and in training, where the tokens change with every sample and gradients flow through
to_k and to_v).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


@dataclass
class ReferenceKV:
    """Keys and values of R rows of reference tokens, (R, heads, N, head_dim) per cross-attention layer; `rows` (B,)
    says which row each sample of a batch reads (None: every sample reads the only row)."""

    kv: dict[Attention, tuple[torch.Tensor, torch.Tensor]]
    rows: torch.Tensor | None = None

    def select(self, rows: list[int] | None) -> "ReferenceKV":
        index = None if rows is None else torch.tensor(rows, device=next(iter(self.kv.values()))[0].device)
        return ReferenceKV(self.kv, index)


def cacheable(attn: Attention) -> bool:
    """A cross-attention whose keys and values depend on the tokens alone (SD 1.x's: no norms, no residual inside)."""
    return (attn.is_cross_attention and attn.spatial_norm is None and attn.group_norm is None and attn.norm_cross is None
            and attn.norm_q is None and not attn.residual_connection)  # fmt: skip


@torch.no_grad()
def cache_reference(unet, tokens: torch.Tensor) -> ReferenceKV:
    """Project `tokens` (R, N, C) to every cacheable cross-attention layer's keys and values, once."""
    kv = {}
    for module in unet.modules():
        if isinstance(module, Attention) and cacheable(module):
            key, value = module.to_k(tokens), module.to_v(tokens)  # (R, N, inner)
            r, n, inner = key.shape
            key = key.view(r, n, module.heads, inner // module.heads).transpose(1, 2)  # (R, heads, N, head_dim)
            value = value.view(r, n, module.heads, inner // module.heads).transpose(1, 2)
            kv[module] = (module.norm_k(key) if module.norm_k is not None else key, value)
    return ReferenceKV(kv)


class ReferenceAttnProcessor(AttnProcessor2_0):
    """`AttnProcessor2_0`, reading a layer's keys and values from `reference_kv` (a cross_attention_kwargs entry) when
    it holds them."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 reference_kv: ReferenceKV | None = None, **kwargs) -> torch.Tensor:  # fmt: skip
        cached = None if reference_kv is None else reference_kv.kv.get(attn)
        if cached is None or attention_mask is not None or hidden_states.ndim != 3:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        b = hidden_states.shape[0]
        key, value = cached  # (R, heads, N, head_dim)
        if reference_kv.rows is None:
            key, value = key.expand(b, -1, -1, -1), value.expand(b, -1, -1, -1)
        else:
            key, value = key.index_select(0, reference_kv.rows), value.index_select(0, reference_kv.rows)
        query = attn.to_q(hidden_states)  # (B, L, inner)
        head_dim = query.shape[-1] // attn.heads
        query = query.view(b, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, L, head_dim)
        out = F.scaled_dot_product_attention(query, key.to(query.dtype), value.to(query.dtype), dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(b, -1, attn.heads * head_dim).to(query.dtype)  # (B, L, inner)
        out = attn.to_out[1](attn.to_out[0](out))  # linear, dropout
        return out / attn.rescale_output_factor
