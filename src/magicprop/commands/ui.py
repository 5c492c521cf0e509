"""Open the MagicProp web UI: upload a clip (or pick a bundled example), choose a keyframe, edit it with a prompt and an
optional painted mask (or upload one you edited elsewhere), propagate it with a progress bar, and download the result.

The server listens on 127.0.0.1 (this machine only) unless --host says otherwise. With no downloaded weights it still
works end to end: the embedded tiny propagation model and the `flow` and `copy` propagators need nothing from the hub,
and the page says which models are active and, when stage I is unavailable, why.

Example:
  magicprop ui                                  # then open http://127.0.0.1:7860
  magicprop ui --port 8080 --model runs/tiny/model --no-editor
  magicprop ui --host 0.0.0.0                   # reachable from other machines: anyone who can reach it can use it
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys

NAME = "ui"
HELP = "web UI: upload a clip, edit a keyframe, propagate it with progress and cancel, download the result"

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on (default: %(default)s)")
    p.add_argument("--model", default=None, help="propagation model folder (default: the embedded tiny model)")
    p.add_argument("--base-model", default=None, help="stage I Stable Diffusion 1.5 weights: hub id or folder")
    p.add_argument("--controlnet", default=None, help="stage I depth ControlNet: hub id or folder")
    p.add_argument("--depth-model", default=None, help="depth estimator: hub id or folder")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: CUDA when available)")
    p.add_argument("--no-editor", action="store_true", help="never load stage I (Stable Diffusion); keyframes are then uploaded")
    p.add_argument("--examples", type=int, default=2, help="synthetic example clips rendered at start-up (default: 2)")


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError

    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError("the web UI needs gradio: pip install 'magicprop[ui]'") from None
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1..65535, got {args.port}")
    _check_port_free(args.host, args.port)

    from ..ui import ModelOptions, build_app, launch

    options = ModelOptions(
        model=args.model, base_model=args.base_model, controlnet=args.controlnet, depth_model=args.depth_model,
        device=args.device, load_editor=not args.no_editor,
    )  # fmt: skip
    # gradio logs every request it makes to itself at INFO; the person only needs the address and errors.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = build_app(options, num_examples=args.examples)
    # Stopped by a service manager (SIGTERM) rather than Ctrl+C: unwind the same way, so the temp folder is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("listening on %s: anyone who can reach this address can use the UI and this machine's compute", args.host)
    print(f"magicprop ui: open http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port} (Ctrl+C stops)")
    try:
        launch(app, host=args.host, port=args.port)
    finally:
        app.close()
    return 0


def _check_port_free(host: str, port: int) -> None:
    """Fail with one line before loading any model, rather than after, when the port is taken."""
    from ..errors import UsageError

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}; pass another --port (or --host)") from None
