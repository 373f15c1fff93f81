"""Fixtures for the end-to-end browser tests: a real JupyterLab server and Debian's headless Chromium.

``lab`` starts ``jupyter lab`` from this interpreter on a free loopback port with token auth, serving a
temporary copy of ``notebooks/`` (so runs leave no checkpoints or outputs in the repository), in the
``smoke`` profile and with a temporary ``SHRINKVIZ_CACHE``; its kernels are this interpreter's ipykernel,
so they import the installed project. JupyterLab's per-user state (settings, workspaces, runtime files)
is also temporary, with cell windowing off (every cell in the DOM) and no news fetching.

``browser_page`` launches /usr/bin/chromium through Playwright with a fresh profile and no network
services, and collects console messages and page errors. A ``watchdog`` bounds everything: when the
budget runs out it kills the server and the Playwright driver (the test then fails instead of hanging),
and a last-resort faulthandler timer ends the process if even that does not unblock it.
"""

from __future__ import annotations

import faulthandler
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Whole-test budget (server start, notebook run, checks, shutdown); the watchdog enforces it.
BUDGET_S = float(os.environ.get("SHRINKVIZ_BROWSER_TIMEOUT", "600"))
SERVER_START_S = 120.0
SHUTDOWN_S = 30.0

# anywidget 0.11 gives each widget model 2 s to import its ES module; past that it silently drops every
# later message to the model (even though the module does load), so a FigureWidget stays empty or frozen.
# plotly 7 ships a ~5 MB module per FigureWidget, which takes longer than 2 s to import on a loaded
# 2-core machine (seen here: empty plots, dead sliders, no console error). Lengthening that one timeout in
# the test browser keeps the test about shrinkviz's widgets rather than about the machine's load.
ANYWIDGET_INIT_TIMEOUT_PATCH = """
(() => {
  const timeout = AbortSignal.timeout.bind(AbortSignal);
  AbortSignal.timeout = (ms) => timeout(ms === 2000 ? 120000 : ms);
})();
"""


