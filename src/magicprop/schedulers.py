"""Noise schedules for PropDPM (paper, section 3.3.2: zero terminal SNR, Lin et al. 2023).

With `zero_snr=True` the betas are rescaled so that alpha_bar_T = 0: the last training step is pure noise, exactly what
sampling starts from, which removes the train/test gap that shows up as colour shift. That needs v-prediction (epsilon is
undefined at SNR 0) and "trailing" timestep spacing (so sampling really starts at t = T). `zero_snr=False` gives SD's
standard schedule, kept for the ablation.
"""

from __future__ import annotations

from typing import Literal

from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, SchedulerMixin

SchedulerName = Literal["ddim", "dpmsolver++", "ddpm"]

SD_BETAS = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def schedule_kwargs(zero_snr: bool = True) -> dict:
    """Config shared by every scheduler of one model, training and sampling alike."""
    return {
        **SD_BETAS,
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": zero_snr,
        "timestep_spacing": "trailing" if zero_snr else "leading",
    }


def make_scheduler(name: SchedulerName = "ddim", *, zero_snr: bool = True, **overrides) -> SchedulerMixin:
    """A diffusers scheduler configured for PropDPM."""
    kwargs = {**schedule_kwargs(zero_snr), **overrides}
    if name == "ddim":
        # clip_sample would clamp latents to [-1, 1], which SD latents exceed; set_alpha_to_one keeps the last step clean.
        return DDIMScheduler(**kwargs, clip_sample=False, set_alpha_to_one=True)
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler(**kwargs, algorithm_type="dpmsolver++", final_sigmas_type="zero")
    if name == "ddpm":
        return DDPMScheduler(**kwargs, clip_sample=False)
    from .errors import UsageError

    raise UsageError(f"unknown scheduler {name!r}; choose ddim, dpmsolver++ or ddpm")


def scheduler_from_config(config: dict, name: SchedulerName = "ddim") -> SchedulerMixin:
    """Sampling scheduler of kind `name` with the betas/prediction settings saved with a model."""
    keep = {k: config[k] for k in (*SD_BETAS, "prediction_type", "rescale_betas_zero_snr", "timestep_spacing") if k in config}
    zero_snr = bool(keep.pop("rescale_betas_zero_snr", True))
    return make_scheduler(name, zero_snr=zero_snr, **keep)
