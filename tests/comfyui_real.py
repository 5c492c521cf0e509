"""The node pack in a real ComfyUI server (CPU, 127.0.0.1), driven by ../shared/tools/comfyui/harness.py.

`check` runs the pack's example API workflow on shared/samples' kitten clip and its edited first frame (plus a SaveImage
node, PNGs being exact where SaveVideo's H.264 is not), runs `magicprop propagate` from ComfyUI's own Python on the same
files, and compares the frames; runs the Suggest Keyframes workflow and compares its indices with `magicprop keyframes`'
plan; then queues bad workflows (keyframe index outside the clip, a keyframe of another
shape, masks of another length, an empty batch from a check-only node; a given frame outside the clip for Suggest) and checks that each fails with magicprop's one line, a traceback that
ends in the pack, and that the server still runs the good workflow afterwards. `screenshots` loads each workflow into
ComfyUI's page in headless Chromium, runs it there, and saves the graph (and the error dialog of a bad run) as PNGs;
and writes the UI-format workflows the page made from the API ones.

    MAGICPROP_COMFYUI=/path/to/comfy python tests/comfyui_real.py check OUT_DIR
    MAGICPROP_COMFYUI=/path/to/comfy python tests/comfyui_real.py screenshots docs/

MAGICPROP_COMFYUI names a folder laid out by shared/tools/comfyui/setup.sh, with magicprop pip-installed into its venv.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "comfyui"
SHARED = ROOT.parent / "shared"
HARNESS = SHARED / "tools" / "comfyui" / "harness.py"
CLIP, KEYFRAME = SHARED / "samples" / "edits" / "kitten.mp4", SHARED / "samples" / "edits" / "kitten_dog_000.png"
PROPAGATE, SUGGEST = "magicprop_propagate", "magicprop_suggest_keyframes"  # the example workflows' names
STEADIER = 0.9  # a --temporal-blend other than the default, run in the host and by the CLI
SUGGEST_ARGS = ["--keyframe-index", "0", "--max", "3", "--target", "0.95"]  # the Suggest workflow's widgets, as flags
NODES = ["MagicPropPropagate", "MagicPropLoadPropagationModel", "MagicPropSuggestKeyframes"]
INSTALLED_NAME = "magicprop-nodes"  # custom_nodes/<this>
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
USAGE_ERROR = "magicprop.errors.UsageError"


def host_dir() -> Path | None:
    value = os.environ.get("MAGICPROP_COMFYUI")
    return Path(value) if value else None


def unavailable() -> str | None:
    """Why the real server cannot run here (None when it can)."""
    comfy = host_dir()
    if comfy is None:
        return "MAGICPROP_COMFYUI is not set (a folder laid out by shared/tools/comfyui/setup.sh)"
    if not (comfy / "ComfyUI" / "main.py").is_file() or not (comfy / "venv" / "bin" / "magicprop").is_file():
        return f"{comfy} has no ComfyUI/main.py or no magicprop in venv/ (setup.sh, then pip install magicprop there)"
    for path in (HARNESS, CLIP, KEYFRAME):
        if not path.is_file():
            return f"{path} is missing (../shared is not here)"
    return None


def harness():
    spec = importlib.util.spec_from_file_location("comfyui_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def server(h, *extra_packs: Path):
    """ComfyUI with the pack linked in as custom_nodes/magicprop-nodes (the folder name the README's install uses;
    ComfyUI shows it as the nodes' source), on a free port; stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="magicprop-pack-") as tmp:
        link = Path(tmp) / INSTALLED_NAME
        link.symlink_to(PACK, target_is_directory=True)
        proc = h.start(str(host_dir()), 0, [str(link), *map(str, extra_packs)], require_nodes=NODES, extra_args=["--cache-none"])
        try:
            yield proc
        finally:
            h.stop(proc)


def api_workflow(video: str, keyframe: str, name: str = PROPAGATE) -> dict:
    """An example API workflow with its Load Video / Load Image on the uploaded files."""
    workflow = json.loads((PACK / "api_workflows" / f"{name}_api.json").read_text())
    for node in workflow.values():
        if node["class_type"] == "LoadVideo":
            node["inputs"]["file"] = video
        elif node["class_type"] == "LoadImage":
            node["inputs"]["image"] = keyframe
    return workflow


def with_frames_saved(workflow: dict, prefix: str) -> dict:
    """The workflow plus a SaveImage of MagicProp Propagate's frames (one exact PNG per frame)."""
    out = copy.deepcopy(workflow)
    out["90"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": prefix}}
    return out


def read_pngs(paths) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(paths)])


