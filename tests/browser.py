"""Headless Chromium for the report pages: the DOM after the page's scripts ran, or a page
driven over the DevTools protocol (`DevTools`) to read what its charts hold."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import websocket


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


BROWSER = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=10000"]  # fmt: skip


def rendered(page: Path, query: str = "") -> tuple[str, list[str]]:
    """(the DOM, the console errors) of `page` (with `query`, e.g. "?q=x") once its charts are
    drawn."""
    dom = subprocess.run(
        [chromium() or "chromium", *BROWSER, "--dump-dom", page.as_uri() + query],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    return dom.stdout, [line for line in console if "error" in line.lower() or "Uncaught" in line]


def chart_drawn(dom: str, chart: str) -> bool:
    start = dom.index(f'id="{chart}"')
    return "main-svg" in dom[start : start + 20_000]


_DRAWN = (
    "document.readyState === 'complete' && [...document.querySelectorAll('.js-plotly-plot')]"
    ".every(gd => gd._fullLayout && gd.querySelector('.main-svg'))"
)


class DevTools:
    """One headless Chromium page driven over the Chrome DevTools protocol (its websocket, with
    websocket-client): open a file, wait for its plotly charts, read values the page's scripts
    made, take a full-page screenshot.  The browser is stopped by its own process group."""

    def __init__(self, profile: Path, *, width: int = 1200) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={profile}",
             f"--window-size={width},900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.errors: list[str] = []  # exceptions thrown and console errors on the page
        self._id = 0
        try:
            self.ws = websocket.create_connection(self._page_socket(profile), timeout=60)
            self.call("Runtime.enable")
            self.call("Page.enable")
        except BaseException:
            self.close()
            raise

    def _page_socket(self, profile: Path) -> str:
        """The page's websocket: Chromium writes its port to DevToolsActivePort once up."""
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if active.exists() and active.read_text().count("\n") >= 1:
                port = active.read_text().split("\n")[0]
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
                pages = [t for t in targets if t["type"] == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.1)
        raise TimeoutError("Chromium did not open its DevTools port within 60 s")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._note(message)

    def _note(self, event: dict[str, Any]) -> None:
        params = event.get("params", {})
        if event.get("method") == "Runtime.exceptionThrown":
            self.errors.append(str(params["exceptionDetails"].get("text")))
        elif event.get("method") == "Runtime.consoleAPICalled" and params["type"] == "error":
            self.errors.append(" ".join(str(a.get("value")) for a in params["args"]))

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)  # fmt: skip
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression[:60]}…: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def open(self, page: Path, *, charts_within: float = 60.0) -> None:
        """Load the page and wait until every plotly chart on it is drawn."""
        self.call("Page.navigate", url=page.as_uri())
        drawn = f"location.href === {json.dumps(page.as_uri())} && {_DRAWN}"
        deadline = time.monotonic() + charts_within
        while not self.evaluate(drawn):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{page.name}: charts not drawn within {charts_within:g} s")
            time.sleep(0.2)

    def screenshot(self, path: Path) -> None:
        """The whole page, not only the window."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip=clip)  # fmt: skip
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own group: the renderers with it
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)

    def __enter__(self) -> DevTools:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
