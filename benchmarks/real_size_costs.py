"""What each component of the method costs at its real size: parameters and FLOPs per call from the `meta` device,
peak memory from fake tensors, seconds per call from a real run (the parts of benchmarks/real_size.py that need no
hub folders).

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on the meta device (shapes only: no memory, no time;
attention is decomposed there into the two matmuls it costs). Memory comes from `torch.distributed._tools.MemTracker`
under `FakeTensorMode`: every tensor a step allocates is accounted by size, none exists, so a training step that needs
18 GB is measured on a machine that has 4 free. Both count what the tensors need, not a GPU's context and allocator
overhead (about 1 GB on a CUDA device).
"""

from __future__ import annotations

import resource
import time

import torch

H100_BF16 = 989.4e12  # FLOP/s: H100 SXM dense bf16 tensor-core peak (NVIDIA's datasheet; 1979 is with sparsity)
UTILISATION = 0.4  # of that peak reached by SD-style UNets in bf16 with fused attention (assumed, typical of diffusion)
STEPS = 25  # PropDPM's default sampling steps; stage I's default (UniPC) is 30
GB = 2**30


def build(device: str = "meta", dtype: torch.dtype = torch.float32, only: list[str] | None = None) -> dict:
    """The real-size components named in `only` (default: all), random weights (on `meta` none are allocated).
    PropDPM is SD 1.5's UNet converted as `PropDPM.from_stable_diffusion` converts a real one."""
    from magicprop.models import PropDPM
    from magicprop.models import real

    makers = {"sd15_unet": real.sd15_unet, "controlnet": real.depth_controlnet, "vae": real.sd15_vae,
              "text_encoder": real.clip_text_encoder, "clip_vision": real.clip_vision_tower,
              "depth_anything": real.depth_anything_small,
              "propdpm": lambda: PropDPM.from_stable_diffusion(real.sd15_unet())}  # fmt: skip
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in `dtype` (fake tensors cannot be cast afterwards)
    try:
        with torch.device(device):
            models = {name: make() for name, make in makers.items() if only is None or name in only}
    finally:
        torch.set_default_dtype(default)
    return {name: m.eval().requires_grad_(False) for name, m in models.items()}


def params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def calls(m: dict, res: int, device: str = "meta") -> dict:
    """name -> () -> (module whose parameters it uses, one call at `res` x `res`, batch 1); the inputs of an entry are
    made only when it is asked for, so a process may hold just the component it times."""
    from magicprop.models.encoders import clip_image_tokens
    from magicprop.models.real import example_conditioning

    h = res // 8
    rand = lambda *s: torch.randn(*s, device=device, dtype=next(iter(m.values())).dtype)  # noqa: E731
    t = torch.tensor(999, device=device)
    image = lambda: rand(1, 3, res, res).clamp(0, 1)  # noqa: E731

    def propdpm(cached: bool):
        x, _, cond, _ = example_conditioning(m["propdpm"], res, batch=1, device=device)
        kv = m["propdpm"].cache_reference(cond.reference_tokens).select(None) if cached else None
        return m["propdpm"], lambda: m["propdpm"](x, t, cond, kv)

    def adaptor():
        inputs = example_conditioning(m["propdpm"], res, batch=1, device=device)[3]
        return m["propdpm"].adapter, lambda: m["propdpm"].encode_reference(**inputs)

    return {
        f"sd15_unet@{res}": lambda: (m["sd15_unet"], lambda x=rand(1, 4, h, h), e=rand(1, 77, 768):
                                     m["sd15_unet"](x, t, encoder_hidden_states=e)),  # fmt: skip
        f"propdpm@{res}": lambda: propdpm(True),
        f"propdpm_uncached@{res}": lambda: propdpm(False),
        f"adaptor@{res}": adaptor,
        f"vae_encode@{res}": lambda: (m["vae"].encoder, lambda x=image(): m["vae"].encode(x * 2 - 1)),
        f"vae_decode@{res}": lambda: (m["vae"].decoder, lambda z=rand(1, 4, h, h): m["vae"].decode(z)),
        f"controlnet@{res}": lambda: (m["controlnet"], lambda x=rand(1, 4, h, h), e=rand(1, 77, 768), c=image():
                                      m["controlnet"](x, t, encoder_hidden_states=e, controlnet_cond=c, return_dict=False)),  # fmt: skip
        "clip_vision": lambda: (m["clip_vision"], lambda x=image(): clip_image_tokens(m["clip_vision"], x)),
        "text_encoder": lambda: (m["text_encoder"], lambda ids=torch.zeros(1, 77, dtype=torch.long, device=device):
                                 m["text_encoder"](ids)),  # fmt: skip
        "depth_anything@518": lambda: (m["depth_anything"], lambda x=rand(1, 3, 518, 518): m["depth_anything"](pixel_values=x)),
    }