EMPTY_PACK = '''"""A check-only node: the first frames of a batch, which may be none (as third-party video loaders give when asked
to skip past the end); no core node makes an empty IMAGE batch."""


class MagicPropCheckFirstFrames:
    CATEGORY, FUNCTION, RETURN_TYPES = "testing", "first", ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "count": ("INT", {"default": 0, "min": 0, "max": 100000})}}

    def first(self, images, count):
        return (images[:count],)


NODE_CLASS_MAPPINGS = {"MagicPropCheckFirstFrames": MagicPropCheckFirstFrames}
'''


def write_empty_batch_pack(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text(EMPTY_PACK)
    return folder


def bad_workflows(good: dict, suggest: dict) -> dict[str, tuple[dict, str]]:
    """{case: (workflow, a fragment of the expected message)}: the propagate workflow's, then the suggest one's."""
    cases = {}
    w = copy.deepcopy(good)
    w["4"]["inputs"]["keyframe_indices"] = "99"
    cases["keyframe index outside the clip"] = (w, "keyframe index 99 is outside the clip (0..15)")
    w = copy.deepcopy(good)
    w["80"] = {"class_type": "ImageScale", "inputs": {"image": ["3", 0], "upscale_method": "bilinear", "width": 512,
                                                      "height": 256, "crop": "disabled"}}  # fmt: skip
    w["4"]["inputs"]["keyframes"] = ["80", 0]
    cases["keyframe of another shape"] = (w, "the keyframe is 512x256 but the clip's frames are 512x512")
    w = copy.deepcopy(good)
    w["4"]["inputs"]["masks"] = ["3", 1]  # Load Image's MASK: one mask for a 16-frame clip
    cases["masks of another length"] = (w, "got 1 mask(s) for a 16-frame clip")
    w = copy.deepcopy(good)
    w["81"] = {"class_type": "MagicPropCheckFirstFrames", "inputs": {"images": ["2", 0], "count": 0}}
    w["4"]["inputs"]["images"] = ["81", 0]
    cases["empty clip"] = (w, "images is an empty batch (0 images)")
    w = copy.deepcopy(suggest)
    w["3"]["inputs"]["keyframe_indices"] = "0, 99"
    cases["suggest: a given frame outside the clip"] = (w, "keyframe index 99 is outside the clip (0..15, or -16..-1 from the end)")
    return cases


def run_cli(out: Path, *extra: str) -> np.ndarray:
    """`magicprop propagate` from ComfyUI's Python (the same packages as the node) on the sample files."""
    command = [str(host_dir() / "venv" / "bin" / "magicprop"), "propagate", str(CLIP), "--keyframe-image", str(KEYFRAME),
               "--keyframe-index", "0", "--propagator", "flow", "--seed", "0", *extra, "-o", str(out)]  # fmt: skip
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True)
    return read_pngs(out.glob("*.png"))


def run_cli_keyframes(out: Path) -> list[int]:
    """`magicprop keyframes` from ComfyUI's Python on the sample clip: the given frame then the suggestions."""
    command = [str(host_dir() / "venv" / "bin" / "magicprop"), "keyframes", str(CLIP), *SUGGEST_ARGS, "-o", str(out / "plan.json")]
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True)
    plan = json.loads((out / "plan.json").read_text())
    return [0, *plan["suggested"]]


