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
    with tempfile.TemporaryDirectory() as profile:
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
