r"""The belief explorer as a person uses it: JupyterLab in headless Chromium, driven by Playwright.

Starts JupyterLab on a free local port over a temporary copy of the notebooks (so autosave never
writes outputs into the repository), opens ``04_belief_explorer.ipynb`` and runs all cells. The
notebook ends with a scripted ``explorer.update(index=..., part=right wrist, occluder=...,
show_path=True)``: the test checks that the explorer's controls show that state, then moves the
stage slider and changes the part, and checks from screenshots that the belief image changed
while the rest of the scripted state (the occluder) stayed. It also checks that "PCK\@0.2" in
the markdown renders as text, not as a mailto: link. Screenshots are kept in
``test-artifacts/browser/``.

Needs Debian's ``/usr/bin/chromium`` (``make test`` installs it when it can) and the Python
``playwright`` package; never downloads a browser of its own.
"""
from __future__ import annotations

import io
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("CPM_LAB_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "test-artifacts" / "browser"
NOTEBOOK = "04_belief_explorer.ipynb"

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jupyter_url(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"browser test skipped: no Chromium at {CHROMIUM} (Debian package 'chromium'; "
                    "`make test` installs it when apt-get is available)")
    pytest.importorskip("playwright.sync_api", reason="browser test skipped: the 'playwright' package is missing")
    work = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    port, token = _free_port(), secrets.token_hex(16)
    log = open(work / "jupyter.log", "w")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(work / "config"), JUPYTER_DATA_DIR=str(work / "data"),
               JUPYTER_RUNTIME_DIR=str(work / "runtime"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work / 'notebooks'}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--ServerApp.disable_check_xsrf=True"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work / "notebooks")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    log.flush()
                    pytest.fail("JupyterLab did not start:\n" + (work / "jupyter.log").read_text()[-3000:])
                time.sleep(0.5)
        yield f"{base}/lab/tree/{NOTEBOOK}?token={token}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


def _changed(a: bytes, b: bytes) -> float:
    pa, pb = _pixels(a), _pixels(b)
    if pa.shape != pb.shape:
        return float("inf")
    return float(np.abs(pa - pb).mean())


def test_explorer_in_jupyterlab(jupyter_url):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(jupyter_url, timeout=120_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            select = page.get_by_role("button", name="Select", exact=True)   # kernel picker, if shown
            try:
                select.wait_for(state="visible", timeout=20_000)
                select.click()
            except Exception:
                pass
            page.get_by_text("Kernel status: Idle").first.wait_for(state="attached", timeout=120_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()   # the menu bar
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            image = page.locator(".widget-image").first
            image.wait_for(state="visible", timeout=300_000)
            image.scroll_into_view_if_needed()
            initial = image.screenshot()                   # before the scripted update, if it has not run yet
            page.get_by_text("for this person the later stages").first.wait_for(state="attached", timeout=300_000)
            image.scroll_into_view_if_needed()
            for _ in range(30):                            # the image follows the scripted update()
                page.wait_for_timeout(1000)
                scripted = image.screenshot()
                if _changed(initial, scripted) > 0.5:
                    break
            shots = {"scripted": image.screenshot(path=str(ARTIFACTS / "1_after_scripted_update.png"))}
            assert _changed(initial, shots["scripted"]) > 0.5, "the explorer image does not show the scripted update()"
            page.screenshot(path=str(ARTIFACTS / "0_notebook.png"), full_page=False)

            # the controls show what the scripted update() drew
            panel = page.locator(".widget-vbox").filter(has=image).first
            dropdown = panel.locator(".widget-dropdown").filter(has_text="part").first.locator("select")
            assert dropdown.evaluate("s => s.options[s.selectedIndex].text").replace("\xa0", " ") == "right wrist"
            occluder = panel.get_by_role("button", name="occluder")
            assert "mod-active" in (occluder.get_attribute("class") or ""), "the occluder toggle is off"
            path = panel.locator(".widget-checkbox").filter(has_text="argmax path").locator("input")
            assert path.is_checked(), "the argmax-path checkbox is off after update(show_path=True)"

            stage = panel.locator(".widget-slider").filter(has_text="stage").first.locator(".noUi-handle")
            stage.focus()
            for _ in range(8):
                page.keyboard.press("ArrowLeft")
            page.wait_for_timeout(2500)
            shots["stage1"] = image.screenshot(path=str(ARTIFACTS / "2_stage1_right_wrist_occluded.png"))
            assert _changed(shots["scripted"], shots["stage1"]) > 0.5, \
                "moving the stage slider did not change the belief image"
            assert "mod-active" in (occluder.get_attribute("class") or ""), "moving the stage dropped the occluder"

            dropdown.select_option(label="all parts")
            page.wait_for_timeout(2500)
            shots["stage1_all"] = image.screenshot(path=str(ARTIFACTS / "3_stage1_all_parts_with_key.png"))
            assert _changed(shots["stage1"], shots["stage1_all"]) > 0.5, \
                "changing the part did not change the belief image"
            assert "mod-active" in (occluder.get_attribute("class") or ""), "changing the part dropped the occluder"

            for _ in range(8):
                stage.focus()
                page.keyboard.press("ArrowRight")
            page.wait_for_timeout(2500)
            shots["final_all"] = image.screenshot(path=str(ARTIFACTS / "4_final_stage_all_parts.png"))
            assert _changed(shots["stage1_all"], shots["final_all"]) > 0.5

            mailto = page.locator(".jp-MarkdownOutput a[href^='mailto:']")
            assert mailto.count() == 0, f"markdown renders a mailto: link: {mailto.first.inner_text()}"
            assert page.locator(".jp-MarkdownOutput").filter(has_text="PCK@0.2").count() > 0
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
            assert not tracebacks, f"the notebook printed errors: {tracebacks[:1]}"
        finally:
            page.screenshot(path=str(ARTIFACTS / "5_last_state.png"))
            browser.close()
