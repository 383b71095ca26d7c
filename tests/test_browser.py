"""The built book in a real browser: headless Chromium (Debian's ``chromium``) opens the landing
page, a results page, the claims page and the method page at 1,280 px and checks what a reader
would see: no table or figure wider than the main column, every image loaded, no console error,
MathJax rendered. A full-page screenshot of each goes to ``book/_build/screens/``.

The browser is driven over the DevTools protocol (``--remote-debugging-port``) with tornado's
websocket client (tornado comes with ipykernel). Without ``chromium`` the tests skip locally and
fail under CI (``CI`` or ``RAGREC_REQUIRE_BROWSER`` set): CI must install it (``.ci/run`` does).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.reproduce.smoke_book import smoke_book

pytestmark = pytest.mark.browser

SCREENS = Path(__file__).resolve().parents[1] / "book" / "_build" / "screens"
WIDTH, HEIGHT = 1280, 900
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
]
PAGES = {
    "landing": "intro.html",
    "results": "results/synthetic/early_exit.html",
    "claims": "results/synthetic/claims.html",
    "method": "method.html",
}


def browser_required() -> bool:
    """Under CI (``CI``, as CI services set it, or ``RAGREC_REQUIRE_BROWSER``) the tests must run."""
    return any(
        os.environ.get(name, "").lower() not in ("", "0", "false")
        for name in ("CI", "RAGREC_REQUIRE_BROWSER")
    )


def chromium_or_skip() -> str:
    """The chromium executable; a skip (a failure under CI) when it is absent."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "chromium is not installed: `apt-get install -y chromium` (Debian) to run the browser tests"
    if browser_required():
        pytest.fail(f"{message}; CI must install it (see .ci/run)")
    pytest.skip(message)


class Browser:
    """A headless Chromium and one page of it, driven over the DevTools protocol."""

    def __init__(self, executable: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="ragrec-chromium-")
        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.loop = asyncio.new_event_loop()
        self.ids = itertools.count(1)
        self.events: list[dict] = []
        self.socket = self.loop.run_until_complete(self._connect())

    def _port(self, timeout: float = 30.0) -> int:
        active = Path(self.profile) / "DevToolsActivePort"  # chromium writes its port here
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if active.exists() and active.read_text().strip():
                return int(active.read_text().split()[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode} before listening")
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    async def _connect(self):
        from tornado.httpclient import AsyncHTTPClient
        from tornado.websocket import websocket_connect

        port = self._port()
        targets = json.loads((await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/json/list")).body)
        page = next(t for t in targets if t["type"] == "page")
        return await websocket_connect(page["webSocketDebuggerUrl"], max_message_size=256 * 1024 * 1024)

    async def _call(self, method: str, params: dict | None = None) -> dict:
        call_id = next(self.ids)
        await self.socket.write_message(json.dumps({"id": call_id, "method": method, "params": params or {}}))
        while True:
            message = json.loads(await self.socket.read_message())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def call(self, method: str, params: dict | None = None, timeout: float = 60.0) -> dict:
        return self.loop.run_until_complete(asyncio.wait_for(self._call(method, params), timeout))

    def evaluate(self, expression: str, timeout: float = 60.0):
        """The value of a JavaScript expression (promises awaited)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> list[str]:
        """Load ``url`` at :data:`WIDTH` px and wait until it and its fonts and math are settled;
        returns the console errors and uncaught exceptions it raised."""
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.call(domain)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        self.events.clear()
        self.call("Page.navigate", {"url": url})
        self.evaluate(
            "new Promise(r => { const done = () => r(true); "
            "document.readyState === 'complete' ? done() : window.addEventListener('load', done); })"
        )
        self.evaluate("document.fonts.ready.then(() => true)")
        self.evaluate(
            "window.MathJax && MathJax.startup && MathJax.startup.promise ? MathJax.startup.promise.then(() "
            "=> true) : true"
        )
        self.call("Runtime.evaluate", {"expression": "1"})  # flush events logged meanwhile
        return [_describe(e) for e in self.events if _is_error(e)]

    def screenshot(self, path: Path) -> None:
        """A full-page PNG of the open page."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": min(height, 16000), "deviceScaleFactor": 1, "mobile": False},
        )
        shot = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )

    def close(self) -> None:
        self.loop.run_until_complete(self._close_socket())
        self.loop.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    async def _close_socket(self) -> None:
        self.socket.close()


def _is_error(event: dict) -> bool:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        return True
    if method == "Runtime.consoleAPICalled":
        return params.get("type") in {"error", "assert"}
    return method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error"


