"""Keyframes the way users work: find the frame an edited image belongs to.

    from magicprop.keyframes import find_keyframe
    match = find_keyframe(frames, edited_image)          # KeyframeMatch(index, confidence, runner_up, ...)

- `detection`: `find_keyframe` matches structure (the orientation of edges), not colour.
"""

from .detection import CONFIDENT, KeyframeMatch, find_keyframe

__all__ = ["CONFIDENT", "KeyframeMatch", "find_keyframe"]
