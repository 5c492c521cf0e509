"""A weight-free run never imports torch (`magicprop.torch_state`): grad mode and seeds touch torch only where a run
uses it, work-folder pieces are numpy, and the pipeline resolves its device when a model first asks."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from magicprop.errors import UsageError
from magicprop.integrity import Damaged, read_piece, write_piece
from magicprop.pipeline import MagicPropPipeline
from magicprop.torch_state import draw_seed, no_grad, without_grad

# The Python API's weight-free path, in a fresh process: which heavy packages it loaded, and when torch came
_API_CHILD = """
import json, sys
import numpy as np
from magicprop.pipeline import MagicPropPipeline
from magicprop.synthetic import render_clip

clip = render_clip(2, frames=4, size=(48, 64), edit="global")
pipe = MagicPropPipeline.from_pretrained(propagator="flow")
out = pipe(clip.source, keyframe_image=clip.edited[1], keyframe_index=1)
alone = pipe.propagate(clip.source, {1: clip.edited[1]}, propagator="chain")
loaded = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
device = str(pipe.device)  # asking for it is what loads torch
print(json.dumps({"loaded": loaded, "shape": list(out.frames.shape), "alone": list(alone.shape),
                  "key_kept": bool(np.array_equal(out.frames[1], clip.edited[1])), "device": device,
                  "torch_after_device": "torch" in sys.modules}))
"""


def test_the_python_api_runs_a_weight_free_propagator_without_torch():
    out = subprocess.run([sys.executable, "-c", _API_CHILD], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"loaded": [], "shape": [4, 48, 64, 3], "alone": [4, 48, 64, 3], "key_kept": True, "device": "cpu",
                      "torch_after_device": True}  # fmt: skip


def test_the_pipeline_keeps_its_signatures_and_device_rules():
    params = inspect.signature(MagicPropPipeline.__call__).parameters  # through `without_grad`'s functools.wraps
    assert params["generator"].annotation == "torch.Generator | None" and params["generator"].default is None
    assert list(inspect.signature(MagicPropPipeline.propagate).parameters)[:3] == ["self", "video", "keyframes"]
    pipe = MagicPropPipeline(propagator="flow")
    assert (pipe.device, pipe.dtype) == (torch.device("cpu"), torch.float32)
    assert MagicPropPipeline(propagator="flow", dtype=torch.bfloat16).dtype == torch.bfloat16
    if not torch.cuda.is_available():  # a device named but absent is still refused at once, weight-free or not
        with pytest.raises(UsageError, match="not available"):
            MagicPropPipeline.from_pretrained(propagator="flow", device="cuda")
    with pytest.raises(UsageError, match="unknown dtype"):
        MagicPropPipeline.from_pretrained(propagator="flow", torch_dtype="fp8")


def test_without_grad_sets_grad_mode_for_the_call_only():
    @without_grad
    def inside() -> bool:
        return torch.is_grad_enabled()

    assert torch.is_grad_enabled() and inside() is False and torch.is_grad_enabled()
    with no_grad():
        assert not torch.is_grad_enabled()
    assert inside.__name__ == "inside"


def test_a_seed_comes_from_torch_when_torch_is_loaded():
    with torch.random.fork_rng():
        torch.manual_seed(7)
        first = draw_seed(with_torch=True)
        torch.manual_seed(7)
        assert draw_seed(with_torch=False) == first  # torch is loaded here: the caller may have seeded it
    assert 0 <= first < 2**31 - 1


def test_a_seed_drawn_without_torch_leaves_it_unloaded():
    code = ("import sys; from magicprop.torch_state import draw_seed; s = [draw_seed(False) for _ in range(4)]; "
            "print(len(set(s)), min(s) >= 0, max(s) < 2**31, 'torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["4", "True", "True", "False"], out.stderr[-2000:]


def test_pieces_read_back_as_writable_views_of_one_buffer(tmp_path):
    arrays = {"map": np.random.default_rng(0).random((5, 6, 2), dtype=np.float32), "index": np.array([3], np.int64),
              "frame": np.arange(90, dtype=np.uint8).reshape(5, 6, 3), "unreliable": np.eye(3, dtype=bool)}  # fmt: skip
    write_piece(tmp_path / "state.safetensors", arrays)
    back = read_piece(tmp_path / "state.safetensors")
    assert back.keys() == arrays.keys()
    for name, a in arrays.items():
        assert back[name].dtype == a.dtype and np.array_equal(back[name], a)
    buffers = {id(_buffer(a)) for a in back.values()}
    assert len(buffers) == 1 and isinstance(_buffer(back["map"]), bytearray)  # no copy per array
    assert all(a.flags.writeable for a in back.values())
    back["map"][0, 0, 0] = 2.0  # a resumed chain continues its state in place


def _buffer(a: np.ndarray):
    """The object that holds an array's bytes (np.frombuffer keeps a memoryview of it)."""
    base = a.base
    return _buffer(base) if isinstance(base, np.ndarray) else base.obj if isinstance(base, memoryview) else base


def test_a_piece_whose_header_does_not_fit_its_data_is_damaged(tmp_path):
    path = tmp_path / "frame.safetensors"
    write_piece(path, {"frame": np.zeros((4, 4, 3), np.uint8)})
    raw = path.read_bytes()
    for old, new in ((b'"U8"', b'"X9"'), (b'[4,4,3]', b'[4,4,4]')):  # an unknown dtype; a shape its bytes cannot hold
        path.write_bytes(raw.replace(old, new))
        with pytest.raises(Damaged, match="unreadable") as exc:
            read_piece(path)
        assert "\n" not in str(exc.value) and len(str(exc.value)) < 100
