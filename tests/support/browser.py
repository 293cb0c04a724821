"""Headless Chromium for the dashboard's browser tests: Debian's package, driven by Playwright."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

CHROMIUM = shutil.which("chromium")
# Flags that keep Chromium off the (closed) network and quiet in a sandbox-less container.
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
# Marks for a browser test module: skipped, saying why, where the browser is missing.
BROWSER_MARKS = [
    pytest.mark.anyio,
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's `chromium` on PATH"),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="needs the `playwright` Python package (pip install playwright)",
    ),
]
