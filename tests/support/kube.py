"""The test control plane: the one in `devtools.control_plane`, which the benchmarks start too."""

from devtools.control_plane import (
    BIN_DIR,
    REPO_ROOT,
    ClusterStartError,
    ControlPlane,
    Kubectl,
    binary,
    free_port,
    install_crds,
)

__all__ = [
    "BIN_DIR",
    "REPO_ROOT",
    "ClusterStartError",
    "ControlPlane",
    "Kubectl",
    "binary",
    "free_port",
    "install_crds",
]
