"""magicprop: motion-preserving video editing (MagicProp, arXiv 2309.00908).

Stage I edits one keyframe (`magicprop.editing`); stage II propagates its appearance to every other frame along the
source's motion with PropDPM (`magicprop.models`, `magicprop.propagation`). `magicprop.pipeline.MagicPropPipeline` runs both.
"""

__version__ = "0.1.0"