def _describe(event: dict) -> str:
    params = event.get("params", {})
    if "entry" in params:
        return f"{params['entry'].get('text')} ({params['entry'].get('url', '')})"
    if "exceptionDetails" in params:
        return str(
            params["exceptionDetails"].get("exception", {}).get("description") or params["exceptionDetails"]
        )
    return " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))


LAYOUT = """(() => {
  const main = document.querySelector('article.bd-article') || document.querySelector('main');
  const box = main.getBoundingClientRect();
  // a table or figure must fit; a code listing may scroll inside itself but not past the column
  const fits = el => el.tagName === 'PRE' || el.scrollWidth <= el.clientWidth + 1;
  const wide = [...main.querySelectorAll('table, img, pre, .ragrec-table-wrap, div.output, div.cell_output')]
    .filter(el => el.getBoundingClientRect().width > 0)
    .filter(el => el.getBoundingClientRect().right > box.right + 1 || !fits(el))
    .map(el => `${el.tagName.toLowerCase()}.${el.className}: ` +
               `right ${Math.round(el.getBoundingClientRect().right)} ` +
               `> ${Math.round(box.right)} or scrolls ${el.scrollWidth} > ${el.clientWidth}`);
  const images = [...document.images]
    .map(img => ({src: img.getAttribute('src'), ok: img.complete && img.naturalWidth > 0}));
  return {main: {width: box.width, scroll: main.scrollWidth, client: main.clientWidth}, wide,
          images, tables: main.querySelectorAll('table.ragrec-table').length,
          math: document.querySelectorAll('mjx-container').length,
          rawMath: [...main.querySelectorAll('.math')]
            .filter(el => !el.querySelector('mjx-container')).length};
})()"""


@pytest.mark.parametrize(
    ("env", "outcome"),
    [
        ({}, pytest.skip.Exception),
        ({"CI": "false"}, pytest.skip.Exception),
        ({"CI": "true"}, pytest.fail.Exception),
        ({"RAGREC_REQUIRE_BROWSER": "1"}, pytest.fail.Exception),
    ],
    ids=["local", "CI=false", "CI", "required"],
)
def test_without_chromium_the_tests_skip_locally_and_fail_under_ci(monkeypatch, env, outcome):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    for name in ("CI", "RAGREC_REQUIRE_BROWSER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(outcome, match="apt-get install -y chromium"):
        chromium_or_skip()


@pytest.fixture(scope="module")
def browser():
    executable = chromium_or_skip()
    opened = Browser(executable)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def pages(browser, tmp_path_factory):
    """Each page of :data:`PAGES` opened once: its console errors and its layout."""
    html = smoke_book(tmp_path_factory).html
    seen = {}
    for name, page in PAGES.items():
        errors = browser.open((html / page).as_uri())
        seen[name] = {"errors": errors, **browser.evaluate(LAYOUT)}
        browser.screenshot(SCREENS / f"{name}.png")
    return seen


@pytest.mark.parametrize("name", list(PAGES))
def test_the_page_raises_no_console_error(pages, name):
    assert pages[name]["errors"] == [], f"{PAGES[name]}: {pages[name]['errors']}"


@pytest.mark.parametrize("name", list(PAGES))
def test_nothing_is_wider_than_the_main_column_at_1280_px(pages, name):
    layout = pages[name]
    assert layout["main"]["scroll"] <= layout["main"]["client"] + 1, (
        f"{PAGES[name]}: the main column scrolls sideways"
    )
    assert layout["wide"] == [], f"{PAGES[name]}: {layout['wide']}"


@pytest.mark.parametrize("name", list(PAGES))
def test_every_image_loaded(pages, name):
    broken = [img["src"] for img in pages[name]["images"] if not img["ok"]]
    assert broken == [], f"{PAGES[name]}: images not loaded: {broken}"


def test_the_landing_page_shows_the_verdicts_and_the_headline_figure(pages):
    assert pages["landing"]["tables"] >= 2, "the verdict table or the differences table is missing"
    assert pages["landing"]["images"], "the headline figure is missing"


def test_mathjax_renders_the_method_page(pages):
    assert pages["method"]["math"] > 5, "MathJax rendered no formula"
    assert pages["method"]["rawMath"] == 0, "some formulas are left as TeX source"


def test_a_screenshot_of_each_page_is_kept(pages):
    for name in PAGES:
        shot = SCREENS / f"{name}.png"
        assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot
