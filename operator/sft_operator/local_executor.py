"""The local executor behind `sftctl run`: the operator's work, without a cluster.

Each resource goes through the operator's own code: the same input check
(`inputs.training_inputs`), the same builders (`children.curation_children`
/ `training_children`), and the same status function (`run_status`). The
Job's container command then runs as a local process, with each claim
mapped to a folder and the ConfigMap written to disk; where the operator
reads the Job and the pod's termination message, this reads the exit code
and the report file. The result is the status object the operator would
write to the CR, saved as `<workdir>/<Kind>/<name>/status.json`.

What differs, by design: nothing waits (resources run in dependency order,
so what would wait on a cluster fails here), multi-node runs are refused,
and status.outputLocation is the folder on this machine.
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
from .api import KINDS, SFTJobSpec, Spec, object_problems, spec_of, spec_problems
from .chain import cycle_message, find_cycle, parent_of
from .children import curation_children, training_children
from .figures import progress_figures
from .inputs import training_inputs
from .layout import RUN_CONFIG_FILE, MountLayout
from .naming import CONTAINER, ResourceRef
from .pod_reports import Report
from .readiness import NOT_YET, READY_TO_USE, Readiness
from .run_state import RunState, exit_run_state, failed, with_run_state
from .run_status import run_status, spec_fields
from .settings import OperatorSettings

REPORT_FILE = {"DatasetCuration": "report.json", "SFTJob": "train_report.json"}
STATUS_FILE = "status.json"
RESOURCE_FILE = "resource.json"
LOCAL_NAMESPACE = LOCAL_UID = "local"
ProgressCallback = Callable[[str, dict[str, Any]], None]
# sftctl run waits for nothing (a resource runs after what it needs): what would wait on a cluster fails here.
FAILS_LOCALLY = {
    c.WAITING_FOR_MODEL: c.PARENT_FAILED,
    c.PARENT_DELETED: c.PARENT_FAILED,
    c.WAITING_FOR_DATASET: c.DATASET_FAILED,
    c.WAITING_FOR_REVIEW: c.QUALITY_GATE_FAILED,
}


class ManifestError(ValueError):
    """A manifest that cannot run; the message names the resource and field."""


@dataclass
class Resource:
    """One document of the manifest, its spec parsed once (at load)."""

    kind: str
    name: str
    body: dict[str, Any]
    spec: Spec

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
        """For display; `succeeded` is what to decide on."""
        return str(self.status.get("phase") or c.PHASE_PENDING)

    @property
    def succeeded(self) -> bool:
        return c.is_true(self.status.get("conditions", []) or [], c.SUCCEEDED)


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
                spec = spec_of(doc["kind"], doc.get("spec"))
            except ValidationError as err:
                raise ManifestError(f"{doc['kind']}/{name}: {spec_problems(err)}") from err
            refused = object_problems(doc["kind"], doc)
            if refused:
                raise ManifestError(f"{doc['kind']}/{name}: {'; '.join(refused)}")
            resource = Resource(doc["kind"], name, doc, spec)
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
                if f"{kind}/{name}" not in by_key and self.finished_status(kind, name) is None:
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
        """Run one resource to its end; its status is in the returned LocalRun and in status.json."""
        folder = self.workdir / resource.kind / resource.name
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / "run.log"
        # Written first: a later stage reads its parent's spec from it, even of a run that never started.
        _write_json(folder / RESOURCE_FILE, resource.body)
        ref = ResourceRef(resource.kind, LOCAL_NAMESPACE, resource.name, LOCAL_UID)
        generation = 1
        status = spec_fields(resource.spec)
        settings = OperatorSettings(progress_port=_free_port())
        layout = self._layout(folder)
        if isinstance(resource.spec, SFTJobSpec):
            inputs = training_inputs(resource.name, resource.spec, _RunFolders(self))
            if inputs.readiness.state != READY_TO_USE:
                return self._finish(resource, folder, _refused(status, inputs.readiness, generation), log)
            if inputs.lineage is not None:
                status["lineage"] = inputs.lineage
            children = training_children(
                ref, resource.spec, settings, curation=inputs.curation, layout=layout, lineage=inputs.lineage
            )
        else:
            children = curation_children(ref, resource.spec, settings, layout)
        if children.service is not None:
            raise ManifestError(f"{resource.key}: multi-node runs (resources.nodes > 1) need a cluster")
        Path(layout.config_dir).mkdir(parents=True, exist_ok=True)
        Path(layout.scratch_dir).mkdir(parents=True, exist_ok=True)
        (Path(layout.config_dir) / RUN_CONFIG_FILE).write_text(children.config_map["data"][RUN_CONFIG_FILE])
        run_config = yaml.safe_load(children.config_map["data"][RUN_CONFIG_FILE])
        output_dir = Path(run_config["outputDir"])
        output_dir.mkdir(parents=True, exist_ok=True)

        container = next(x for x in children.job["spec"]["template"]["spec"]["containers"] if x["name"] == CONTAINER)
        started = c.now_rfc3339()
        status = with_run_state(
            status, RunState(c.PHASE_RUNNING, c.JOB_RUNNING, "Running locally", started), generation
        )
        status["jobName"] = children.job["metadata"]["name"]
        status["outputLocation"] = str(output_dir)
        _write_json(folder / STATUS_FILE, status)
        exit_code = self._execute(resource, container, settings.progress_port, log, status)
        run = exit_run_state(exit_code, _tail(log), started, c.now_rfc3339())
        report = report_from_file(output_dir / REPORT_FILE[resource.kind])
        return self._finish(resource, folder, run_status(resource.kind, status, run, report, generation), log)

    def _finish(self, resource: Resource, folder: Path, status: dict[str, Any], log: Path) -> LocalRun:
        _write_json(folder / STATUS_FILE, status)
        return LocalRun(resource, status, folder, log)

    def finished_status(self, kind: str, name: str) -> dict[str, Any] | None:
        """The status.json of a resource that ran under this workdir (None: it never ran here)."""
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
                    status["progress"] = progress_figures(payload, resource.kind)
                    _write_json(log.parent / STATUS_FILE, status)
                time.sleep(self.poll_seconds)
        return int(process.returncode)


def _curation_ref(resource: Resource) -> str | None:
    if not isinstance(resource.spec, SFTJobSpec) or resource.spec.dataset.curation_ref is None:
        return None
    return resource.spec.dataset.curation_ref.name


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


class _RunFolders:
    """`inputs.Lookup` on the run folders: a resource exists once it ran (status.json beside its resource.json)."""

    def __init__(self, executor: LocalExecutor) -> None:
        self.executor = executor

    def custom(self, kind: str, name: str) -> dict[str, Any] | None:
        status = self.executor.finished_status(kind, name)
        if status is None:
            return None
        body = json.loads((self.executor.workdir / kind / name / RESOURCE_FILE).read_text())
        return {**body, "status": status}

    def claim_exists(self, name: str) -> bool:
        return True  # a claim is a folder here, made when a run writes to it


def _refused(status: dict[str, Any], readiness: Readiness, generation: int) -> dict[str, Any]:
    """The failed status of a job whose inputs are not usable; what would wait on a cluster fails, saying why."""
    if readiness.state == NOT_YET:
        reason = FAILS_LOCALLY.get(readiness.reason, readiness.reason)
        message = f"{readiness.message}; sftctl run waits for nothing: run it first, or in the same file"
        return failed(status, reason, message, generation)
    return failed(status, readiness.reason, readiness.message, generation)


def report_from_file(path: Path) -> Report:
    """What a local run reported: its report file (`{"status": ...}` like a pod's message), or why there is none."""
    if not path.exists():
        return Report(None, f"{path.name} was not written")
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return Report(None, f"{path.name} is not readable JSON ({err})")
    if not isinstance(report, dict):
        return Report(None, f"{path.name} is not a JSON object")
    return Report(report)


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
