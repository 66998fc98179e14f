"""Where the tests find the real public datasets: $SFT_SHARED_DATA, else ../shared/data beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

from .kube import REPO_ROOT

SHARED_DATA = Path(os.environ.get("SFT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
