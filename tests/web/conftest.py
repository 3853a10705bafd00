"""A real ``tunesmith ui`` (and a real ``tunesmith serve`` for its playground) on loopback, driven by Debian's
Chromium through Selenium; screenshots of every page go to ``test-artifacts/ui/``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.run_helpers import make_tiny_project, run_tiny
from tests.serve.conftest import KEY, ServeProcess

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.browser


def pytest_collection_modifyitems(items):
    if CHROMIUM and DRIVER:
        return
    reason = ("needs Chromium and its driver from Debian's packages (apt-get install chromium chromium-driver); "
              ".ci/run installs them")
    for item in items:
        if "tests/web/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.skip(reason=reason))


class UiProcess:
    """``tunesmith ui --port 0 --json`` as a user starts it."""

    def __init__(self, project: Path, *args: str):
        env = {**os.environ, "TUNESMITH_API_KEY": KEY}
        self.proc = subprocess.Popen([sys.executable, "-m", "tunesmith", "ui", "--project", str(project), "--port", "0",
                                      "--json", *args], cwd=project, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"ui did not start: {self.proc.stderr.read()}")
        self.url = json.loads(line)["url"].rstrip("/")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


@pytest.fixture(scope="session")
def ui_project(tmp_path_factory, tiny_model_dir):
    """A project with two finished runs (one production), a monitoring report and rows waiting for review."""
    from tunesmith.config import DedupConfig, MonitorConfig
    from tunesmith.monitor.report import write_monitor_report
    from tunesmith.monitor.requestlog import LoggedRequest, RequestLog, read_log
    from tunesmith.monitor.signals import monitor_traffic
    from tunesmith.runs.aliases import promote

    folder = tmp_path_factory.mktemp("ui")
    project = make_tiny_project(folder, tiny_model_dir)
    a = run_tiny(project, "model.precision=fp32", "project.seed=1")
    b = run_tiny(project, "model.precision=fp32", "project.seed=2", "train.lr=0.05")
    promote(folder / "runs", a, reason="first release")
    log = RequestLog(folder / "logs" / "requests.sqlite")
    for i in range(40):
        log.record(LoggedRequest(id=f"chatcmpl-{i}", endpoint="chat.completions", model="production", run_id=a.id,
                                 messages=[{"role": "user", "content": f"a long message about something new {i} " * 3}],
                                 answer="card_arrival", prompt_tokens=9, completion_tokens=2, latency_ms=3,
                                 first_token_ms=2, finish_reason="stop", label="card_arrival", probability=0.5)).result()
    log.close()
    report = monitor_traffic(a, read_log(folder / "logs" / "requests.sqlite"), MonitorConfig(min_requests=10),
                             DedupConfig(near=False), alias="production")
    write_monitor_report(report, folder / "monitor")
    rows = [{"messages": [{"role": "user", "content": "where is my card?"}, {"role": "assistant", "content": "pin_blocked"}],
             "needs_review": True, "provenance": {"method": "request_log", "answer": "pin_blocked"}},
            {"messages": [{"role": "user", "content": "asdf qwerty"}, {"role": "assistant", "content": "card_arrival"}],
             "needs_review": True, "provenance": {"method": "request_log"}}]
    (folder / "traffic.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder, a, b


@pytest.fixture(scope="session")
def served(ui_project):
    folder, a, b = ui_project
    proc = ServeProcess(folder, "--run", "production", "--run", b.id)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def ui(ui_project, served):
    folder, _, _ = ui_project
    proc = UiProcess(folder, "--serve", served.url)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def shot(driver, name: str) -> Path:
    """A screenshot of the page as it is, as a test artefact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1280, min(max(900, height + 40), 3000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1100)
    return path


def wait_for(condition, timeout: float = 30, every: float = 0.2):
    """Poll ``condition`` until it returns something truthy; that value."""
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(every)
