"""The ComfyUI node pack (`comfyui/`) without ComfyUI: imported by its file location as ComfyUI imports it; its nodes'
interfaces; MagicProp Propagate on tensors against `magicprop propagate` on the same frames (PNG folders, so both sides
are exact); bad inputs; progress and cancel through stand-ins for ComfyUI's hooks; the model loader; the example
workflows. The last test runs the real ComfyUI server when one is set up (MAGICPROP_COMFYUI=DIR, see comfyui_real.py)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import shutil
import sys
import traceback
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fixtures import save_dummy_propagation_models

from magicprop.cli import main
from magicprop.errors import UsageError
from magicprop.models.bundle import EMBEDDED_TINY
from magicprop.motion import save_depth
from magicprop.propagation import choices
from magicprop.synthetic import render_clip
from magicprop.video import read_video, save_image

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "comfyui"
FRAMES, SIZE = 6, (48, 80)  # (h, w): not square, so a transposed size cannot pass


def import_pack(folder: Path = PACK) -> types.ModuleType:
    """Import a pack folder the way ComfyUI does: by the location of its __init__.py, the module named by the folder's
    path (dots replaced), so only relative imports can reach its other modules."""
    name = str(folder).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pack():
    return import_pack()


def image(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames as ComfyUI's loaders give them: float32 x / 255."""
    return torch.from_numpy(np.ascontiguousarray(frames)) / 255.0


