"""LlamaBoard end to end in a real browser: select MoD-DPO, set its controls, preview, train.

Playwright drives Debian's Chromium (``/usr/bin/chromium``, installed by ``scripts/setup.sh``;
no browser is downloaded). The unmodified ``llamafactory-cli webui`` runs as a subprocess on
127.0.0.1 and a free port, in a temporary working directory (LlamaBoard writes
``llamaboard_cache``, ``llamaboard_config`` and ``saves`` there), on the tiny Qwen2.5-Omni and the
repository's ``data`` folder. A screenshot of the MoD-DPO controls is saved to
``test-artifacts/webui_mod_dpo_controls.png``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import BIN, ROOT, free_port, venv_env

DATA_DIR = ROOT / "data"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOT = ARTIFACTS / "webui_mod_dpo_controls.png"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MODEL_NAME = "Qwen2.5-Omni-7B"  # a LlamaBoard entry with template qwen2_omni; its path is replaced
# What the UI does not expose (or only in coarse steps) goes through LlamaBoard's "Extra arguments" box.
EXTRA_ARGS = {
    "optim": "adamw_torch",
    "use_cpu": True,
    "preprocessing_num_workers": 1,
    "dataloader_num_workers": 0,
    "overwrite_cache": True,
    "video_maxlen": 4,
    "logging_steps": 1,
    "save_steps": 20,
    "save_only_model": True,
    "seed": 42,
}
# upstream's label of the language and stage dropdowns, and our accordion's title, per language
LANGUAGE_LABEL = {"en": "Language", "ru": "Язык", "zh": "语言", "ko": "언어", "ja": "言語"}
STAGE_LABEL = {"en": "Stage", "ru": "Этап", "zh": "训练阶段", "ko": "학습 단계", "ja": "ステージ"}
ACCORDION_TITLES = {
    "en": "MoD-DPO configurations",
    "ru": "Конфигурации MoD-DPO",
    "zh": "MoD-DPO 参数设置",
    "ko": "MoD-DPO 구성",
    "ja": "MoD-DPO 設定",
}
TIMEOUT_MS = 60_000
RUN_TIMEOUT_S = 600

pytestmark = pytest.mark.slow


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes through a proxy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the web UI exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with opener.open(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"the web UI did not answer at {url} within {timeout}s:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the web UI and the training run it may have started (its own process group)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture()
def say(capsys):
    """Print a line into pytest's output even while output is captured (artifact path, run summary)."""

    def _say(message: str) -> None:
        with capsys.disabled():
            print(message, flush=True)

    return _say


@pytest.fixture()
def webui(tmp_path):
    """``llamafactory-cli webui`` on 127.0.0.1 in a temporary working directory: (url, workdir)."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run scripts/setup.sh (apt-get install chromium).")
    workdir = tmp_path / "board"
    workdir.mkdir()
    port = free_port()
    env = venv_env({  # the venv's bin on PATH: LlamaBoard starts `llamafactory-cli train`
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_DISABLED": "true",
        "BROWSER": "true",  # LlamaBoard launches with inbrowser=True: open nothing
    })
    log = workdir / "webui.log"
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [str(BIN / "llamafactory-cli"), "webui"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_until_up(url, proc, log)
        yield url, workdir
    finally:
        _stop(proc)
        print(f"\n[webui log: {log}]\n{log.read_text(errors='replace')[-3000:]}")


# ---------------------------------------------------------------- Gradio widgets
# Gradio renders every tab (Train, Evaluate, ...) at once; only the visible widgets are ours.
def dropdown(page, label: str):
    """The input of the visible Gradio dropdown labelled ``label``."""
    return page.locator(f"input[role=listbox][aria-label={json.dumps(label, ensure_ascii=False)}]").filter(visible=True).first


def textbox(page, label: str):
    """The visible Gradio textbox (or multiselect dropdown) whose label is ``label``, info text aside."""
    caption = page.locator("[data-testid='block-info']", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    return page.locator("label").filter(has=caption).locator("textarea, input").filter(visible=True).first


def choose(page, label: str, option: str, multiselect: bool = False) -> None:
    """Pick ``option`` in the Gradio dropdown labelled ``label``."""
    box = textbox(page, label) if multiselect else dropdown(page, label)
    box.click()
    box.fill(option)
    page.get_by_role("option", name=option, exact=True).filter(visible=True).first.click()
    page.keyboard.press("Escape")


def set_number(page, elem_id: str, value) -> None:
    """Type ``value`` into the number box of our control ``#elem_id`` (slider or number)."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.blur()


