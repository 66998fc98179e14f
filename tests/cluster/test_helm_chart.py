"""The Helm chart: lints, renders for every scenario, and the real API server accepts it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from support.kube import REPO_ROOT, Kubectl, binary

pytestmark = pytest.mark.cluster

CHART = REPO_ROOT / "charts" / "trustdoc-sft"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
# prometheus-operator's kinds are not served by the bare test cluster; their
# rendering is still checked below, but not by the API server.
NOT_SERVED = {"ServiceMonitor", "PodMonitor"}
KUBE_VERSION = "1.34.3"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("helm"), *args], capture_output=True, text=True, timeout=120)


def render(values: Path | None, namespace: str = "sft-system") -> list[dict]:  # type: ignore[type-arg]
    args = ["template", "sft", str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION]
    if values:
        args += ["-f", str(values)]
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize("values", [None, *SCENARIOS], ids=lambda v: v.name if v else "defaults")
def test_helm_lint(values: Path | None) -> None:
    args = ["lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION]
    result = helm(*args, *(["-f", str(values)] if values else []))
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_values_key_is_refused() -> None:
    result = helm("template", "sft", str(CHART), "--set", "replicas=2", "--kube-version", KUBE_VERSION)
    assert result.returncode != 0
    assert "replicas" in result.stderr


def test_every_values_key_is_commented() -> None:
    """Each key has a comment, unless it is a section, or default data of a commented key."""
    documented_parents: list[tuple[int, bool]] = []  # (indent, has comment) of enclosing keys
    previous = ""
    for number, line in enumerate((CHART / "values.yaml").read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            previous = stripped or previous
            continue
        indent = len(line) - len(line.lstrip())
        while documented_parents and documented_parents[-1][0] >= indent:
            documented_parents.pop()
        inside_documented_value = any(has_comment for _, has_comment in documented_parents)
        has_comment = previous.startswith("#")
        is_section = stripped.endswith(":") and not has_comment
        if ":" in stripped and not stripped.startswith("- ") and not inside_documented_value:
            assert has_comment or is_section, f"values.yaml line {number} has no comment: {line}"
        documented_parents.append((indent, has_comment))
        previous = stripped


@pytest.mark.parametrize("values", [None, *SCENARIOS], ids=lambda v: v.name if v else "defaults")
def test_rendered_manifests_are_accepted_by_the_api_server(crds_installed: Kubectl, values: Path | None) -> None:
    docs = render(values)
    for doc in docs:
        if doc["kind"] == "NetworkPolicy":
            crds_installed.run("create", "namespace", doc["metadata"]["namespace"])
    crds_installed.run("create", "namespace", "sft-system")
    served = [d for d in docs if d["kind"] not in NOT_SERVED]
    result = crds_installed.apply(yaml.safe_dump_all(served), "--dry-run=server")
    assert result.returncode == 0, result.stderr


def operator_env(*set_values: str) -> dict[str, str]:
    """The operator container's plain env of the default render, with `--set` values."""
    args = ["template", "sft", str(CHART), "--kube-version", KUBE_VERSION]
    for value in set_values:
        args += ["--set", value]
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    deployment = next(d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def test_operator_values_reach_the_settings_the_operator_reads() -> None:
    """Each SFT_OPERATOR_* the chart sets parses as OperatorSettings; the defaults agree, workers is passed on."""
    import dataclasses

    from sft_operator.settings import PREFIX, OperatorSettings

    defaults = operator_env()
    known = {PREFIX + item.name.upper() for item in dataclasses.fields(OperatorSettings)}
    assert set(defaults) <= known, f"the chart sets variables the operator does not read: {set(defaults) - known}"
    assert OperatorSettings.from_env(defaults).workers == OperatorSettings().workers == 32
    assert OperatorSettings.from_env(operator_env("operator.workers=7")).workers == 7
    refused = helm("template", "sft", str(CHART), "--set", "operator.workers=0", "--kube-version", KUBE_VERSION)
    assert refused.returncode != 0 and "workers" in refused.stderr


def test_crds_are_templates_with_keep_policy() -> None:
    crds = [d for d in render(None) if d["kind"] == "CustomResourceDefinition"]
    assert {c["spec"]["names"]["kind"] for c in crds} >= {"SFTJob", "DatasetCuration"}
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in crds)
    assert not (CHART / "crds").exists(), "Helm never upgrades its crds/ folder: CRDs must be templates"
    no_keep = helm("template", "sft", str(CHART), "--set", "crds.keep=false", "--kube-version", KUBE_VERSION)
    assert "resource-policy" not in no_keep.stdout
    none = [d for d in render(CHART / "ci" / "no-crds-values.yaml") if d["kind"] == "CustomResourceDefinition"]
    assert none == []


