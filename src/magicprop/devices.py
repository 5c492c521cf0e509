"""Which device and dtype a model runs on (one rule for the pipeline, the depth estimator and the CLIP scorer), and
moving models there: `move` for a `PropagationModels` bundle, `on_device` for CPU offload."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
    import torch

_DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16", "bf16": "bfloat16",
           "bfloat16": "bfloat16"}  # fmt: skip


def _mps_available() -> bool:
    import torch

    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(device: "str | torch.device | None" = None) -> "torch.device":
    """The device asked for (refused in one line when it is not there), else the best available: CUDA, MPS, CPU."""
    import torch

    if device is not None:
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"device {device} was asked for but is not available (torch sees no CUDA GPU); use --device cpu (or install a CUDA build of torch)")
        if device.type == "mps" and not _mps_available():
            raise UsageError(f"device {device} was asked for but is not available (no Metal GPU here); use --device cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps") if _mps_available() else torch.device("cpu")


def resolve_dtype(dtype: "str | torch.dtype | None", device: "torch.device") -> "torch.dtype":
    """float16 on CUDA (half the memory, twice the speed, as SD is usually run), float32 elsewhere, unless asked."""
    import logging

    import torch

    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() not in _DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; choose fp32, fp16 or bf16")
    resolved = getattr(torch, _DTYPES[str(dtype).lower()])
    if device.type == "cpu" and resolved == torch.float16:
        logging.getLogger(__name__).warning("float16 on the CPU is slow and some operations lack kernels; prefer fp32 or bf16 there")
    return resolved


class on_device:
    """With CPU offload, a model visits the GPU only for the block that uses it; otherwise (or for None) a no-op."""

    def __init__(self, module, device: "torch.device", offload: bool):
        self.module, self.device, self.active = module, device, module is not None and offload and device.type != "cpu"

    def _to(self, device) -> None:
        # a PropagationModels bundle is three modules; anything else is one torch module
        move(self.module, device) if hasattr(self.module, "propdpm") else self.module.to(device)

    def __enter__(self):
        if self.active:
            self._to(self.device)

    def __exit__(self, *exc):
        if self.active:
            self._to("cpu")
            if self.device.type == "cuda":
                import torch

                torch.cuda.empty_cache()


def move(models, device, dtype: "torch.dtype | None" = None) -> None:
    """PropagationModels.to without the dtype keyword when there is no cast (diffusers warns whenever it is present)."""
    kwargs = {"device": device} if dtype is None else {"device": device, "dtype": dtype}
    for module in (models.propdpm, models.vae, models.image_encoder):
        module.to(**kwargs)


def cast_if_needed(current: "torch.dtype", wanted: "torch.dtype") -> "torch.dtype | None":
    """`wanted` if a cast is needed, else None (diffusers warns on every dtype cast, needed or not)."""
    return None if current == wanted else wanted
