"""A real ``tunesmith serve`` process on loopback, serving two tiny runs, for the server's tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.run_helpers import make_tiny_project, run_tiny

KEY, ADMIN = "test-key-123", "admin-key-456"


class ServeProcess:
    """``tunesmith serve ... --port 0 --json`` as a user starts it; ``url`` is read from its start-up line."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
        self.env = {**os.environ, "TUNESMITH_API_KEY": KEY, "TUNESMITH_ADMIN_KEY": ADMIN, **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "tunesmith", "serve", "--port", "0", "--json", *args],
                                     cwd=cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + timeout
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"serve did not start: {self.proc.stderr.read()}")
        assert time.time() < deadline
        self.info = json.loads(line)
        self.url = self.info["url"]

    def client(self, key: str | None = KEY, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.url, api_key=key or "none", max_retries=0, **kwargs)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            for stream in (self.proc.stdout, self.proc.stderr):
                stream.close()


@pytest.fixture(scope="session")
def tiny_runs(tiny_model_dir, tmp_path_factory):
    """Two finished classification runs of the tiny model in one project (fp32, so answers are exact)."""
    folder = tmp_path_factory.mktemp("served")
    project = make_tiny_project(folder, tiny_model_dir)
    a = run_tiny(project, "model.precision=fp32", "project.seed=1")
    b = run_tiny(project, "model.precision=fp32", "project.seed=2", "train.lr=0.05")
    return folder, a, b


@pytest.fixture(scope="module")
def server(tiny_runs):
    folder, a, b = tiny_runs
    proc = ServeProcess(folder, "--run", a.id, "--run", b.id)
    yield proc
    proc.stop()
