"""Hub sources as the operator renders them, and how the pod resolves them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sft_trainer.runconfig import ConfigError
from sft_trainer.sources import HubSource, resolve


def test_hub_uri_round_trip_with_the_operator_rendering() -> None:
    from sft_operator.api import ModelSource
    from sft_operator.layout import MountLayout, source_path

    source = ModelSource.model_validate({"huggingFace": {"repo": "org/model", "revision": "v2", "file": "m.gguf"}})
    uri = source_path(source, MountLayout())
    assert HubSource.parse(uri) == HubSource("org/model", "v2", "m.gguf")
    assert HubSource.parse("hf://org/model@main") == HubSource("org/model", "main", None)


@pytest.mark.parametrize("uri", ["hf://", "hf://org/model", "hf://@main"])
def test_malformed_hub_uri_is_a_config_error(uri: str) -> None:
    with pytest.raises(ConfigError, match="expected hf://REPO@REVISION"):
        HubSource.parse(uri)


def test_missing_local_path_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model: .* does not exist"):
        resolve(str(tmp_path / "nope"), "model", "model")


def test_offline_hub_download_is_retried_not_failed_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network here: a connection problem must propagate (the Job retries), not become a config error."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception) as caught:
        resolve("hf://org/model@main", "model", "model")
    assert not isinstance(caught.value, ConfigError)
