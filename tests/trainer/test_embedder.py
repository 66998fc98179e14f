"""The packaged sentence embedders, for real: the MiniLM weights and the static model distilled from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sft_trainer.curation import noise
from sft_trainer.curation.text import last_response, prompt_text
from sft_trainer.models.embedder import MINILM, STATIC, Embedder, load_embedder
from sft_trainer.runconfig import ConfigError

HOSTILE = {
    "empty": "",
    "blank": "  \n\t ",
    "chinese": "深海中尚存的一丝光明：生活在深海热泉喷口周围的外来管虫和巨蚌不需要海洋表面的营养物质。",
    "code": "def f(x):\n    return {k: v for k, v in x.items() if v is not None}\n",
    "huge": "lorem ipsum dolor sit amet " * 4000,  # 108,000 characters
    "control": "\x00\x1b[31m\ufffd\u200b",
}


@pytest.fixture(scope="module", params=[STATIC, MINILM])
def embedder(request: pytest.FixtureRequest) -> Embedder:
    return load_embedder(request.param, "cpu")


def test_rows_are_unit_float32_in_input_order_and_empty_is_zero(embedder: Embedder) -> None:
    texts = list(HOSTILE.values())
    vectors = embedder.encode(texts)
    assert vectors.shape == (len(texts), embedder.dim) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    norms = np.linalg.norm(vectors, axis=1)
    assert norms[0] == 0 and norms[1] == 0
    np.testing.assert_allclose(norms[2:], 1.0, atol=1e-5)
    one_by_one = np.concatenate([embedder.encode([t]) for t in texts])
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-4)  # batching and length sorting change nothing
    assert embedder.encode([]).shape == (0, embedder.dim)


def test_a_response_is_closer_to_its_own_prompt_than_to_others(embedder: Embedder, shared_data: Path) -> None:
    held_out = [c for c in noise.load_lima(shared_data) if not noise.calibration_half(c)]
    lima = [c for c in held_out if len(last_response(c)) <= 1000][:20]  # short ones: MiniLM's CPU time
    prompts = embedder.encode([prompt_text(c) for c in lima])
    responses = embedder.encode([last_response(c) for c in lima])
    sims = prompts @ responses.T
    own_is_best = (sims.argmax(axis=0) == np.arange(len(lima))).mean()
    print(f"\n{embedder.name}: own prompt is the closest for {own_is_best:.0%} of 20 held-out LIMA responses")
    assert own_is_best >= 0.5  # chance is 1 in 20; measured 0.7 (static) and higher (MiniLM)


def test_a_missing_or_unloadable_folder_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"curation\.embedder\.model: .*nowhere"):
        load_embedder(str(tmp_path / "nowhere"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "model2vec"}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"curation\.embedder\.model: .* cannot be loaded"):
        load_embedder(str(tmp_path))
