"""MagicProp nodes for ComfyUI: carry an edited keyframe through a clip along its motion.

Install: link or copy this folder into ComfyUI/custom_nodes/ and pip-install magicprop into ComfyUI's Python (see the
"ComfyUI" section of magicprop's README). ComfyUI imports this file by its location, so the pack's modules import each
other relatively: absolute names such as `nodes` or `utils` are ComfyUI's own.
"""

import sys

try:
    import magicprop  # noqa: F401
except ImportError as exc:  # ComfyUI logs this line and runs on without the pack
    raise ImportError(
        f"the MagicProp nodes need the magicprop package in ComfyUI's Python ({sys.executable}): install it there with "
        f"`{sys.executable} -m pip install -e /path/to/magicprop` (pin your torch: -c <(echo torch==$VERSION))"
    ) from exc

from .magicprop_nodes import DISPLAY_NAMES, NODES

NODE_CLASS_MAPPINGS = dict(NODES)
NODE_DISPLAY_NAME_MAPPINGS = dict(DISPLAY_NAMES)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