def training_step(propdpm, vae, image_encoder, batch: int, res: int = 256, device: str = "meta", checkpointing=False):
    """One step of `magicprop train` on raw clips (the loop's own functions): VAE and CLIP encode the batch, PropDPM's
    forward and backward under bf16 autocast. Returns the function; the optimizer step is the caller's."""
    import numpy as np

    from magicprop.schedulers import make_scheduler
    from magicprop.training.loop import PropDPMTraining, diffusion_loss, encode_batch, step_generator
    from magicprop.training.recipes import RECIPES

    recipe = RECIPES["sd15-256"]
    propdpm.requires_grad_(True).train()
    if checkpointing:
        propdpm.enable_gradient_checkpointing()
    model = PropDPMTraining(propdpm, make_scheduler("ddpm", zero_snr=True))
    images = {k: torch.rand(batch, 3, res, res, device=device) for k in ("target", "previous", "reference")}
    depths = {k: torch.rand(batch, 1, res, res, device=device) for k in ("target_depth", "previous_depth")}
    kind = "cuda" if device == "cuda" else "cpu"

    def forward() -> torch.Tensor:
        generator = step_generator(0, 0, 0, 0)
        with torch.autocast(kind, dtype=torch.bfloat16):
            enc = encode_batch({**images, **depths, "skipped": np.array([])}, vae, image_encoder, device, generator)
            return diffusion_loss(model, model.noise_scheduler, enc, recipe, generator)

    return model, forward  # the caller runs backward() on the loss


def cost_table(m: dict) -> dict:
    """Parameters and GFLOPs per call of every component at 256 and 512, and of a training step at 256 (batch 1)."""
    rows = {}
    for res in (256, 512):
        for name, make in calls(m, res).items():
            if name not in rows:
                module, fn = make()
                rows[name] = {"params": params(module), "gflops": flops(fn) / 1e9}
    for ckpt in (False, True):
        model, forward = training_step(m["propdpm"], m["vae"], m["clip_vision"], batch=1, checkpointing=ckpt)
        rows[f"train_step@256{'_checkpointed' if ckpt else ''}"] = {"params": params(m["propdpm"]),
                                                                    "gflops": flops(lambda: forward().backward()) / 1e9}  # fmt: skip
    return rows


def per_frame(rows: dict, steps: int = STEPS, utilisation: float = UTILISATION) -> dict:
    """Per frame of the method (and per training sample), from the per-call costs, with the H100 projection."""
    g = {k: v["gflops"] for k, v in rows.items()}
    out = {}
    for res in (256, 512):
        # PropDPM: `steps` UNet calls (the reference's keys and values cached) and one VAE decode per frame; hybrid and
        # anchored models also encode the warped keyframe; the keyframe's CLIP, VAE and adaptor are once per clip
        out[f"propdpm_frame@{res}"] = steps * g[f"propdpm@{res}"] + g[f"vae_decode@{res}"]
        out[f"sd15_plain_frame@{res}"] = steps * g[f"sd15_unet@{res}"] + g[f"vae_decode@{res}"]
        out[f"overhead_ratio@{res}"] = g[f"propdpm@{res}"] / g[f"sd15_unet@{res}"]
        out[f"overhead_ratio_uncached@{res}"] = g[f"propdpm_uncached@{res}"] / g[f"sd15_unet@{res}"]
    # stage I on one keyframe at 512: classifier-free guidance doubles every UNet and ControlNet call (30 UniPC steps)
    out["stage1_keyframe@512"] = (2 * g["text_encoder"] + 30 * 2 * (g["sd15_unet@512"] + g["controlnet@512"])
                                  + g["vae_decode@512"] + g["depth_anything@518"])  # fmt: skip
    # training, per sample: the step counted above runs the frozen encoders on raw clips (3 VAE encodes, 1 CLIP) and
    # PropDPM's forward and backward; from a precompute cache only the latter
    encoders = 3 * g["vae_encode@256"] + g["clip_vision"]
    for suffix in ("", "_checkpointed"):
        out[f"train_sample@256{suffix}"] = g[f"train_step@256{suffix}"]
        out[f"train_sample_cached@256{suffix}"] = g[f"train_step@256{suffix}"] - encoders
    rate = H100_BF16 * utilisation / 1e9  # GFLOP/s
    projection = {f"h100_{k.replace('propdpm_frame', 'propdpm_frames_per_s')}": rate / v
                  for k, v in out.items() if k.startswith("propdpm_frame")}  # fmt: skip
    for key in ("train_sample@256", "train_sample_cached@256", "train_sample_cached@256_checkpointed"):
        projection[f"h100_{key.replace('sample', 'samples_per_s')}"] = rate / out[key]
    projection["h100_stage1_keyframes_per_s@512"] = rate / out["stage1_keyframe@512"]
    return {"gflops": out, "projection": projection, "assumed": {"peak_flops": H100_BF16, "utilisation": utilisation, "steps": steps}}


