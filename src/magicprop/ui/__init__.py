"""The web UI (`magicprop ui`): upload a clip, edit one keyframe, propagate it, download the result.

`build_app` returns a `gradio.Blocks`; `callbacks` holds what each button does as plain, testable functions. Needs the
`ui` extra (gradio).
"""

from .app import build_app, launch
from .models import ActiveModels, ModelOptions

__all__ = ["build_app", "launch", "ActiveModels", "ModelOptions"]
