"""The page: four numbered steps laid out top to bottom, each wired to a function of `callbacks`.

Concurrency: the two model jobs (generate a keyframe, propagate) share one queue slot across all tabs, because they
compete for the same CPU/GPU and running two at once only makes both slower; everything else (loading a clip, moving
the slider, uploading a keyframe, Cancel) has its own slots, so the page stays responsive while a job runs. Cancel both
stops the event in gradio (`cancels=`) and sets the tab's flag that the pipeline callback checks, because gradio cannot
interrupt a Python thread: without the flag the job would run on in the background.
"""

from __future__ import annotations

import atexit
import functools
import logging
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from ..propagation.flow.temporal import TemporalBlend
from . import callbacks as cb
from .models import ActiveModels, ModelOptions
from .session import Examples, Session, close_session

logger = logging.getLogger(__name__)

MODEL_JOBS = "model"  # the concurrency_id shared by the generate and propagate events
# Small clips (the 64 px examples) would show at their natural size next to a 400 px editor: scale them up, crisply.
CSS = """
#magicprop-keyframe img { min-height: 256px; object-fit: contain; image-rendering: pixelated; }
#magicprop-clip video, #magicprop-result video { image-rendering: pixelated; }
"""


def build_app(
    options: ModelOptions | None = None,
    *,
    models: ActiveModels | None = None,
    workdir: str | Path | None = None,
    num_examples: int = 2,
    example_frames: int = 24,
    example_size: tuple[int, int] = (64, 64),
) -> gr.Blocks:
    """Load the models once, render the bundled examples, and lay out the page. Serve it with `launch(app)`.

    Args:
        models: already loaded models (tests pass them to skip loading); otherwise loaded from `options`.
        workdir: where per-tab folders go; default a fresh temporary folder removed when the process exits.
    """
    # 1. Models and a home for temporary files
    models = models or ActiveModels.load(options or ModelOptions())
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="magicprop-ui-"))
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    workdir = Path(workdir)
    examples = Examples.render(workdir / "examples", count=num_examples, frames=example_frames, size=example_size)
    sessions = workdir / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)

    with gr.Blocks(title="MagicProp", analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        # One Session per tab: a factory value is called when the tab connects; the folder goes when gradio forgets it.
        session = gr.State(functools.partial(Session, sessions), delete_callback=close_session)
        gr.Markdown("# MagicProp\nEdit one frame of a clip; the edit follows the clip's motion to every other frame.")
        gr.Markdown(models.status_markdown(), elem_id="magicprop-status")

        # 2. Step 1 of the page: the clip
        gr.Markdown("## 1. Clip")
        with gr.Row():
            with gr.Column(scale=1):
                clip_in = gr.Video(
                    label="Source clip", sources=["upload"], include_audio=True, height=320, elem_id="magicprop-clip"
                )
                gr.Examples(examples=[[p] for p in examples.paths], inputs=[clip_in], label="Synthetic examples")
            with gr.Column(scale=1):
                clip_info = gr.Markdown("Upload a clip or pick an example.", elem_id="magicprop-clip-info")
                coverage = gr.Image(label="Keyframe coverage: how much of each frame the keyframes explain", type="filepath",
                                    interactive=False, height=220, elem_id="magicprop-coverage")  # fmt: skip
                suggestions = gr.Markdown(elem_id="magicprop-suggestions")

        # 3. Steps 2 and 3: pick a keyframe, then generate its edit or upload one
        gr.Markdown("## 2. Keyframe")
        frame_slider = gr.Slider(0, 1, value=0, step=1, label="Keyframe index", interactive=False, elem_id="magicprop-index")
        with gr.Row():
            editor = gr.ImageEditor(
                label="Keyframe (paint to restrict the edit to a region)", type="numpy", image_mode="RGBA",
                sources=[], layers=False, transforms=(), brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed"),
                elem_id="magicprop-editor",
            )  # fmt: skip
            keyframe = gr.Image(
                label="Edited keyframe (generate it, or upload one you edited elsewhere)", type="filepath",
                sources=["upload"], elem_id="magicprop-keyframe",
            )  # fmt: skip
        gr.Markdown("## 3. Edit the keyframe")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", placeholder="a watercolor painting", scale=3, elem_id="magicprop-prompt")
            negative = gr.Textbox(label="Negative prompt", value="blurry, low quality", scale=2)
        with gr.Row():
            seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, maximum=cb.MAX_SEED)
            edit_steps = gr.Slider(1, 100, value=30, step=1, label="Denoising steps")
            guidance = gr.Slider(1.0, 20.0, value=7.5, step=0.5, label="Guidance scale")
        with gr.Row():
            generate = gr.Button("Generate keyframe", variant="primary", interactive=models.editor_ok, elem_id="magicprop-generate")
            reroll = gr.Button("Try another seed", interactive=models.editor_ok, elem_id="magicprop-reroll")
        with gr.Row():
            keep = gr.Button("Keep this keyframe and add another", size="sm", elem_id="magicprop-keep")
            clear = gr.Button("Clear kept keyframes", size="sm", elem_id="magicprop-clear-kept")
        keyframe_note = gr.Markdown(elem_id="magicprop-keyframe-note")

        # 4. Step 4: propagate, watch, download
        gr.Markdown("## 4. Propagate")
        with gr.Row():
            propagator = gr.Radio(
                models.propagators(), value=models.default_propagator(), label="Propagator",
                info="propdpm: the learned model; hybrid: flow carries what it can, PropDPM paints the rest; flow: warp along optical flow; copy: repeat the keyframe",
                elem_id="magicprop-propagator",
            )  # fmt: skip
            prop_steps = gr.Slider(1, 100, value=25, step=1, label="PropDPM steps")
            prop_seed = gr.Number(label="PropDPM seed", value=0, precision=0, minimum=0, maximum=cb.MAX_SEED)
            steadiness = gr.Slider(0, 0.95, value=TemporalBlend.strength, step=0.05, label="flow steadiness",
                                   info="how much of the neighbouring frames flow keeps where the edit re-draws detail: higher boils less, follows changes slower",
                                   elem_id="magicprop-steadiness")  # fmt: skip
        with gr.Row():
            run = gr.Button("Propagate", variant="primary", elem_id="magicprop-propagate")
            stop = gr.Button("Cancel", variant="stop", elem_id="magicprop-cancel")
        result_note = gr.Markdown(elem_id="magicprop-result-note")
        with gr.Row():
            result = gr.Video(
                label="Source | edited", interactive=False, autoplay=True, loop=True, height=320, elem_id="magicprop-result"
            )
            downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="magicprop-downloads")

        # 5. Wiring. Light events get their own slots (concurrency_limit=None); model jobs share MODEL_JOBS.
        light = dict(concurrency_limit=None, show_progress="minimal")
        # A rejected upload is cleared after its error shows, so the upload box comes back (and the page resets).
        loaded = clip_in.change(
            functools.partial(cb.load_clip, examples=examples), [clip_in, session],
            [clip_info, frame_slider, keyframe, editor], api_name="load_clip", **light,
        )  # fmt: skip
        loaded.failure(lambda: None, None, clip_in, queue=False)
        loaded.success(cb.suggest_keyframes, [session], [coverage, suggestions], api_name="suggest_keyframes", **light)
        frame_slider.change(cb.show_frame, [frame_slider, session], [editor], api_name="show_frame", **light)
        uploaded = keyframe.upload(
            cb.upload_keyframe, [keyframe, frame_slider, session], [keyframe, keyframe_note], api_name="upload_keyframe", **light
        )
        uploaded.failure(lambda: None, None, keyframe, queue=False)
        uploaded.success(cb.keyframe_slider, [session], [frame_slider], queue=False)  # to the frame it was found at

        keep.click(cb.keep_keyframe, [session], [keyframe_note], api_name="keep_keyframe", **light).success(
            cb.suggest_keyframes, [session], [coverage, suggestions], **light
        )
        clear.click(cb.clear_kept, [session], [keyframe_note], api_name="clear_kept", **light).success(
            cb.suggest_keyframes, [session], [coverage, suggestions], **light
        )

        edit_inputs = [editor, prompt, negative, seed, edit_steps, guidance, frame_slider, session]
        generate_fn = functools.partial(cb.generate_keyframe, models=models)
        jobs = dict(concurrency_limit=1, concurrency_id=MODEL_JOBS)
        gen = generate.click(generate_fn, edit_inputs, [keyframe, keyframe_note], api_name="generate_keyframe", **jobs)
        regen = reroll.click(cb.new_seed, None, seed, queue=False, api_name="new_seed").then(
            generate_fn, edit_inputs, [keyframe, keyframe_note], api_name="regenerate_keyframe", **jobs
        )
        prop = run.click(
            functools.partial(cb.propagate, models=models), [propagator, prop_steps, prop_seed, steadiness, session],
            [result, downloads, result_note], api_name="propagate", **jobs,
        )  # fmt: skip
        stop.click(cb.cancel, [session], [result_note], cancels=[gen, regen, prop], queue=False, api_name="cancel")

    app.queue(default_concurrency_limit=None)
    app.magicprop_workdir = workdir  # type: ignore[attr-defined]  # for tests and the command's clean-up
    return app


def launch(app: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> str:
    """Serve `app` (gradio 6 takes page CSS at launch, not in Blocks); returns the local URL. `block=False` returns at
    once, leaving the server in a thread (tests), and `app.close()` stops it."""
    workdir = getattr(app, "magicprop_workdir", None)
    _, url, _ = app.launch(
        server_name=host, server_port=port, prevent_thread_lock=not block, css=CSS, ssr_mode=False, quiet=True,
        show_error=False,  # our errors are gr.Error with one line; anything else must not leak a traceback
        allowed_paths=[str(workdir)] if workdir else None,
    )  # fmt: skip
    return url
