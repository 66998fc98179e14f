"""Fixtures shared by every test layer.

The control plane is session-scoped and started only when a test asks for it,
so `pytest tests/unit` never touches it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.data import SHARED_DATA
from support.kube import REPO_ROOT, ControlPlane, Kubectl, install_crds

# The curation's default models (SmolLM2 scorer, static embedder) where `make model` put them, so a
# test never converts or distils them again into the temp dir (minutes each).
os.environ.setdefault("SFT_MODEL_CACHE", str(REPO_ROOT / ".cache" / "models"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public datasets in ../shared/data."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared datasets not found at {SHARED_DATA} (set SFT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"))
    started = time.monotonic()
    try:
        plane.start()
        print(f"\ncontrol plane ready in {time.monotonic() - started:.1f}s at {plane.server}")
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    return Kubectl(control_plane.kubeconfig)


@pytest.fixture(scope="session")
def crds_installed(kubectl: Kubectl) -> Kubectl:
    """The generated CRDs applied and Established."""
    install_crds(kubectl)
    return kubectl