# ---------------------------------------------------------------------------------------------------------------------
# Memory from fake tensors
# ---------------------------------------------------------------------------------------------------------------------
class _Step(torch.nn.Module):
    """One step as one module call: the tracker allows each module one call per step unless a parent module is
    running (the VAE's encoder runs twice in a training step)."""

    def __init__(self, forward):
        super().__init__()
        self.run = forward

    def forward(self):
        return self.run()


def fake_peak(make, *, optimizer: bool = False) -> dict:
    """Peak GiB by kind (parameters, gradients, optimizer state, activations, temporaries) of `make()`'s step on fake
    tensors. `make` returns (the modules held, the trained one first, and the step's forward: a loss to run backward
    on, or None). One step is tracked; from the second on, the optimizer's state (created by the first `step()`) is
    also held during forward and backward, so the steady-state peak is the larger of the first step's peak and its
    forward-backward peak plus that state."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    with FakeTensorMode():
        modules, forward = make()
        opt = torch.optim.AdamW([p for p in modules[0].parameters() if p.requires_grad]) if optimizer else None
        for module in modules:  # the tracker hooks every parameter's gradient; the frozen ones run under no_grad
            module.requires_grad_(True)
        step = _Step(forward)
        tracker = MemTracker()
        tracker.track_external(*modules, *([opt] if opt is not None else []))
        with tracker:
            loss = step()
            if loss is not None:
                loss.backward()
            before_step = _by_kind(tracker.get_tracker_snapshot("peak"))
            if opt is not None:
                opt.step()
                opt.zero_grad(set_to_none=True)
        peak = _by_kind(tracker.get_tracker_snapshot("peak"))
    steady = before_step["total"] + peak["opt"]
    if steady > peak["total"]:  # the second step's forward and backward, with the optimizer's state held
        peak = {**before_step, "opt": peak["opt"], "total": steady}
    return peak


def _by_kind(snapshot: dict) -> dict:
    (device_snapshot,) = snapshot.values()
    return {str(k).split(".")[-1].lower(): v / GB for k, v in device_snapshot.items()}


def training_memory(batch: int, checkpointing: bool) -> dict:
    """GB of a `sd15-256` training step on raw clips (PropDPM and AdamW fp32, bf16 autocast, VAE and CLIP resident);
    EMA adds one fp32 copy of the trained parameters (added here, as diffusers' EMAModel holds it outside the model)."""

    def make():
        m = build("cpu", only=["propdpm", "vae", "clip_vision"])
        model, forward = training_step(m["propdpm"], m["vae"], m["clip_vision"], batch, device="cpu", checkpointing=checkpointing)
        return [model, m["vae"], m["clip_vision"]], forward

    peak = fake_peak(make, optimizer=True)
    peak["ema"] = params(build("meta", only=["propdpm"])["propdpm"]) * 4 / GB
    peak["total_with_ema"] = peak["total"] + peak["ema"]
    return peak


def inference_memory(res: int, dtype: torch.dtype = torch.bfloat16, decode_batch: int | None = None) -> dict:
    """GiB of propagation at `res`: PropDPM, VAE and CLIP in `dtype`, one sampling step of both chains, then a decode
    batch of `decode_batch` frames (default: what `decode_steps` decodes at once)."""
    from magicprop.models.real import example_conditioning
    from magicprop.propagation.propdpm.sampling import decode_batch_size

    decode_batch = decode_batch or decode_batch_size(res, res)

    def make():
        m = build("cpu", dtype, only=["propdpm", "vae", "clip_vision"])
        x, t, cond, _ = example_conditioning(m["propdpm"], res, 2, device="cpu")
        kv = m["propdpm"].cache_reference(cond.reference_tokens)

        @torch.no_grad()
        def forward():
            m["propdpm"](x, t, cond, kv.select(None))
            m["vae"].decode(torch.randn(decode_batch, 4, res // 8, res // 8, dtype=dtype))

        return [m["propdpm"], m["vae"], m["clip_vision"]], forward

    return fake_peak(make)


# ---------------------------------------------------------------------------------------------------------------------
# Seconds per call, for real (random weights, this device)
# ---------------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def timed(fn, device: str) -> dict:
    """Wall and CPU seconds of one call after a warm-up call, and the peak memory in GB (CUDA: allocated; CPU: the
    process's peak resident set, which includes the Python and torch baseline)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = torch.cuda.max_memory_allocated() / GB if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"seconds": wall, "cpu_seconds": cpu, "peak_gb": peak}
