"""Headless Chromium for the browser tests, driven by Python Playwright, and a tiny HTTP server
that stands in for a SMART app's redirect URI.

The browser is Debian's `chromium` package (never `playwright install`, which downloads one).
When it is missing the tests are skipped, unless MEDISENTINEL_REQUIRE_BROWSER=1 (CI sets it):
then they fail, so that a CI machine without a browser cannot pass by skipping them."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = "/usr/bin/chromium"
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
REQUIRE_ENV = "MEDISENTINEL_REQUIRE_BROWSER"
INSTALL_HINT = "apt-get install -y --no-install-recommends chromium"


def browser_unavailable(reason: str) -> NoReturn:
    """Fail when the browser is required (CI), skip otherwise; both say why."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(
            f"{reason}; the browser tests cannot be skipped because {REQUIRE_ENV}=1 "
            f"(install it with: {INSTALL_HINT})",
            pytrace=False,
        )
    pytest.skip(f"{reason} (install it with: {INSTALL_HINT}; set {REQUIRE_ENV}=1 to fail instead)")


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    """One headless Chromium with a fresh profile (Playwright gives each launch its own
    temporary user-data dir and removes it on close)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        browser_unavailable(f"Chromium is not installed at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browser_unavailable(
            "the playwright Python package is not installed (pip install -e '.[test]')"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


CALLBACK_PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Back in the app</title></head>
<body><h1 id="callback">Back in the app</h1></body></html>
"""


class CallbackServer:
    """Answers GET /callback with a small page and records every request it receives (path
    with query), so a test can tell whether the authorization server redirected here."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        lock = threading.Lock()
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with lock:
                    requests.append(self.path)
                if urlsplit(self.path).path == "/callback":
                    self._reply(200, CALLBACK_PAGE)
                else:
                    self._reply(404, b"not found\n")

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.root = f"http://127.0.0.1:{self.port}"
        self.callback_url = f"{self.root}/callback"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> CallbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def callbacks(self) -> list[str]:
        """The requests that reached /callback (leaving out e.g. /favicon.ico)."""
        return [p for p in self.requests if urlsplit(p).path == "/callback"]
