"""What can be checked of the two images without building them (no Docker engine here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from support.kube import REPO_ROOT

IMAGES = {
    "operator": REPO_ROOT / "Dockerfile",
    "trainer": REPO_ROOT / "trainer_image" / "Dockerfile",
}
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions(path: Path, keyword: str) -> list[str]:
    text = path.read_text().replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines() if line.upper().startswith(keyword + " ")]


@pytest.mark.parametrize("extra", sorted(IMAGES))
def test_base_images_are_pinned_to_a_version(extra: str) -> None:
    for base in instructions(IMAGES[extra], "FROM"):
        image = base.split()[0]
        assert ":" in image and not image.endswith(":latest"), f"{extra}: unpinned base image {image}"
        assert re.search(r":\d+\.\d+", image), f"{extra}: base image {image} is not pinned to a version"


@pytest.mark.parametrize("extra", sorted(IMAGES))
def test_runs_as_a_numeric_non_root_user(extra: str) -> None:
    users = instructions(IMAGES[extra], "USER")
    assert users, f"{extra}: no USER instruction"
    assert users[-1].isdigit() and int(users[-1]) > 0, f"{extra}: final USER must be a non-root uid, got {users[-1]}"


def test_trainer_uid_matches_the_pod_security_context() -> None:
    from sft_operator.manifests import curation_children
    from sft_operator.settings import OperatorSettings

    body = {
        "kind": "DatasetCuration",
        "metadata": {"name": "x", "namespace": "ns", "uid": "u"},
        "spec": {"source": {"pvc": {"claimName": "d", "path": "a.json"}}, "output": {"pvc": {"claimName": "o"}}},
    }
    pod = curation_children(body, OperatorSettings()).job["spec"]["template"]["spec"]
    assert instructions(IMAGES["trainer"], "USER")[-1] == str(pod["securityContext"]["runAsUser"])


@pytest.mark.parametrize("extra", sorted(IMAGES))
def test_installs_its_own_extra_and_that_extra_exists(extra: str) -> None:
    runs = " ".join(instructions(IMAGES[extra], "RUN"))
    assert f".[{extra}]" in runs
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extra in declared


def test_operator_image_has_no_torch() -> None:
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    operator_deps = declared["dependencies"] + declared["optional-dependencies"]["operator"]
    assert not [d for d in operator_deps if re.match(r"(torch|transformers|peft|accelerate)\b", d)]


def test_entrypoints_import() -> None:
    operator_entry = instructions(IMAGES["operator"], "ENTRYPOINT")[0]
    assert '"-m", "sft_operator.main"' in operator_entry
    subprocess.run([sys.executable, "-c", "import sft_operator.main"], check=True)
    trainer_entry = instructions(IMAGES["trainer"], "ENTRYPOINT")[0]
    assert '"-m", "sft_trainer"' in trainer_entry
    result = subprocess.run([sys.executable, "-m", "sft_trainer", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "curate" in result.stdout


def test_hadolint_is_clean() -> None:
    result = subprocess.run([str(HADOLINT), *map(str, IMAGES.values())], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
