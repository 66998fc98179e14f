"""The HTML reports people look at, opened in a real headless Chromium with no network."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sft_trainer.config import CurationConfig, CurationRunConfig
from sft_trainer.curation.entrypoint import run_from_config
from support.browser import render_dom, sections
from support.kube import REPO_ROOT

# Screenshots stay after the run (git-ignored) so a person can look at them.
SCREENSHOTS = REPO_ROOT / ".cache" / "screenshots"
SCREENSHOTS.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
def curation_report(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("curation")
    config = CurationRunConfig(
        input=str(shared_data / "alpaca_data.json"),
        output_dir=str(out),
        curation=CurationConfig(max_records=400),
    )
    assert run_from_config(config) == 0
    return out / "report.html"


def test_curation_report_renders_its_figures_and_tables(curation_report: Path) -> None:
    dom = render_dom(curation_report, screenshot=SCREENSHOTS / "curation-report.png")
    found = sections(dom)
    for figure in ("funnel", "drops", "task-mix", "lengths", "gptism"):
        assert figure in found, f"report has no #{figure}"
        assert found[figure].svg_shapes > 0, f"#{figure} has no plotted shapes"
        assert found[figure].table_rows > 1, f"#{figure} has no table rows"
    assert "dup-clusters" in found
    funnel_text = " ".join(found["funnel"].text)
    assert "400" in funnel_text, "the funnel does not show the 400 input records"
    assert (SCREENSHOTS / "curation-report.png").stat().st_size > 10_000
    raw = curation_report.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', raw), "the report loads something from the network"