def check(workdir: str | Path) -> dict:
    """The report described in the module docstring."""
    h, workdir = harness(), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    with server(h, write_empty_batch_pack(workdir / "magicprop_check_nodes")) as proc:
        video, keyframe = h.upload_input(proc.port, str(CLIP)), h.upload_input(proc.port, str(KEYFRAME))
        good = api_workflow(video, keyframe)
        start = time.monotonic()
        history = h.run_workflow(proc.port, with_frames_saved(good, "magicprop_check/frames"), timeout=900)
        report["seconds_in_comfyui"] = round(time.monotonic() - start, 1)
        files = h.output_files(history)
        frames = read_pngs([f for f in files if f.endswith(".png")])
        report["outputs"] = sorted(Path(f).suffix for f in files)
        report["server_memory_kib"] = {"at_start": proc.memory_at_start, "after_run": h.memory(proc)}
        report["templates"] = h._get_json(proc.port, "/workflow_templates")  # what the page's template browser lists
        start = time.monotonic()
        suggested = h.run_workflow(proc.port, api_workflow(video, keyframe, SUGGEST), timeout=900)
        report["suggest_seconds_in_comfyui"] = round(time.monotonic() - start, 1)
        report["suggested_in_comfyui"] = h.ui_outputs(suggested, "text")  # Preview Any's text: the indices
        report["suggest_previews"] = len(h.output_entries(suggested))
        bad = {}
        for case, (workflow, expected) in bad_workflows(good, api_workflow(video, keyframe, SUGGEST)).items():
            try:
                h.run_workflow(proc.port, workflow, timeout=600)
                bad[case] = False
            except h.WorkflowError as exc:
                error = _execution_error(exc)
                frames_ = error.get("traceback") or [""]  # one entry per frame, innermost last
                bad[case] = (expected in error.get("exception_message", "") and error.get("exception_type") == USAGE_ERROR
                             and not any("/src/magicprop/" in f for f in frames_)
                             and f"custom_nodes/{INSTALLED_NAME}/" in frames_[-1])  # fmt: skip
                report.setdefault("messages", {})[case] = {k: error.get(k) for k in ("exception_type", "exception_message", "traceback")}
        report["bad_inputs"] = bad
        again = h.run_workflow(proc.port, with_frames_saved(good, "magicprop_check/again"), timeout=900)  # still serving
        report["same_after_errors"] = bool(np.array_equal(read_pngs([f for f in h.output_files(again) if f.endswith(".png")]), frames))
        steadier = copy.deepcopy(good)
        steadier["4"]["inputs"]["temporal_blend"] = STEADIER  # the node's optional FLOAT, as the page's widget sends it
        steady = h.run_workflow(proc.port, with_frames_saved(steadier, "magicprop_check/steady"), timeout=900)
        steady_frames = read_pngs([f for f in h.output_files(steady) if f.endswith(".png")])
    expected = run_cli(workdir / "cli")
    steady_cli = run_cli(workdir / "cli_steady", "--temporal-blend", str(STEADIER))
    report["steady_max_abs_difference"] = (int(np.abs(steady_frames.astype(int) - steady_cli.astype(int)).max())
                                           if steady_frames.shape == steady_cli.shape else None)  # fmt: skip
    report["steady_differs"] = bool(steady_frames.shape != frames.shape or not np.array_equal(steady_frames, frames))
    report["frames"], report["cli_frames"] = list(frames.shape), list(expected.shape)
    diff = np.abs(frames.astype(int) - expected.astype(int)) if frames.shape == expected.shape else None
    report["max_abs_difference"] = None if diff is None else int(diff.max())
    (workdir / "keyframes").mkdir(exist_ok=True)
    report["suggested_by_cli"] = ", ".join(map(str, run_cli_keyframes(workdir / "keyframes")))
    return report


def _execution_error(exc) -> dict:
    for event, data in ((exc.details or {}).get("status") or {}).get("messages", []):
        if event == "execution_error":
            return data
    return {"exception_message": str(exc)}