def to_uint8(batch: torch.Tensor) -> np.ndarray:
    return (batch * 255).round().clamp(0, 255).to(torch.uint8).numpy()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A synthetic clip with a local edit, as files for the CLI (PNG folders, a depth .npz, a model folder)."""
    root = tmp_path_factory.mktemp("comfy-clip")
    c = render_clip(3, frames=FRAMES, size=SIZE, edit="local")
    for t in range(FRAMES):
        save_image(root / "source" / f"{t:05d}.png", c.source[t])
        save_image(root / "masks" / f"{t:05d}.png", c.masks[t])
    for t in (1, 4):
        save_image(root / "keys" / f"{t}.png", c.edited[t])
    save_image(root / "key1_x2.png", np.repeat(np.repeat(c.edited[1], 2, axis=0), 2, axis=1))  # same shape, twice the size
    depth = (np.round(c.depth * 255) / 255).astype(np.float32)  # what an 8-bit depth IMAGE can carry
    save_depth(root / "depth.npz", depth)
    model = save_dummy_propagation_models(root / "model")
    return SimpleNamespace(root=root, source=c.source, edited=c.edited, masks=c.masks, depth=depth, model=model)


# ---------------------------------------------------------------------------------------------------------------------
# Import and interfaces
# ---------------------------------------------------------------------------------------------------------------------
def test_pack_imports_by_location_beside_comfyui_module_names(tmp_path, monkeypatch):
    # ComfyUI's folders come first on sys.path and hold `nodes`, `utils`, ...: modules of the same names as the pack's
    # that fail on import prove the pack reaches its own modules relatively, from a copy under another folder name
    shadow = tmp_path / "comfy_root"
    shadow.mkdir()
    for name in ("nodes", "utils", "host", "tensors", "magicprop_nodes", "folder_paths"):
        (shadow / f"{name}.py").write_text(f"raise ImportError('the pack imported a top-level {name}')\n")
    monkeypatch.syspath_prepend(str(shadow))
    copy = tmp_path / "custom_nodes" / "ComfyUI-MagicProp.v1"
    shutil.copytree(PACK, copy, ignore=shutil.ignore_patterns("__pycache__"))
    module = import_pack(copy)
    assert module.__name__ == str(copy).replace(".", "_x_")
    assert set(module.NODE_CLASS_MAPPINGS) == {"MagicPropPropagate", "MagicPropLoadPropagationModel", "MagicPropSuggestKeyframes"}
    assert "comfy" not in sys.modules  # it runs without ComfyUI


def test_every_node_is_well_formed(pack):
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert name.startswith("MagicProp") and pack.NODE_DISPLAY_NAME_MAPPINGS[name].startswith("MagicProp ")
        spec = cls.INPUT_TYPES()
        json.dumps(spec)  # ComfyUI sends it to the page as JSON (/object_info)
        assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
        inputs = {**spec["required"], **spec.get("optional", {})}
        for input_name, (kind, options) in inputs.items():
            assert options.get("tooltip"), input_name
            if isinstance(kind, list):  # a combo: its default is one of its choices
                assert options["default"] in kind
            else:
                assert isinstance(kind, str) and kind == kind.upper()
            if kind in ("INT", "FLOAT"):
                assert options["min"] <= options["default"] <= options["max"], input_name
        assert isinstance(cls.RETURN_TYPES, tuple) and all(isinstance(t, str) and t == t.upper() for t in cls.RETURN_TYPES)
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
        assert isinstance(cls.CATEGORY, str) and cls.CATEGORY == "MagicProp" and cls.DESCRIPTION
        # ComfyUI calls FUNCTION with the inputs as keyword arguments: the required ones always, optional ones if linked
        params = inspect.signature(getattr(cls(), cls.FUNCTION)).parameters
        assert set(params) == set(inputs)
        assert {n for n, p in params.items() if p.default is p.empty} == set(spec["required"])
    loader, propagate = pack.NODE_CLASS_MAPPINGS["MagicPropLoadPropagationModel"], pack.NODE_CLASS_MAPPINGS["MagicPropPropagate"]
    spec = propagate.INPUT_TYPES()
    assert loader.RETURN_TYPES[0] == spec["optional"]["propagation_model"][0]
    assert spec["required"]["propagator"][0] == choices() and spec["required"]["propagator"][1]["default"] == "flow"
    assert propagate.RETURN_TYPES == ("IMAGE",)
    assert [spec["required"][n][0] for n in ("images", "keyframes", "keyframe_indices", "seed")] == ["IMAGE", "IMAGE", "STRING", "INT"]
    assert spec["optional"]["masks"][0] == "MASK"


# ---------------------------------------------------------------------------------------------------------------------
# The node against the CLI
# ---------------------------------------------------------------------------------------------------------------------
# (CLI arguments after VIDEO, node arguments): the same inputs as files and as tensors
CASES = {
    "one keyframe": (["--keyframe-image", "keys/1.png", "--keyframe-index", "1"], dict(keys=[1], indices="1")),
    # ComfyUI sends every widget's value: 0 and -1 mean "as the CLI without the flag"
    "widgets at their defaults": (["--keyframe-image", "keys/1.png", "--keyframe-index", "1"],
                                  dict(keys=[1], indices="1", max_pixels=0, feather=-1, propagation_steps=25, propagation_guidance_scale=1.0,
                                       temporal_blend=0.65)),  # fmt: skip
    "steadier": (["--keyframe-image", "keys/1.png", "--keyframe-index", "1", "--temporal-blend", "0.9"],
                 dict(keys=[1], indices="1", temporal_blend=0.9)),  # fmt: skip
    "max pixels": (["--keyframe-image", "keys/1.png", "--keyframe-index", "1", "--max-pixels", "1024"],
                   dict(keys=[1], indices="1", max_pixels=1024)),  # fmt: skip
    "several keyframes": (["--keyframes", "keys"], dict(keys=[1, 4], indices="1, -2")),
    "per-frame masks": (["--keyframe-image", "keys/1.png", "--keyframe-index", "1", "--masks", "masks", "--feather", "2"],
                        dict(keys=[1], indices="1", masks=True, feather=2)),  # fmt: skip
    "auto index (with masks)": (["--keyframe-image", "keys/1.png", "--masks", "masks"], dict(keys=[1], indices="auto", masks=True)),
    "upscaled keyframe": (["--keyframe-image", "key1_x2.png", "--keyframe-index", "1"], dict(keys="x2", indices="1")),
    "propdpm with a model and depth": (
        ["--keyframe-image", "keys/1.png", "--keyframe-index", "1", "--propagator", "propdpm", "--model", "model",
         "--depth", "depth.npz", "--propagation-steps", "2", "--seed", "5"],
        dict(keys=[1], indices="1", propagator="propdpm", model=True, depth=True, propagation_steps=2, seed=5),
    ),  # fmt: skip
}


def run_node(pack, clip, *, keys, indices, propagator="flow", seed=0, masks=False, model=False, depth=False, **options):
    keyframes = image(_x2(clip)[None] if keys == "x2" else np.stack([clip.edited[k] for k in keys]))
    extra = dict(options)
    if masks:
        extra["masks"] = torch.from_numpy(clip.masks.astype(np.float32))
    if model:
        (extra["propagation_model"],) = pack.NODE_CLASS_MAPPINGS["MagicPropLoadPropagationModel"]().load(str(clip.model))
    if depth:
        extra["depth"] = torch.from_numpy(np.repeat(clip.depth[..., None], 3, axis=-1))
    (frames,) = pack.NODE_CLASS_MAPPINGS["MagicPropPropagate"]().propagate(image(clip.source), keyframes, indices, propagator, seed, **extra)
    return frames


def _x2(clip) -> np.ndarray:
    return np.repeat(np.repeat(clip.edited[1], 2, axis=0), 2, axis=1)


@pytest.mark.parametrize("case", list(CASES))
def test_propagate_gives_the_cli_frames(pack, clip, tmp_path, monkeypatch, case):
    cli_args, node_args = CASES[case]
    monkeypatch.chdir(clip.root)  # the CLI's relative paths
    out = tmp_path / "frames"  # no suffix: a folder of PNGs, read back exactly
    assert main(["propagate", "source", *cli_args, "-o", str(out)]) == 0
    expected = read_video(out)[0]
    frames = run_node(pack, clip, **node_args)
    assert frames.dtype == torch.float32 and tuple(frames.shape) == (FRAMES, *SIZE, 3)
    assert float(frames.min()) >= 0 and float(frames.max()) <= 1
    np.testing.assert_array_equal(to_uint8(frames), expected)
    # every keyframe exact, where the clip runs at its own size (no max_pixels) and no mask composites it over the source
    if not node_args.get("masks") and not node_args.get("max_pixels") and node_args["keys"] != "x2":
        for k in node_args["keys"]:
            np.testing.assert_array_equal(to_uint8(frames[k]), clip.edited[k])


# ---------------------------------------------------------------------------------------------------------------------
# Bad inputs: one line each, raised from the node (ComfyUI's panel shows the message and a traceback ending there)
# ---------------------------------------------------------------------------------------------------------------------
def _bad(clip, **change):
    args = dict(images=image(clip.source), keyframes=image(clip.edited[1:2]), keyframe_indices="1", propagator="flow", seed=0)
    return {**args, **change}


BAD = {
    "empty batch": (lambda c: _bad(c, images=image(c.source[:0])), r"^images is an empty batch \(0 images\)"),
    "empty keyframe batch": (lambda c: _bad(c, keyframes=image(c.edited[:0])), r"^keyframes is an empty batch"),
    "index outside the batch": (lambda c: _bad(c, keyframe_indices="6"), r"keyframe index 6 is outside the clip \(0\.\.5\)"),
    "negative index outside": (lambda c: _bad(c, keyframe_indices="-7"), r"keyframe index -7 is outside the clip \(0\.\.5\)"),
    "one of several outside": (lambda c: _bad(c, keyframes=image(c.edited[1:3]), keyframe_indices="1, 9"), r"keyframe index 9 is outside the clip"),
    "keyframe of another shape": (lambda c: _bad(c, keyframes=image(c.edited[1:2, :, :48])),
                                  r"the keyframe is 48x48 but the clip's frames are 80x48: resizing would stretch it"),  # fmt: skip
    "masks of another length": (lambda c: _bad(c, masks=torch.ones(3, *SIZE)), r"got 3 mask\(s\) for a 6-frame clip; give one mask per frame"),
    "masks of another size": (lambda c: _bad(c, masks=torch.ones(FRAMES, 24, 40)), r"the masks are 40x24 but the clip's frames are 80x48"),
    "empty masks": (lambda c: _bad(c, masks=torch.zeros(FRAMES, *SIZE)), r"every per-frame mask is empty"),
    "indices not numbers": (lambda c: _bad(c, keyframe_indices="1, x"), r"keyframe_indices '1, x' is not a list of frame indices"),
    "more indices than images": (lambda c: _bad(c, keyframe_indices="1, 4"), r"names 2 frame\(s\) \(1, 4\) but 1 keyframe image\(s\)"),
    "repeated index": (lambda c: _bad(c, keyframes=image(c.edited[1:3]), keyframe_indices="1,1"), r"names frame 1 more than once"),
    "same frame twice": (lambda c: _bad(c, keyframes=image(c.edited[1:3]), keyframe_indices="5, -1"), r"keyframes 5 and -1 are the same frame"),
    "auto with two keyframes": (lambda c: _bad(c, keyframes=image(c.edited[1:3]), keyframe_indices="auto"), r"keyframe_indices is auto but 2"),
    "not an image": (lambda c: _bad(c, images=image(c.source)[..., 0]), r"images must be an \[B, H, W, 3\] IMAGE batch, got shape \[6, 48, 80\]"),
    "depth of another length": (lambda c: _bad(c, propagator="propdpm", depth=image(np.repeat(c.source[:2, ..., :1], 3, axis=-1))),
                                r"depth must be \(T, H, W\) with T = 6 frames"),  # fmt: skip
    "colour depth": (lambda c: _bad(c, propagator="propdpm", depth=image(c.source)), r"depth frame 0 is in colour"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_clear_line_raised_from_the_node(pack, clip, case):
    make, message = BAD[case]
    node = pack.NODE_CLASS_MAPPINGS["MagicPropPropagate"]()
    with pytest.raises(UsageError, match=message) as info:
        node.propagate(**make(clip))
    assert "\n" not in str(info.value)
    # no chain and no frame of the library in the traceback: it ends in the pack
    assert info.value.__cause__ is None and info.value.__suppress_context__
    files = [frame.filename for frame in traceback.extract_tb(info.value.__traceback__)]
    assert not any("/src/magicprop/" in f for f in files) and files[-1].startswith(str(PACK)), files


# ---------------------------------------------------------------------------------------------------------------------
# ComfyUI's hooks: progress bar and interrupt, through stand-ins with the real names
# ---------------------------------------------------------------------------------------------------------------------
class Interrupted(Exception):
    """Stands for comfy.model_management.InterruptProcessingException."""


@pytest.fixture
def comfy(monkeypatch):
    """Stand-ins for comfy.utils.ProgressBar and comfy.model_management's interrupt check and device."""
    state = SimpleNamespace(updates=[], checks=0, cancel_after=None)

    class ProgressBar:
        def __init__(self, total, node_id=None):
            state.total = total

        def update_absolute(self, value, total=None, preview=None):
            state.updates.append((value, total))

    def throw_exception_if_processing_interrupted():
        state.checks += 1
        if state.cancel_after is not None and state.checks > state.cancel_after:
            raise Interrupted()

    package, utils, management = (types.ModuleType(n) for n in ("comfy", "comfy.utils", "comfy.model_management"))
    utils.ProgressBar = ProgressBar
    management.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    management.get_torch_device = lambda: torch.device("cpu")
    package.utils, package.model_management = utils, management
    for name, module in (("comfy", package), ("comfy.utils", utils), ("comfy.model_management", management)):
        monkeypatch.setitem(sys.modules, name, module)
    return state


