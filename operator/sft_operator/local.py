"""The local executor behind `sftctl run`: the operator's work, without a cluster.

Each resource goes through the same builders the operator uses
(`manifests.curation_children` / `training_children`); the Job's container
command is then run as a local process, with each claim mapped to a folder
and the ConfigMap written to disk. The result is the same status object the
operator would write to the CR, saved as `<workdir>/<Kind>/<name>/status.json`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from . import conditions as c
from . import status as st
from .api import KINDS, DatasetCurationSpec, SFTJobSpec, object_problems
from .chain import base_model_mismatch, cycle_message, find_cycle, lineage_of, parent_of, parent_readiness
from .manifests import CONTAINER, EXIT_CONFIG_ERROR, RUN_CONFIG_FILE, MountLayout, curation_children, training_children
from .settings import OperatorSettings
from .status import NOT_YET, UNUSABLE

REPORT_FILE = {"DatasetCuration": "report.json", "SFTJob": "train_report.json"}
STATUS_FILE = "status.json"
ProgressCallback = Callable[[str, dict[str, Any]], None]


class ManifestError(ValueError):
    """A manifest that cannot run; the message names the resource and field."""


@dataclass
class Resource:
    kind: str
    name: str
    body: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass
class LocalRun:
    """Outcome of one resource run locally."""

    resource: Resource
    status: dict[str, Any]
    workdir: Path
    log: Path

    @property
    def phase(self) -> str:
        return str(self.status.get("phase", "Pending"))


@dataclass
class LocalExecutor:
    workdir: Path
    volumes: dict[str, Path] = field(default_factory=dict)
    on_progress: ProgressCallback | None = None
    poll_seconds: float = 0.5

    # ------------------------------------------------------------ manifests

    @staticmethod
    def load(path: Path) -> list[Resource]:
        """Parse and validate every document of a manifest file."""
        try:
            documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise ManifestError(f"{path}: {err}") from err
        resources: list[Resource] = []
        seen: set[str] = set()
        for index, doc in enumerate(documents):
            where = f"{path} document {index + 1}"
            if not isinstance(doc, dict):
                raise ManifestError(f"{where}: expected a mapping, got {type(doc).__name__}")
            if doc.get("kind") not in KINDS:
                raise ManifestError(f"{where}: kind must be one of {sorted(KINDS)}, got {doc.get('kind')!r}")
            metadata = doc.get("metadata")
            name = metadata.get("name") if isinstance(metadata, dict) else None
            if not isinstance(name, str) or not name:
                raise ManifestError(f"{where}: metadata.name is required")
            try:
                KINDS[doc["kind"]].spec.model_validate(doc.get("spec"))
            except ValidationError as err:
                problems = "; ".join(
                    "spec." + ".".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in err.errors()
                )
                raise ManifestError(f"{doc['kind']}/{name}: {problems}") from err
            refused = object_problems(doc["kind"], doc)
            if refused:
                raise ManifestError(f"{doc['kind']}/{name}: {'; '.join(refused)}")
            resource = Resource(doc["kind"], name, doc)
            if resource.key in seen:
                raise ManifestError(f"{where}: {resource.key} appears twice")
            seen.add(resource.key)
            resources.append(resource)
        return resources

    def ordered(self, resources: list[Resource]) -> list[Resource]:
        """Each resource after what it depends on (its curation, the stage it starts from); file order otherwise."""
        by_key = {r.key: r for r in resources}
        for resource in resources:
            for field_path, kind, name in _dependencies(resource):
                if f"{kind}/{name}" not in by_key and self._previous_status(kind, name) is None:
                    raise ManifestError(
                        f"{resource.key}: {field_path} {name!r} is neither in this file "
                        f"nor a finished run under {self.workdir}"
                    )
            cycle = _stage_cycle(resource, by_key)
            if cycle:
                raise ManifestError(f"{resource.key}: {cycle_message(cycle)}")
        order: list[Resource] = []

        def place(resource: Resource) -> None:
            if resource in order:
                return
            for _, kind, name in _dependencies(resource):
                if f"{kind}/{name}" in by_key:
                    place(by_key[f"{kind}/{name}"])
            order.append(resource)

        for resource in resources:
            place(resource)
        return order

    # ------------------------------------------------------------------ run

    def run_all(self, resources: list[Resource]) -> list[LocalRun]:
        return [self.run(resource) for resource in self.ordered(resources)]

    def run(self, resource: Resource) -> LocalRun:
        folder = self.workdir / resource.kind / resource.name
        folder.mkdir(parents=True, exist_ok=True)
        # Written first: a later stage reads its parent's spec from it, even of a run that never started.
        _write_json(folder / "resource.json", resource.body)
        generation = 1
        status: dict[str, Any] = {}
        curation = None
        lineage: list[dict[str, Any]] | None = None
        if resource.kind == "SFTJob":
            blocked, lineage = self._model_ready(resource, status, generation)
            if blocked is None:
                blocked, curation = self._dataset_ready(resource, status, generation)
            if blocked is None and lineage and curation:
                mismatch = base_model_mismatch(lineage, curation["metadata"]["name"], _curation_spec(curation))
                blocked = st.failed(status, c.BASE_MODEL_MISMATCH, mismatch, generation) if mismatch else None
            if blocked is not None:
                return self._finish(resource, folder, blocked, folder / "run.log")
            status["lineage"] = lineage or st.root_lineage(SFTJobSpec.model_validate(resource.body["spec"]))
        settings = OperatorSettings(progress_port=_free_port())
        layout = self._layout(folder)
        body = {**resource.body, "metadata": {**resource.body["metadata"], "namespace": "local", "uid": "local"}}
        if resource.kind == "DatasetCuration":
            children = curation_children(body, settings, layout)
        else:
            children = training_children(body, settings, curation=curation, layout=layout, lineage=lineage)
        if children.service is not None:
            raise ManifestError(f"{resource.key}: multi-node runs (resources.nodes > 1) need a cluster")
        Path(layout.config_dir).mkdir(parents=True, exist_ok=True)
        Path(layout.scratch_dir).mkdir(parents=True, exist_ok=True)
        (Path(layout.config_dir) / RUN_CONFIG_FILE).write_text(children.config_map["data"][RUN_CONFIG_FILE])
        run_config = yaml.safe_load(children.config_map["data"][RUN_CONFIG_FILE])
        output_dir = Path(run_config["outputDir"])
        output_dir.mkdir(parents=True, exist_ok=True)

        container = next(x for x in children.job["spec"]["template"]["spec"]["containers"] if x["name"] == CONTAINER)
        log = folder / "run.log"
        started = c.now_rfc3339()
        status = st.with_run_state(status, st.RunState(st.RUNNING, c.JOB_RUNNING, "Running locally", started), 1)
        status["jobName"] = children.job["metadata"]["name"]
        status["outputLocation"] = str(output_dir)
        _write_json(folder / STATUS_FILE, status)
        exit_code = self._execute(resource, container, settings.progress_port, log, status)
        run = _run_state(exit_code, log, started)
        status = st.with_run_state(status, run, generation)
        report = output_dir / REPORT_FILE[resource.kind]
        if report.exists():
            figures = json.loads(report.read_text())
            status.update(
                st.curation_figures(figures) if resource.kind == "DatasetCuration" else st.training_figures(figures)
            )
            if resource.kind == "SFTJob":
                status = st.with_evaluation_condition(status, generation)
        elif run.state == st.SUCCEEDED:
            status = st.with_run_state(
                status, st.RunState(st.SUCCEEDED, c.REPORT_MISSING, f"{report.name} was not written"), generation
            )
        return self._finish(resource, folder, status, log)

    def _finish(self, resource: Resource, folder: Path, status: dict[str, Any], log: Path) -> LocalRun:
        _write_json(folder / STATUS_FILE, status)
        return LocalRun(resource, status, folder, log)

    def _dataset_ready(
        self, resource: Resource, status: dict[str, Any], generation: int
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(failed status, None) when the referenced curation blocks training, else (None, curation body)."""
        ref = _curation_ref(resource)
        if ref is None:
            return None, None
        curation_status = self._previous_status("DatasetCuration", ref)
        if curation_status is None or not c.is_true(curation_status.get("conditions", []), c.READY):
            reason = "did not succeed" if curation_status else "has not run"
            return st.failed(status, c.DATASET_FAILED, f"DatasetCuration {ref} {reason}", generation), None
        gates = resource.body["spec"]["dataset"].get("gates")
        failures = st.gate_failures(gates, curation_status)
        if failures:
            return st.failed(status, c.QUALITY_GATE_FAILED, "; ".join(failures), generation), None
        body = json.loads((self.workdir / "DatasetCuration" / ref / "resource.json").read_text())
        return None, body

    def _model_ready(
        self, resource: Resource, status: dict[str, Any], generation: int
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
        """(failed status, None) when the stage it starts from is unusable, else (None, its lineage or None)."""
        model = SFTJobSpec.model_validate(resource.body["spec"]).model
        if model.sft_job_ref is None:
            return None, None
        name = model.sft_job_ref.name
        parent_status = self._previous_status("SFTJob", name)
        parent = None
        if parent_status is not None:
            parent = {
                **json.loads((self.workdir / "SFTJob" / name / "resource.json").read_text()),
                "status": parent_status,
            }
        readiness = parent_readiness(parent, model)
        if readiness.state == NOT_YET:  # nothing waits here: stages run in dependency order
            message = f"SFTJob {name} has not run" if parent is None else readiness.message
            return st.failed(status, c.PARENT_FAILED, message, generation), None
        if readiness.state == UNUSABLE:
            return st.failed(status, readiness.reason, readiness.message, generation), None
        assert parent is not None
        return None, lineage_of(parent, model.sft_job_ref.use)

    def _previous_status(self, kind: str, name: str) -> dict[str, Any] | None:
        path = self.workdir / kind / name / STATUS_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def _layout(self, folder: Path) -> MountLayout:
        claim_dirs = {claim: str(path.resolve()) for claim, path in self.volumes.items()}
        return MountLayout(
            volumes_root=str((self.workdir / "volumes").resolve()),
            config_dir=str((folder / "config").resolve()),
            scratch_dir=str((folder / "scratch").resolve()),
            claim_dirs=claim_dirs,
        )

    def _execute(
        self, resource: Resource, container: dict[str, Any], port: int, log: Path, status: dict[str, Any]
    ) -> int:
        """Run the pod's command as a local process, mirroring its /progress into status.json."""
        command = _local_launcher(container["command"][0]) + container["command"][1:] + container.get("args", [])
        env = {**os.environ, **_literal_env(container), "SFT_PROGRESS_HOST": "127.0.0.1"}
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
            while process.poll() is None:
                payload = _read_progress(port)
                if payload:
                    if self.on_progress:
                        self.on_progress(resource.key, payload)
                    status["progress"] = st.progress_figures(payload, resource.kind)
                    _write_json(log.parent / STATUS_FILE, status)
                time.sleep(self.poll_seconds)
        return int(process.returncode)


def _curation_ref(resource: Resource) -> str | None:
    if resource.kind != "SFTJob":
        return None
    ref = (resource.body["spec"].get("dataset") or {}).get("curationRef")
    return ref["name"] if ref else None


def _dependencies(resource: Resource) -> list[tuple[str, str, str]]:
    """(field, kind, name) of what a resource needs finished before it runs."""
    needs = []
    curation = _curation_ref(resource)
    if curation:
        needs.append(("spec.dataset.curationRef.name", "DatasetCuration", curation))
    parent = parent_of(resource.body) if resource.kind == "SFTJob" else None
    if parent:
        needs.append(("spec.model.sftJobRef.name", "SFTJob", parent))
    return needs


def _stage_cycle(resource: Resource, by_key: dict[str, Resource]) -> list[str] | None:
    first = parent_of(resource.body) if resource.kind == "SFTJob" else None
    if first is None:
        return None

    def read_parent(name: str) -> str | None:
        other = by_key.get(f"SFTJob/{name}")
        return parent_of(other.body) if other else None

    return find_cycle(resource.name, first, read_parent)


def _curation_spec(curation: dict[str, Any]) -> DatasetCurationSpec:
    return DatasetCurationSpec.model_validate(curation["spec"])


def _run_state(exit_code: int, log: Path, started: str) -> st.RunState:
    finished = c.now_rfc3339()
    if exit_code == 0:
        return st.RunState(st.SUCCEEDED, c.JOB_SUCCEEDED, "Completed locally", started, finished)
    tail = _tail(log)
    if exit_code == EXIT_CONFIG_ERROR:
        return st.RunState(st.FAILED, c.CONFIG_ERROR, tail, started, finished)
    return st.RunState(st.FAILED, c.JOB_FAILED, f"exit code {exit_code}: {tail}", started, finished)


def _tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return " | ".join(text[-lines:])


def _literal_env(container: dict[str, Any]) -> dict[str, str]:
    """Plain env values; secret references resolve from this shell's own environment."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item["name"] in os.environ:
            env[item["name"]] = os.environ[item["name"]]
    return env


def _read_progress(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress", timeout=1) as response:
            payload = json.loads(response.read())
            return payload if isinstance(payload, dict) else None
    except (OSError, ValueError):
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def _local_launcher(program: str) -> list[str]:
    """The image's `python` as this interpreter (a virtualenv need not be on PATH)."""
    launchers = {"python": [sys.executable]}
    return launchers.get(program, [program])
