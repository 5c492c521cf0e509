"""The web UI end to end in headless Chromium: upload a clip, pick a keyframe, upload its edit, propagate, download.

Uses Debian's `chromium` (/usr/bin/chromium; `.ci/install-browser` installs it) driven by Playwright's Python client,
never a browser downloaded by `playwright install`. Weight-free on purpose: the `flow` propagator and an uploaded
keyframe (the synthetic clip's ground-truth edited frame) need no model at all, so this runs on any fresh install.
A full-page screenshot is saved to $MAGICPROP_ARTIFACTS (or the test's tmp folder) for a person to look at.
"""

import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio")
pytest.importorskip("playwright")

from magicprop.synthetic import render_clip, write_clip  # noqa: E402
from magicprop.ui import ActiveModels, ModelOptions, build_app, launch  # noqa: E402
from magicprop.video import probe, read_video, save_image  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
T, H, W, K = 12, 64, 64, 5  # frames, size, and the keyframe we pick with the slider
TIMEOUT_MS = 90_000  # a wait, not a speed check: on a loaded 2-core machine an upload once took over 30 s


def _chromium() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on 127.0.0.1 at a free port, with the models a fresh offline install has (no stage I)."""
    models = ActiveModels.load(ModelOptions(load_editor=False))
    app = build_app(models=models, workdir=tmp_path_factory.mktemp("ui"), example_frames=T)
    url = launch(app, host="127.0.0.1", port=_free_port(), block=False)
    yield url
    app.close()


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = write_clip(render_clip(11, frames=T, size=(H, W), edit="global"), tmp_path_factory.mktemp("clip"))
    save_image(folder / "keyframe.png", read_video(folder / "edited.mp4")[0][K])  # the edit a perfect stage I would make
    return folder


def _wait_text(page, selector: str, text: str) -> str:
    page.wait_for_function(
        "([sel, text]) => (document.querySelector(sel)?.innerText || '').includes(text)", arg=[selector, text], timeout=TIMEOUT_MS
    )
    return page.inner_text(selector)


def test_upload_pick_keyframe_propagate_download(server, clip_dir, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium found (/usr/bin/chromium or `chromium` on PATH); install it with .ci/install-browser")
    from playwright.sync_api import sync_playwright

    artifacts = Path(os.environ.get("MAGICPROP_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server, timeout=TIMEOUT_MS)
            assert "PropDPM" in _wait_text(page, "#magicprop-status", "Propagation:")  # says which models are active

            # 1. Upload the clip: its length, size and fps appear
            page.set_input_files("#magicprop-clip input[type=file]", str(clip_dir / "source.mp4"))
            info = _wait_text(page, "#magicprop-clip-info", f"{T} frames")
            assert f"{W}×{H} px" in info and "8 fps" in info

            # 2. Scrub to the keyframe (the slider's number box, as a keyboard user would)
            number = page.locator("#magicprop-index input[type=number]")
            page.wait_for_function("() => !document.querySelector('#magicprop-index input[type=number]').disabled", timeout=TIMEOUT_MS)
            number.fill(str(K))
            number.press("Enter")
            page.wait_for_function(
                "k => document.querySelector('#magicprop-index input[type=range]').value === String(k)", arg=K, timeout=TIMEOUT_MS
            )

            # 3. Upload the keyframe edited elsewhere
            page.set_input_files("#magicprop-keyframe input[type=file]", str(clip_dir / "keyframe.png"))
            _wait_text(page, "#magicprop-keyframe-note", f"Uploaded keyframe for frame {K}")
            # keeping it for a several-keyframe run, then clearing that, answers in the note (one keyframe is used below)
            page.click("#magicprop-keep")
            _wait_text(page, "#magicprop-keyframe-note", f"Kept keyframes: {K}.")
            page.click("#magicprop-clear-kept")
            _wait_text(page, "#magicprop-keyframe-note", "cleared")

            # 4. Propagate with flow (no weights): the result plays, and the files download
            page.locator("#magicprop-propagator label", has_text="flow").click()
            page.click("#magicprop-propagate")
            note = _wait_text(page, "#magicprop-result-note", "Propagated")
            assert f"frame {K} to {T} frames" in note
            video_src = page.wait_for_selector("#magicprop-result video[src]", timeout=TIMEOUT_MS).get_attribute("src")
            links = page.locator("#magicprop-downloads a[href]")
            links.first.wait_for(timeout=TIMEOUT_MS)
            hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
            page.wait_for_timeout(500)  # let the result video paint its first frame for the screenshot
            page.screenshot(path=str(artifacts / "ui_browser.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()

    # Read back what the page serves, not what the server wrote: the download a person would get.
    names = {href.rsplit("/", 1)[-1]: href for href in hrefs}
    assert {"source-edited.mp4", f"source-keyframe-{K:04d}.png", "source-settings.json"} <= set(names), names
    downloaded = tmp_path / "edited.mp4"
    downloaded.write_bytes(urllib.request.urlopen(names["source-edited.mp4"], timeout=10).read())
    frames, fps = read_video(downloaded)
    assert frames.shape == (T, H, W, 3) and fps == pytest.approx(8.0)
    shown = tmp_path / "comparison.mp4"
    shown.write_bytes(urllib.request.urlopen(video_src, timeout=10).read())
    info = probe(shown)
    assert info.frames == T and info.width == 2 * W  # source | edited, side by side
    assert time.perf_counter() - start < 60
