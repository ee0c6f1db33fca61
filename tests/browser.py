"""Headless Chromium for the report pages: the DOM after the page's scripts ran."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


BROWSER = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=10000"]  # fmt: skip


def rendered(page: Path) -> tuple[str, list[str]]:
    """(the DOM, the console errors) of `page` once its charts are drawn."""
    dom = subprocess.run(
        [chromium() or "chromium", *BROWSER, "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    return dom.stdout, [line for line in console if "error" in line.lower() or "Uncaught" in line]


def chart_drawn(dom: str, chart: str) -> bool:
    start = dom.index(f'id="{chart}"')
    return "main-svg" in dom[start : start + 20_000]