def test_progress_moves_comfyuis_bar_to_the_end(pack, clip, comfy):
    pack.NODE_CLASS_MAPPINGS["MagicPropPropagate"]().propagate(**_bad(clip))
    done = [value for value, _ in comfy.updates]
    assert done == sorted(done) and done[0] == 1 and done[-1] == FRAMES  # the keyframe first, then frame by frame
    assert {total for _, total in comfy.updates} == {FRAMES} and comfy.checks == len(comfy.updates)


def test_cancel_stops_the_run_with_comfyuis_interrupt(pack, clip, comfy):
    comfy.cancel_after = 2  # the user presses Cancel while the third report is due
    with pytest.raises(Interrupted):  # not turned into a UsageError: ComfyUI reports it as an interruption
        pack.NODE_CLASS_MAPPINGS["MagicPropPropagate"]().propagate(**_bad(clip))
    assert comfy.checks == 3 and len(comfy.updates) == 2 and comfy.updates[-1][0] < FRAMES


# ---------------------------------------------------------------------------------------------------------------------
# MagicProp Load Propagation Model
# ---------------------------------------------------------------------------------------------------------------------
def load(pack, name: str):
    (pipe,) = pack.NODE_CLASS_MAPPINGS["MagicPropLoadPropagationModel"]().load(name)
    return pipe