# ---------------------------------------------------------------------------------------------------------------------
# ComfyUI's page, in headless Chromium
# ---------------------------------------------------------------------------------------------------------------------
def screenshots(out_dir: str | Path) -> list[Path]:
    """docs/comfyui-keyframes.png and docs/comfyui-graph.png (the example workflows after a run in the page),
    docs/comfyui-error.png (the dialog a bad keyframe index brings up), and the UI-format workflows the page made,
    written to example_workflows/."""
    from playwright.sync_api import sync_playwright

    h, out_dir = harness(), Path(out_dir)
    written = []
    with server(h) as proc, sync_playwright() as p:
        video, keyframe = h.upload_input(proc.port, str(CLIP)), h.upload_input(proc.port, str(KEYFRAME))
        h._post_json(proc.port, "/settings/Comfy.TutorialCompleted", True)  # no template browser on first visit
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1700, "height": 1000})
            page.goto(f"http://127.0.0.1:{proc.port}", timeout=120_000)
            page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=120_000)
            for name, picture in ((SUGGEST, "comfyui-keyframes.png"), (PROPAGATE, "comfyui-graph.png")):
                page.evaluate("async ([api, name]) => { await window.app.loadApiJson(api, name); }", [api_workflow(video, keyframe, name), name])
                _arrange(page, LAYOUTS[name])
                graph = page.evaluate("() => window.app.graph.serialize()")
                ui = PACK / "example_workflows" / f"{name}.json"
                ui.write_text(json.dumps(_portable(graph, video, keyframe), indent=1) + "\n")
                page.evaluate("() => window.app.queuePrompt(0)")
                _wait_for_queue(h, proc.port)
                page.wait_for_timeout(3000)  # the previews load
                page.screenshot(path=str(out_dir / picture), clip=VIEW)
                written += [ui, out_dir / picture]
            # a bad run: the dialog ComfyUI opens for an exception raised in a node
            page.evaluate("() => { const n = window.app.graph._nodes.find(n => n.type === 'MagicPropPropagate');"
                          " n.widgets.find(w => w.name === 'keyframe_indices').value = '99'; }")  # fmt: skip
            page.evaluate("() => window.app.queuePrompt(0)")
            _wait_for_queue(h, proc.port)
            page.get_by_text("keyframe index 99 is outside the clip").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(out_dir / "comfyui-error.png"), clip=VIEW)
            written.append(out_dir / "comfyui-error.png")
        finally:
            browser.close()
    return written


def _wait_for_queue(h, port: int, timeout: float = 900.0) -> None:
    """Until the server has run what the page queued."""
    deadline = time.monotonic() + timeout
    time.sleep(1.0)
    while True:
        queue = h._get_json(port, "/queue")
        if not queue["queue_running"] and not queue["queue_pending"]:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"ComfyUI's queue did not empty in {timeout:g} s")
        time.sleep(0.5)


# Where each node of each workflow goes in the screenshot, by its id: (x, y), or (x, y, width, height); left to right
# as the data flows
LAYOUTS = {
    PROPAGATE: {"1": (0, 0), "3": (0, 400), "2": (330, 0), "4": (580, 120), "5": (960, 0), "6": (1230, 0)},
    SUGGEST: {"1": (0, 0), "2": (330, 0), "3": (580, 0), "4": (580, 260, 320, 120), "5": (940, 0, 300, 560), "6": (1270, 0, 420, 560)},
}  # fmt: skip
VIEW = {"x": 0, "y": 0, "width": 1700, "height": 800}  # the part of the page the screenshots keep


def _arrange(page, layout: dict) -> None:
    page.evaluate("""(layout) => {
        for (const n of window.app.graph._nodes) {
            const at = layout[String(n.id)];
            if (at) { n.pos = [at[0], at[1]]; if (at.length > 2) n.size = [at[2], at[3]]; }
        }
        window.app.canvas.ds.offset = [90, 160]; window.app.canvas.ds.scale = 0.85;
        window.app.graph.setDirtyCanvas(true, true);
    }""", layout)  # fmt: skip


def _portable(graph: dict, video: str, keyframe: str) -> dict:
    """The serialized graph with the uploaded names put back to the sample files' names."""
    text = json.dumps(graph).replace(json.dumps(video), json.dumps(CLIP.name)).replace(json.dumps(keyframe), json.dumps(KEYFRAME.name))
    return json.loads(text)


if __name__ == "__main__":
    reason = unavailable()
    if reason:
        sys.exit(f"comfyui_real: {reason}")
    what, where = sys.argv[1], sys.argv[2]
    if what == "check":
        print(json.dumps(check(where), indent=1))
    elif what == "screenshots":
        print("\n".join(map(str, screenshots(where))))
    else:
        sys.exit("usage: comfyui_real.py check OUT_DIR | screenshots DOCS_DIR")
