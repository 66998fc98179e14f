"""The whole run: outputs, the report the operator reads, the accounting check, and `sftctl curate`."""

from __future__ import annotations

import json
from pathlib import Path

import malformed_corpus
import pytest

from sft_operator.api import DatasetCurationStatus
from sft_trainer.__main__ import main as trainer_main
from sft_trainer.config import CurationRunConfig
from sft_trainer.curation.entrypoint import OUTPUT_FILES, AccountingError, run_from_config, verify_accounting
from sftctl.cli import main as sftctl_main


@pytest.fixture(scope="module")
def mixed_input(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """800 raw Alpaca records, a few exact copies, and the malformed corpus, as one JSONL file."""
    folder = tmp_path_factory.mktemp("input")
    malformed_corpus.write(folder / "bad.jsonl")
    alpaca = json.loads((data_dir / "alpaca_data.json").read_text())[:800]
    lines = [json.dumps(r) for r in alpaca + alpaca[:5]]
    path = folder / "mixed.jsonl"
    path.write_bytes("\n".join(lines).encode() + b"\n" + (folder / "bad.jsonl").read_bytes())
    return path


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory, mixed_input: Path) -> Path:
    out = tmp_path_factory.mktemp("out")
    stages: list[str] = []
    code = run_from_config(
        CurationRunConfig(input=str(mixed_input), output_dir=str(out)), lambda s, d, t: stages.append(s)
    )
    assert code == 0
    assert {"read", "filter", "dedup", "balance", "write"} <= set(stages)
    return out


def read_jsonl(path: Path) -> list[dict]:
    # split("\n"): records hold raw U+0085 and U+2028 (ensure_ascii=False), where splitlines() would cut.
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def test_every_record_lands_in_exactly_one_output(curated: Path, mixed_input: Path) -> None:
    lines = mixed_input.read_bytes().count(b"\n")
    seen = [
        r["source_index"]
        for name in ("curated.jsonl", "rejected.jsonl", "review.jsonl")
        for r in read_jsonl(curated / name)
    ]
    assert sorted(seen) == list(range(lines))
    assert all((curated / name).exists() for name in OUTPUT_FILES)


def test_report_status_is_the_operator_shape(curated: Path) -> None:
    report = json.loads((curated / "report.json").read_text())
    status = DatasetCurationStatus.model_validate(report["status"])
    counts = report["status"]["counts"]
    assert counts["input"] == counts["curated"] + counts["rejected"] + counts["review"]
    assert sum(report["status"]["dropsByReason"].values()) == counts["rejected"]
    assert status.rejected_fraction == pytest.approx(counts["rejected"] / counts["input"], abs=1e-6)
    assert set(report["status"]) == {
        "counts",
        "dropsByReason",
        "taskEntropyBefore",
        "taskEntropyAfter",
        "rejectedFraction",
        "notes",
    }
    assert "no tokenizer given" in " ".join(status.notes)  # what was skipped reaches the status


def test_outputs_carry_reasons_originals_and_scores(curated: Path) -> None:
    rejected = read_jsonl(curated / "rejected.jsonl")
    exact = [r for r in rejected if r["reasons"][0] == "dedup.exact_duplicate"]
    assert len(exact) == 5 and all(r["duplicate_of"] < 800 for r in exact)
    broken = next(r for r in rejected if r["reasons"] == ["format.invalid_json"])
    assert broken["record"].startswith('{"instruction": "Say hi"') and "line" in broken["detail"]
    kept = read_jsonl(curated / "curated.jsonl")[0]
    assert {"messages", "source_index", "task", "scores"} <= set(kept)
    assert 0 <= kept["scores"]["quality"] <= 1


def test_html_report_is_self_contained_with_figures_and_tables(curated: Path) -> None:
    page = (curated / "report.html").read_text()
    for section in ("funnel", "drops", "task-mix", "lengths", "gptism", "dup-clusters"):
        start = page.index(f'<section id="{section}">')
        body = page[start : page.index("</section>", start)]
        assert "<table" in body, section
        assert section == "dup-clusters" or "<svg" in body, section
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page.split("<body>")[0]


def test_accounting_check_catches_a_lost_record(curated: Path, tmp_path: Path) -> None:
    for name in ("curated.jsonl", "rejected.jsonl", "review.jsonl"):
        (tmp_path / name).write_text((curated / name).read_text())
    total = sum(1 for name in ("curated.jsonl", "rejected.jsonl", "review.jsonl") for _ in (tmp_path / name).open())
    verify_accounting(tmp_path, total)
    lines = (tmp_path / "curated.jsonl").read_text().rstrip("\n").split("\n")
    (tmp_path / "curated.jsonl").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(AccountingError, match="in no output"):
        verify_accounting(tmp_path, total)
    (tmp_path / "review.jsonl").write_text(lines[0] + "\n" + lines[0] + "\n")
    with pytest.raises(AccountingError, match="in both"):
        verify_accounting(tmp_path, total)


def test_lima_loses_little(data_dir: Path, tmp_path: Path) -> None:
    """Curated human data: the hygiene filters (not the balance) reject at most 3%."""
    cfg = CurationRunConfig.model_validate(
        {
            "input": str(data_dir / "lima_llamafactory.json"),
            "outputDir": str(tmp_path),
            "curation": {"balance": {"enabled": False}},
        }
    )
    assert run_from_config(cfg) == 0
    status = json.loads((tmp_path / "report.json").read_text())["status"]
    assert status["rejectedFraction"] <= 0.03, status["dropsByReason"]


def test_pod_entry_point_and_unreadable_input(tmp_path: Path, mixed_input: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(f"input: {mixed_input}\noutputDir: {tmp_path / 'out'}\ncuration:\n  maxRecords: 200\n")
    assert trainer_main(["curate", str(config)]) == 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["status"]["counts"]["input"] == 200
    bad = tmp_path / "bad.json"
    bad.write_text("[{]")
    config.write_text(f"input: {bad}\noutputDir: {tmp_path / 'out2'}\n")
    assert trainer_main(["curate", str(config)]) == 42


def test_sftctl_curate_prints_a_summary(tmp_path: Path, mixed_input: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("maxRecords: 300\nbalance:\n  targetEntropy: 0.95\n")
    assert sftctl_main(["curate", str(mixed_input), "--out", str(tmp_path / "o"), "--config", str(settings)]) == 0
    out = capsys.readouterr().out
    assert "Drops per reason" in out and "curated" in out and "Task entropy" in out
    settings.write_text("balance:\n  targetEntropy: 3\n")
    assert sftctl_main(["curate", str(mixed_input), "--out", str(tmp_path / "o2"), "--config", str(settings)]) == 42
    assert "balance.targetEntropy" in capsys.readouterr().err


def test_a_curation_pod_serves_its_progress_with_rate_and_eta() -> None:
    import urllib.request

    from sft_trainer.curation.entrypoint import _progress_server, _reporting

    server = _progress_server(0)
    assert server is not None
    try:
        report = _reporting(None, server, started=0.0)
        report("filter", 0, 400)
        report("filter", 100, 400)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/progress", timeout=5) as response:
            progress = json.loads(response.read())
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
    finally:
        server.stop()
    assert progress["phase"] == "filter" and progress["done"] == 100 and progress["percent"] == 25.0
    assert progress["etaSeconds"] >= 0 and progress["recordsPerSecond"] > 0
    assert 'sft_curation_phase{phase="filter"} 1.0' in metrics
