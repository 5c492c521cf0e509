"""Stage II models: the appearance adaptor, PropDPM, and the on-disk bundle with its frozen VAE and CLIP tower."""

from .adapter import AppearanceAdapter
from .bundle import PropagationModels
from .configs import PROPDPM_CONFIGS
from .propdpm import PropConditioning, PropDPM, assemble_conditioning

__all__ = ["AppearanceAdapter", "PropDPM", "PropConditioning", "assemble_conditioning", "PropagationModels", "PROPDPM_CONFIGS"]
