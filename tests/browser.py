"""A real headless browser for tests (Debian's chromium), driven over the DevTools
protocol: open a page, wait for it to load, read what JavaScript sees, collect console
errors and failed loads, take a screenshot.

    with Browser() as browser:
        page = browser.open(path)        # a file: URL
        page.images                      # [(src prefix, complete, natural width)]
        page.errors                      # console errors, exceptions, failed loads
        page.screenshot(out_png)

``find_chromium()`` is None where no browser is installed (``FEDREPLAY_BROWSER`` names
one explicitly); CI installs Debian's ``chromium`` (.ci/run).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect


def find_chromium() -> str | None:
    named = os.environ.get("FEDREPLAY_BROWSER")
    if named:
        return named
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


class Page:
    def __init__(self, ws: Any, ids: itertools.count) -> None:
        self.ws, self.ids = ws, ids
        self.errors: list[str] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict[str, Any]) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value")) for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            self.errors.append("exception: " + p["exceptionDetails"].get("text", ""))
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            self.errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            self.errors.append(f"load failed: {p.get('errorText')}")

    def wait_for(self, event: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv(timeout=deadline - time.monotonic()))
            if msg.get("method") == event:
                return
            self._event(msg)
        raise TimeoutError(event)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    @property
    def images(self) -> list[tuple[str, bool, int]]:
        return [
            tuple(row)
            for row in self.evaluate(
                "Array.from(document.images).map(i => [i.src.slice(0, 22), i.complete, "
                "i.naturalWidth])"
            )
        ]

    def screenshot(self, path: Path) -> Path:
        height = self.evaluate("document.documentElement.scrollHeight")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=min(int(height), 16000),
            deviceScaleFactor=1,
            mobile=False,
        )
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path


class Browser:
    def __init__(self, executable: str | None = None) -> None:
        exe = executable or find_chromium()
        if exe is None:
            raise FileNotFoundError("no chromium found (install Debian's chromium)")
        self.exe = exe
        self.profile = tempfile.mkdtemp(prefix="fedreplay-chromium-")
        self.proc: subprocess.Popen[str] | None = None
        self.connections = contextlib.ExitStack()  # DevTools websockets, closed on exit

    def __enter__(self) -> Browser:
        self.proc = subprocess.Popen(
            [
                self.exe,
                "--headless=new",
                "--no-sandbox",  # CI runs as root
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 60
        for line in self.proc.stderr:
            if m := re.search(r"DevTools listening on ws://([\d.]+:\d+)/", line):
                self.address = m.group(1)
                break
            if time.monotonic() > deadline:
                break
        else:
            raise RuntimeError(f"{self.exe} exited before listening (code {self.proc.poll()})")
        return self

    def open(self, path: Path) -> Page:
        with urllib.request.urlopen(f"http://{self.address}/json/list", timeout=30) as resp:
            targets = json.load(resp)
        target = next(t for t in targets if t.get("type") == "page")
        ws = self.connections.enter_context(connect(target["webSocketDebuggerUrl"], max_size=None))
        page = Page(ws, itertools.count(1))
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.call(f"{domain}.enable")
        page.call("Page.navigate", url=path.resolve().as_uri())
        page.wait_for("Page.loadEventFired")
        return page

    def __exit__(self, *exc: object) -> None:
        self.connections.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)