def test_loader_takes_tiny_a_folder_a_models_folder_name_and_a_cached_hub_id(pack, clip, tmp_path, monkeypatch):
    import huggingface_hub.constants

    assert Path(load(pack, "tiny").propagation_models.source) == EMBEDDED_TINY
    assert load(pack, str(clip.model)).propagation_models.source == str(clip.model)
    # a name under ComfyUI/models/magicprop/
    models_dir = tmp_path / "models"
    shutil.copytree(clip.model, models_dir / "magicprop" / "my-propdpm")
    monkeypatch.setitem(sys.modules, "folder_paths", SimpleNamespace(models_dir=str(models_dir)))
    assert load(pack, "my-propdpm").propagation_models.source == str(models_dir / "magicprop" / "my-propdpm")
    # a hub id, offline (HF_HUB_OFFLINE=1 in conftest), from the Hugging Face cache's layout
    cache = tmp_path / "hub"
    revision = "0" * 40
    snapshot = cache / "models--someone--tiny-propdpm" / "snapshots" / revision
    shutil.copytree(clip.model, snapshot)
    (cache / "models--someone--tiny-propdpm" / "refs").mkdir()
    (cache / "models--someone--tiny-propdpm" / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    pipe = load(pack, "someone/tiny-propdpm")
    assert pipe.propagation_models.source == str(snapshot) and pipe.propagator.name == "propdpm"
    with pytest.raises(UsageError, match=r"someone/absent is not in the Hugging Face cache and the hub cannot be reached"):
        load(pack, "someone/absent")


@pytest.mark.parametrize(("name", "message"), [
    ("/no/such/folder", r"propagation model '/no/such/folder' is not a folder; give 'tiny'"),
    ("a b c", r"propagation model 'a b c' is not a folder"),
    ("{root}", r"is not a magicprop propagation model \(no propdpm/config.json\)"),
])  # fmt: skip
def test_loader_refuses_what_is_not_a_model_in_one_line(pack, clip, name, message):
    with pytest.raises(UsageError, match=message) as info:
        load(pack, name.format(root=clip.root))
    assert info.value.__cause__ is None and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------------------------------
# Example workflows
# ---------------------------------------------------------------------------------------------------------------------
CORE_OUTPUTS = {"LoadVideo": ["VIDEO"], "GetVideoComponents": ["IMAGE", "AUDIO", "FLOAT"], "LoadImage": ["IMAGE", "MASK"],
                "CreateVideo": ["VIDEO"], "SaveVideo": [], "PreviewImage": [], "PreviewAny": []}  # fmt: skip
# (workflow name, its nodes, the MagicProp node whose inputs are checked, {input: the type linked to it})
WORKFLOWS = [
    ("magicprop_propagate", ["LoadVideo", "GetVideoComponents", "LoadImage", "MagicPropPropagate", "CreateVideo", "SaveVideo"],
     "MagicPropPropagate", {"images": "IMAGE", "keyframes": "IMAGE"}),
    ("magicprop_suggest_keyframes", ["LoadVideo", "GetVideoComponents", "MagicPropSuggestKeyframes", "PreviewAny", "PreviewImage", "PreviewImage"],
     "MagicPropSuggestKeyframes", {"images": "IMAGE"}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "nodes", "ours", "links"), WORKFLOWS, ids=[w[0] for w in WORKFLOWS])
def test_example_workflows_are_wired_right(pack, name, nodes, ours, links):
    api = json.loads((PACK / "api_workflows" / f"{name}_api.json").read_text())
    ui = json.loads((PACK / "example_workflows" / f"{name}.json").read_text())
    outputs = {**CORE_OUTPUTS, **{n: list(c.RETURN_TYPES) for n, c in pack.NODE_CLASS_MAPPINGS.items()}}
    types_ = {node_id: node["class_type"] for node_id, node in api.items()}
    assert sorted(types_.values()) == sorted(nodes)
    for node_id, node in api.items():
        for input_name, value in node["inputs"].items():
            if isinstance(value, list):  # a link: [source node id, output index]
                assert value[0] in api and value[1] < len(outputs[types_[value[0]]]), (node_id, input_name)
    (inputs,) = [n["inputs"] for n in api.values() if n["class_type"] == ours]
    spec = pack.NODE_CLASS_MAPPINGS[ours].INPUT_TYPES()
    assert set(spec["required"]) <= set(inputs) <= set(spec["required"]) | set(spec.get("optional", {}))
    link_type = lambda link: outputs[types_[link[0]]][link[1]]  # noqa: E731
    assert {k: link_type(inputs[k]) for k in links} == links
    if "propagator" in inputs:
        assert inputs["propagator"] in choices()
    # the UI file holds the same graph: the same nodes, and links between nodes that exist
    assert sorted(n["type"] for n in ui["nodes"]) == sorted(types_.values())
    ids = {n["id"] for n in ui["nodes"]}
    for link_id, source, _, target, _, kind in ui["links"]:
        assert source in ids and target in ids and kind in ("IMAGE", "VIDEO", "FLOAT", "STRING")


def test_registry_metadata_has_the_required_fields_and_says_its_placeholders():
    import tomllib

    meta = tomllib.loads((PACK / "pyproject.toml").read_text())
    project, comfy = meta["project"], meta["tool"]["comfy"]
    assert project["name"] == "magicprop-nodes" and "comfyui" not in project["name"].lower()  # the registry's naming rule
    assert len(project["version"].split(".")) == 3 and project["dependencies"] == ["magicprop"]
    assert comfy["DisplayName"] == "MagicProp"
    # what cannot be known yet is a placeholder that cannot pass for a real value
    assert "PLACEHOLDER" in project["urls"]["Repository"] and "placeholder" in comfy["PublisherId"]


# ---------------------------------------------------------------------------------------------------------------------
# The real ComfyUI (optional: needs a host laid out by shared/tools/comfyui/setup.sh, named by MAGICPROP_COMFYUI)
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_example_workflow_in_the_real_comfyui_gives_the_cli_frames(tmp_path):
    import comfyui_real

    reason = comfyui_real.unavailable()
    if reason:
        pytest.skip(reason)
    report = comfyui_real.check(tmp_path)
    assert report["max_abs_difference"] == 0, report
    assert report["steady_max_abs_difference"] == 0 and report["steady_differs"], report  # --temporal-blend, in the host
    assert all(report["bad_inputs"].values()) and report["same_after_errors"], report
    assert sorted(report["templates"][comfyui_real.INSTALLED_NAME]) == [comfyui_real.PROPAGATE, comfyui_real.SUGGEST]
    # Suggest Keyframes in the server: the CLI's plan (the given frame 0, then its suggestions), and its pictures shown
    assert report["suggested_in_comfyui"] == [report["suggested_by_cli"]] and report["suggested_by_cli"] != "0", report
    assert report["suggest_previews"] == report["suggested_by_cli"].count(",") + 2  # the frames to edit, the curve