def log(msg: str) -> None:
    """Progress lines in the test output (shown by pytest on failure or with -s)."""
    print(f"[browser {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class LabServer:
    """A running ``jupyter lab``: base ``url``, ``token``, served ``root`` and the kernels' ``cache``."""

    root: Path
    cache: Path
    state: Path
    url: str = ""
    token: str = ""
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    _log_file: object = field(default=None, repr=False)

    def api(self, method: str, path: str, timeout: float = 20.0) -> object:
        req = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def start(self) -> None:
        settings = self.state / "settings"
        for ext, values in {
            # Every cell attached to the DOM, so the test sees all outputs without scrolling tricks.
            "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
            # No news / update checks: nothing may try to reach the internet.
            "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        }.items():
            f = settings / f"{ext}.jupyterlab-settings"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(values))
        for d in ("workspaces", "config", "runtime", "ipython"):
            (self.state / d).mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            SHRINKVIZ_PROFILE="smoke",
            SHRINKVIZ_CACHE=str(self.cache),
            JUPYTER_CONFIG_DIR=str(self.state / "config"),
            JUPYTER_RUNTIME_DIR=str(self.state / "runtime"),
            IPYTHONDIR=str(self.state / "ipython"),
            PYTHONUNBUFFERED="1",
        )
        self.log_path = self.state / "server.log"
        self._log_file = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        last_error = ""
        for _attempt in range(3):  # a port taken between probing and binding: try another
            port, self.token = _free_port(), secrets.token_hex(16)
            self.url = f"http://127.0.0.1:{port}"
            cmd = [
                sys.executable,
                "-m",
                "jupyter",
                "lab",
                "--no-browser",
                "--allow-root",
                "--ip=127.0.0.1",
                f"--port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root}",
                f"--LabApp.user_settings_dir={settings}",
                f"--LabApp.workspaces_dir={self.state / 'workspaces'}",
                "--LabApp.extension_manager=readonly",
            ]
            # Own process group: shutdown (and the watchdog) can signal the server and its kernels.
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=self.root,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            deadline = time.monotonic() + SERVER_START_S
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last_error = f"server exited with {self.proc.returncode}"
                    break
                try:
                    self.api("GET", "/api/status", timeout=5)
                    log(f"JupyterLab up at {self.url} (pid {self.proc.pid})")
                    return
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                    time.sleep(0.5)
            else:
                self.stop()
                raise RuntimeError(
                    f"JupyterLab did not answer within {SERVER_START_S:.0f} s\n{self.log_tail()}"
                )
        raise RuntimeError(f"JupyterLab failed to start: {last_error}\n{self.log_tail()}")

    def stop(self) -> None:
        """Shut kernels down, ask the server to stop, then SIGTERM / SIGKILL its group on timeout."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                for k in self.api("GET", "/api/kernels", timeout=10) or []:
                    self.api("DELETE", f"/api/kernels/{k['id']}", timeout=20)
                self.api("POST", "/api/shutdown", timeout=10)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
                log(f"clean shutdown request failed ({e}); terminating")
            try:
                proc.wait(timeout=SHUTDOWN_S)
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    _kill_group(proc, signal.SIGKILL)
                    proc.wait(timeout=15)
            log(f"JupyterLab stopped (exit {proc.returncode})")
        if proc is not None:
            # Leftovers of the server's group. Kernels run in sessions of their own: they were shut down
            # above, or exit by themselves once the server is gone (ipykernel watches its parent).
            _kill_group(proc, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


class Watchdog:
    """Fails the test instead of letting it hang: on expiry, kill what blocks the test thread."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.fired = False
        self.server: LabServer | None = None
        self._timer = threading.Timer(budget_s, self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()
        # Last resort if killing the children does not unblock the test thread: dump stacks and exit.
        faulthandler.dump_traceback_later(self.budget_s + 120, exit=True)

    def cancel(self) -> None:
        self._timer.cancel()
        faulthandler.cancel_dump_traceback_later()

    def _fire(self) -> None:
        self.fired = True
        log(f"WATCHDOG: {self.budget_s:.0f} s budget exhausted; killing JupyterLab and the Playwright driver")
        if self.server is not None and self.server.proc is not None:
            _kill_group(self.server.proc, signal.SIGKILL)
        try:  # the Playwright driver is our child; killing it makes every pending Playwright call raise
            import psutil

            for child in psutil.Process().children(recursive=True):
                try:
                    if "playwright" in " ".join(child.cmdline()):
                        child.kill()
                except psutil.Error:  # exited meanwhile, or a zombie
                    pass
        except Exception as e:  # noqa: BLE001 - best effort, the faulthandler timer backs it up
            log(f"WATCHDOG: could not kill the Playwright driver: {e}")


@pytest.fixture
def watchdog() -> Iterator[Watchdog]:
    dog = Watchdog(BUDGET_S)
    dog.start()
    try:
        yield dog
    finally:
        dog.cancel()


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium; skipped only where it is absent and apt cannot install it."""
    if not CHROMIUM.exists():
        if shutil.which("apt-get") is None:
            pytest.skip(f"{CHROMIUM} is absent and apt-get is unavailable to install it")
        pytest.fail(f"{CHROMIUM} is absent; `bash scripts/setup.sh` installs it (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
def lab(tmp_path: Path, watchdog: Watchdog) -> Iterator[LabServer]:
    root = tmp_path / "notebooks"
    root.mkdir()
    for nb in sorted(NOTEBOOKS.glob("*.ipynb")):
        shutil.copy2(nb, root / nb.name)
    server = LabServer(root=root, cache=tmp_path / "cache", state=tmp_path / "jupyter")
    watchdog.server = server
    try:
        server.start()
        yield server
    finally:
        server.stop()


@dataclass
class Console:
    """Console messages (type, text, location) and uncaught page errors collected from the page."""

    messages: list[tuple[str, str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


@pytest.fixture
def browser_page(chromium: Path, tmp_path: Path, watchdog: Watchdog):
    """A Playwright page in headless Chromium (fresh profile) and the ``Console`` it reports to."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed; `bash scripts/setup.sh` installs it (extra `browser`)")
    console = Console()
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1100},
            timeout=90_000,
        )
        try:
            context.set_default_timeout(60_000)
            page = context.pages[0] if context.pages else context.new_page()
            page.add_init_script(ANYWIDGET_INIT_TIMEOUT_PATCH)

            def on_console(msg) -> None:
                loc = msg.location or {}
                console.messages.append(
                    (msg.type, msg.text, f"{loc.get('url', '')}:{loc.get('lineNumber', '')}")
                )

            page.on("console", on_console)
            page.on("pageerror", lambda err: console.page_errors.append(str(err)))
            yield page, console
        finally:
            try:
                context.close()
            except Exception as e:  # noqa: BLE001 - the driver may already be gone (watchdog)
                log(f"closing Chromium failed: {e}")