def test_selector_labels_do_not_change_with_the_chart_version() -> None:
    deployment = next(d for d in render(None) if d["kind"] == "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert not any("version" in key or "chart" in key for key in selector)


def test_monitors_target_what_the_operator_and_workloads_expose() -> None:
    docs = render(CHART / "ci" / "ha-monitoring-values.yaml")
    kinds = {d["kind"]: d for d in docs}
    assert kinds["ServiceMonitor"]["spec"]["endpoints"][0]["port"] == "metrics"
    pod_monitor = kinds["PodMonitor"]["spec"]
    assert pod_monitor["podMetricsEndpoints"][0]["port"] == "progress"
    assert pod_monitor["namespaceSelector"]["matchNames"] == ["ml-team-a", "ml-team-b"]
    assert kinds["Deployment"]["spec"]["replicas"] == 2


def test_dashboard_queries_only_metrics_the_operator_exports() -> None:
    """Every series a panel queries exists in the operator's /metrics (no dashboard rot)."""
    import json
    import re

    from prometheus_client import generate_latest

    from sft_operator.metrics import OperatorMetrics

    metrics = OperatorMetrics()
    status = {
        "phase": "Running",
        "progress": {"percent": 50.0, "loss": 1.0, "evalLoss": 1.1, "tokensPerSecond": 10.0},
        "counts": {"input": 2, "curated": 1, "rejected": 1, "review": 0},
        "taskEntropyBefore": 0.5,
        "taskEntropyAfter": 0.9,
    }
    metrics.watch({("ns", "job"): [status]}, {("ns", "cur"): [status]})
    metrics.reconciles.labels("SFTJob", "create", "ok").inc()
    metrics.errors.labels("SFTJob", "create", "ApiException").inc()
    metrics.latency.labels("SFTJob", "create").observe(0.1)
    exported = set(re.findall(r"^(trustdoc_sft_\w+)", generate_latest(metrics.registry).decode(), re.M))

    dashboards = [d for d in render(CHART / "ci" / "ha-monitoring-values.yaml") if d["kind"] == "ConfigMap"]
    dashboard = json.loads(dashboards[0]["data"]["trustdoc-sft.json"])
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"trustdoc_sft_\w+", target["expr"])
    }
    assert len(dashboard["panels"]) >= 8
    assert queried, "no panel queries a TrustDoc metric"
    assert queried <= exported, f"dashboard queries series the operator does not export: {queried - exported}"


def test_chart_ships_the_same_peering_crds_as_crds_folder() -> None:
    shipped = {
        doc["metadata"]["name"]: doc
        for path in (CHART / "files" / "crds").glob("*kopfpeerings.kopf.dev.yaml")
        for doc in [yaml.safe_load(path.read_text())]
    }
    source = {
        doc["metadata"]["name"]: doc
        for doc in yaml.safe_load_all((REPO_ROOT / "crds" / "peering" / "kopf-peering.yaml").read_text())
        if doc
    }
    assert shipped == source, "charts/trustdoc-sft/files/crds is out of date with crds/peering"
