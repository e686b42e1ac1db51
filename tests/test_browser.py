"""06_play.ipynb in a real browser: JupyterLab on loopback, headless Chromium driven by Playwright, a stroke drawn with the mouse.

Needs Chromium (`chromium` on PATH: Debian's apt-get install chromium), Node and
playwright-core (npm ci --prefix tests/browser); .ci/run installs them. Without
them the test skips with one line (fails where MNIST_STRICT=1). The notebook runs from a copy in a
temporary folder, so nothing the browser saves touches notebooks/. The
screenshot goes to the test's temporary folder; `make screenshot` copies it to
figures/play.png (set MNIST_SCREENSHOT to a path to do the same by hand).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import skip_or_fail

from mnist_lib.core.paths import NOTEBOOKS_DIR, REPO_ROOT

pytestmark = pytest.mark.slow  # JupyterLab and a headless browser: make test-fast leaves it out

BROWSER_DIR = REPO_ROOT / "tests" / "browser"
CHROMIUM = shutil.which("chromium")  # Debian's /usr/bin/chromium; play.mjs is handed the path found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a copy of 06_play.ipynb on loopback: (url, token); stopped afterwards."""
    missing = [what for what, ok in (("chromium on PATH (apt-get install chromium)", CHROMIUM is not None),
               ("node (apt-get install nodejs)", shutil.which("node") is not None),
               ("playwright-core (npm ci --prefix tests/browser)", (BROWSER_DIR / "node_modules" / "playwright-core").is_dir())) if not ok]  # fmt: skip
    if missing:
        skip_or_fail("the browser test needs " + ", ".join(missing))
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy(NOTEBOOKS_DIR / "06_play.ipynb", work)
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    env["JUPYTER_PATH"] = str(Path(sys.prefix) / "share" / "jupyter")  # the project's kernel and widget extensions
    # a fresh settings folder, with JupyterLab's news pop-up off: no network here, and a clean screenshot
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "workspaces")
    log = open(tmp_path / "lab.log", "w")  # noqa: SIM115 - open while the server runs
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={work}", "--LabApp.expose_app_in_browser=True", "--allow-root"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail(f"JupyterLab did not start; see {tmp_path / 'lab.log'}:\n" + (tmp_path / "lab.log").read_text()[-2000:])
                time.sleep(0.5)
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_drawing_a_one_in_the_browser_makes_the_network_say_one(lab, tmp_path):
    url, token = lab
    shot = tmp_path / "play.png"
    proc = subprocess.run(
        ["node", str(BROWSER_DIR / "play.mjs"), url, token, str(shot)],
        capture_output=True, text=True, timeout=240, env={**os.environ, "CHROMIUM": CHROMIUM},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["before"] == [0.0] * 10  # the blank pad after run-all: no answer yet
    assert result["answer"]["cls"] == 1, result["answer"]  # a vertical stroke is a one
    assert "The network says" in result["answer"]["text"]
    after = result["after"]
    assert len(after) == 10 and abs(sum(after) - 1) < 0.01 and max(after) == after[1] > 0.5  # the chart moved, to class 1
    assert shot.stat().st_size > 10_000
    if os.environ.get("MNIST_SCREENSHOT"):
        shutil.copy(shot, os.environ["MNIST_SCREENSHOT"])
