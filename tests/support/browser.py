"""Open an HTML report in headless Chromium (Debian's) and read back the rendered DOM."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # we run as root in the test sandbox
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    # This machine has no network: without these Chromium keeps trying to reach Google.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("chromium not installed: run `make system-deps`")
    return found


def render_dom(page: Path, screenshot: Path | None = None) -> str:
    """The DOM after Chromium loaded `page` from disk (scripts run, no network)."""
    # Chromium's helper processes may still write the profile as it is removed: its leftovers are not a failure.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        args = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        if screenshot is not None:
            subprocess.run(
                [*args, f"--screenshot={screenshot}", "--window-size=1280,2400", page.as_uri()],
                capture_output=True,
                timeout=120,
                check=True,
            )
        result = subprocess.run([*args, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or "<html" not in result.stdout.lower():
        raise RuntimeError(f"chromium failed on {page}: {result.stderr[-2000:]}")
    return result.stdout


@dataclass
class Section:
    """What an element with an id contains, once rendered."""

    tag: str
    text: list[str] = field(default_factory=list)
    svg_shapes: int = 0
    table_rows: int = 0


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, Section] = {}
        self._open: list[tuple[str, str | None]] = []  # (tag, id) stack

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element_id = dict(attrs).get("id")
        if element_id:
            self.sections[element_id] = Section(tag)
        if tag in ("path", "rect", "circle", "line", "polyline", "polygon"):
            for section in self._active():
                section.svg_shapes += 1
        if tag == "tr":
            for section in self._active():
                section.table_rows += 1
        if tag not in (
            "br",
            "img",
            "meta",
            "link",
            "input",
            "hr",
            "path",
            "rect",
            "circle",
            "line",
            "polyline",
            "polygon",
        ):
            self._open.append((tag, element_id))

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index][0] == tag:
                del self._open[index:]
                break

    def handle_data(self, data: str) -> None:
        if data.strip():
            for section in self._active():
                section.text.append(data.strip())

    def _active(self) -> list[Section]:
        return [self.sections[i] for _, i in self._open if i and i in self.sections]


def sections(dom: str) -> dict[str, Section]:
    parser = _Sections()
    parser.feed(dom)
    return parser.sections


def screenshot_after_login(
    login_url: str, fields: dict[str, str], page_url: str, screenshot: Path, settle_seconds: float = 8.0
) -> str:
    """Log in through a page's own form, open `page_url`, save a PNG; returns the page's visible text.

    Drives headless Chromium over the DevTools protocol (websocket-client, a dependency of the
    Kubernetes client): a web app behind a login form cannot be opened with `--screenshot` alone.
    """
    import base64
    import json
    import time
    import urllib.request

    import websocket

    from support.kube import free_port

    port = free_port()
    # Chromium's helper processes may still write the profile as it is removed: its leftovers are not a failure.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = subprocess.Popen(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
             "--window-size=1400,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                        page = next(t for t in json.loads(response.read()) if t["type"] == "page")
                    break
                except (OSError, StopIteration):
                    if time.monotonic() > deadline:
                        raise RuntimeError("chromium's DevTools endpoint did not come up") from None
                    time.sleep(0.5)
            socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60)
            ids = iter(range(1, 10_000))

            def call(method: str, **params: object) -> dict:
                message_id = next(ids)
                socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
                while True:
                    reply = json.loads(socket.recv())
                    if reply.get("id") == message_id:
                        return reply.get("result", {})

            def evaluate(expression: str) -> object:
                return (
                    call("Runtime.evaluate", expression=expression, returnByValue=True).get("result", {}).get("value")
                )

            call("Page.navigate", url=login_url)
            time.sleep(settle_seconds / 2)
            fill = "".join(
                f"document.querySelector('input[name={name}]').value = {json.dumps(value)};"
                for name, value in fields.items()
            )
            evaluate(fill + "document.querySelector('form').submit();")
            time.sleep(settle_seconds / 2)
            call("Page.navigate", url=page_url)
            time.sleep(settle_seconds)
            png = call("Page.captureScreenshot", format="png")["data"]
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(png))
            text = evaluate("document.body.innerText")
            socket.close()
            return str(text or "")
        finally:
            browser.terminate()
            browser.wait(10)