def set_slider(page, label: str, value) -> None:
    """Type ``value`` into the number box of upstream's slider labelled ``label``."""
    box = page.get_by_label(f"number input for {label}", exact=True).filter(visible=True).first
    box.fill(str(value))
    box.blur()


def output_text(page) -> str:
    """The Train tab's output box (below the buttons)."""
    return page.locator("[data-testid='markdown']").filter(has_text=re.compile("llamafactory-cli|Running|Finished|Failed")).first.inner_text()


def parse_preview(text: str) -> dict[str, str]:
    """``--key value`` lines of LlamaBoard's command preview as a dict."""
    return dict(re.findall(r"--(\w+) ([^\n\\]*?)\s*\\?$", text, flags=re.MULTILINE))


def test_mod_dpo_in_llamaboard(webui, tiny_omni, say):
    from playwright.sync_api import expect, sync_playwright

    # expect() has its own 5 s default, apart from the page's; a page under load (the other xdist
    # worker training) took longer than that to render in a CI-like run
    expect.set_options(timeout=TIMEOUT_MS)

    url, workdir = webui
    report: dict[str, object] = {}
    started = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            expect(dropdown(page, "Model name")).to_be_visible()

            # model: a Qwen2.5-Omni entry (template qwen2_omni), its path replaced by the tiny model
            choose(page, "Model name", MODEL_NAME)
            expect(textbox(page, "Model path")).to_have_value(f"Qwen/{MODEL_NAME}")
            expect(dropdown(page, "Chat template")).to_have_value("qwen2_omni")
            textbox(page, "Model path").fill(str(tiny_omni))
            choose(page, "Finetuning method", "full")

            # stage: MoD-DPO reveals its accordion
            expect(page.locator("#groundpo-mod_dpo-tab")).to_have_count(0)
            choose(page, "Stage", "MoD-DPO")
            accordion = page.locator("#groundpo-mod_dpo-tab")
            expect(accordion).to_be_visible()
            expect(accordion).to_contain_text("MoD-DPO configurations")
            for text in ("β (pref_beta)", "β_inv", "β_sens", "γ_LPD", "τ reading", "Corruption", "Diffusion steps"):
                expect(accordion).to_contain_text(text)
            expect(page.locator("#groundpo-mod_dpo-pref_beta input[type=number]")).to_have_value("0.1")
            expect(page.locator("#groundpo-mod_dpo-mod_diffusion_steps input[type=number]")).to_have_value("500")

            # data: the repository's data folder; pair-data filtering offers the ranking dataset
            textbox(page, "Data dir").fill(str(DATA_DIR))
            choose(page, "Dataset", "demo_mod_dpo", multiselect=True)

            # a short CPU run
            textbox(page, "Learning rate").fill("5e-3")
            textbox(page, "Epochs").fill("2.0")  # 40 steps: the monitor (every 2 s) sees the run
            choose(page, "Compute type", "fp32")
            set_slider(page, "Cutoff length", 512)
            set_slider(page, "Gradient accumulation", 1)
            page.get_by_text("Extra configurations", exact=True).filter(visible=True).first.click()
            textbox(page, "Extra arguments").fill(json.dumps(EXTRA_ARGS))
            page.get_by_text("Multimodal configurations", exact=True).filter(visible=True).first.click()
            textbox(page, "Image max pixels").fill("56*56")
            textbox(page, "Video max pixels").fill("56*56")

            # MoD-DPO hyper-parameters
            set_number(page, "groundpo-mod_dpo-mod_beta_inv", 0.03)
            set_number(page, "groundpo-mod_dpo-mod_gamma_lpd", 0.05)
            expect(page.locator("#groundpo-mod_dpo-mod_beta_inv input[type=range]")).to_have_value("0.03")
            expect(page.locator("#groundpo-mod_dpo-mod_gamma_lpd input[type=range]")).to_have_value("0.05")

            ARTIFACTS.mkdir(exist_ok=True)
            accordion.scroll_into_view_if_needed()
            accordion.screenshot(path=str(SCREENSHOT))
            say(f"\n[webui] screenshot of the MoD-DPO controls: {SCREENSHOT}")

            # preview
            page.get_by_role("button", name="Preview command", exact=True).click()
            preview = page.locator("[data-testid='markdown']").filter(has_text="llamafactory-cli train").first
            expect(preview).to_contain_text("--stage mod_dpo")
            command = parse_preview(preview.inner_text())
            say(f"[webui] preview: {({k: v for k, v in command.items() if k == 'stage' or k.startswith(('mod_', 'pref_'))})}")
            assert command["stage"] == "mod_dpo"
            assert command["mod_beta_inv"] == "0.03"
            assert command["mod_gamma_lpd"] == "0.05"
            assert command["pref_beta"] == "0.1" and command["mod_beta_sens"] == "0.05"
            assert command["model_name_or_path"] == str(tiny_omni) and command["template"] == "qwen2_omni"
            assert command["dataset"] == "demo_mod_dpo"

            # save, change, load: the saved values come back
            page.get_by_role("button", name="Save arguments", exact=True).click()
            expect(page.get_by_text("Arguments have been saved at").filter(visible=True).first).to_be_visible()
            set_number(page, "groundpo-mod_dpo-mod_beta_inv", 0.07)
            expect(page.locator("#groundpo-mod_dpo-mod_beta_inv input[type=range]")).to_have_value("0.07")
            page.get_by_role("button", name="Load arguments", exact=True).click()
            expect(page.get_by_text("Arguments have been restored.").filter(visible=True).first).to_be_visible()
            expect(page.locator("#groundpo-mod_dpo-mod_beta_inv input[type=range]")).to_have_value("0.03")
            expect(page.locator("#groundpo-mod_dpo-mod_gamma_lpd input[type=range]")).to_have_value("0.05")
            expect(accordion).to_be_visible()

            # start, then follow LlamaBoard's monitor until the run ends
            output_dir = workdir / "saves" / MODEL_NAME / "full" / dropdown(page, "Output dir").input_value()
            page.get_by_role("button", name="Start", exact=True).click()
            progress_seen, plot_seen, text = set(), False, ""
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while time.monotonic() < deadline:
                body = page.locator("body").inner_text()
                progress_seen.update(re.findall(r"Running (\d+/\d+)", body))
                plot_seen = plot_seen or page.locator("[data-testid='matplotlib'] img").count() > 0
                text = output_text(page)
                if text.startswith(("Finished.", "Failed.")):
                    break
                page.wait_for_timeout(250)
            else:
                pytest.fail(f"the run did not finish within {RUN_TIMEOUT_S}s; output box:\n{text[-3000:]}")
            assert text.startswith("Finished."), f"the run failed:\n{text[-4000:]}"
            report["progress seen"] = sorted(progress_seen, key=lambda s: int(s.split("/")[0]))
            if not plot_seen:  # the last monitor update may still be rendering its figure
                try:
                    expect(page.locator("[data-testid='matplotlib'] img").first).to_be_visible(timeout=30_000)
                    plot_seen = True
                except AssertionError:
                    pass
            report["loss plot shown"] = plot_seen
            assert plot_seen, "LlamaBoard never showed the loss curve"
            assert progress_seen, "LlamaBoard never showed the progress bar"

            # the language can be switched with our stage selected
            current = "en"
            for lang in ("zh", "ja", "ko", "ru", "en"):
                choose(page, LANGUAGE_LABEL[current], lang)
                current = lang
                expect(accordion).to_contain_text(ACCORDION_TITLES[lang])
                expect(dropdown(page, STAGE_LABEL[lang])).to_have_value("MoD-DPO")
            expect(page.locator(".toast-body.error")).to_have_count(0)
        finally:
            browser.close()

    # the run: a checkpoint, our metrics in trainer_log.jsonl, our keys in the YAML it was started with
    assert output_dir.is_dir(), f"no output folder {output_dir}"
    checkpoints = sorted(p.name for p in output_dir.glob("checkpoint-*"))
    assert checkpoints, f"no checkpoint in {output_dir}: {sorted(p.name for p in output_dir.iterdir())}"
    assert (output_dir / checkpoints[0] / "model.safetensors").is_file()
    logs = [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text().splitlines()]
    assert any("mod/margin" in entry for entry in logs), logs[:2]
    assert any("loss" in entry for entry in logs)
    saved = (output_dir / "training_args.yaml").read_text()
    for line in ("stage: mod_dpo", "mod_beta_inv: 0.03", "mod_gamma_lpd: 0.05", "use_cpu: true"):
        assert re.search(rf"^{re.escape(line)}$", saved, flags=re.MULTILINE), f"{line!r} not in training_args.yaml"
    report.update(checkpoints=checkpoints, log_lines=len(logs), seconds=round(time.monotonic() - started))
    say(f"[webui] run: {report}")
