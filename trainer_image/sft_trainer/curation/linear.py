"""Linear classifiers shipped as numpy arrays: what the style judge and the task labeller share.

`benchmarks/train_classifiers.py` fits them with scikit-learn (a StandardScaler
then a LogisticRegression) and saves the arrays with `numpy.savez_compressed`;
here they are applied with numpy alone, so the trainer image needs no
scikit-learn. Entries named `meta_*` carry the threshold, the class names,
the embedder the model was trained on and the figures measured at training.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CLASSIFIERS_DIR = Path(__file__).resolve().parents[1] / "resources" / "classifiers"


def load_arrays(path: Path, required: set[str]) -> dict[str, np.ndarray]:
    """The arrays of a shipped weights file; a clear error when it or one of `required` is missing."""
    if not path.is_file():
        raise FileNotFoundError(
            f"classifier weights {path} are missing: rebuild them with `make classifiers` "
            "(benchmarks/train_classifiers.py) or reinstall the package"
        )
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    missing = required - set(arrays)
    if missing:
        raise ValueError(f"classifier weights {path} lack the arrays {sorted(missing)}")
    return arrays


@dataclass(frozen=True)
class LinearModel:
    """A standardised linear model read from an .npz file: `mean`, `scale`, `coef`, `intercept`, plus metadata."""

    path: Path
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    """(classes, features) for a multinomial model, (1, features) for a binary one."""
    intercept: np.ndarray
    meta: dict[str, Any]
    extras: dict[str, np.ndarray]
    """Other arrays of the file (a vocabulary, idf weights) for the feature code that needs them."""

    @classmethod
    def load(cls, path: Path) -> LinearModel:
        arrays = load_arrays(path, {"mean", "scale", "coef", "intercept"})
        meta = {k: v.item() if v.ndim == 0 else v.tolist() for k, v in arrays.items() if k.startswith("meta_")}
        extras = {k: v for k, v in arrays.items() if not k.startswith("meta_")}
        coef = np.atleast_2d(arrays["coef"])
        return cls(path, arrays["mean"], arrays["scale"], coef, arrays["intercept"], meta, extras)

    @property
    def n_features(self) -> int:
        return int(self.coef.shape[1])

    def logits(self, features: np.ndarray) -> np.ndarray:
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise ValueError(
                f"{self.path.name} expects {self.n_features} features per row, got an array of shape {features.shape}"
            )
        return ((features - self.mean) / self.scale) @ self.coef.T + self.intercept


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # tanh form: no overflow warning for large |x|


_TOKEN = re.compile(r"(?u)\b\w\w+\b")
CASED_TOKEN_PATTERN = r"(?u)\b\w+\b|[^\w\s]"
"""Words as written and single punctuation marks: the tokens of `cased_word_ngrams` (scikit-learn's `token_pattern`)."""
_CASED_TOKEN = re.compile(CASED_TOKEN_PATTERN)


def _with_bigrams(tokens: list[str]) -> list[str]:
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]


def word_ngrams(text: str) -> list[str]:
    """Lower-cased words of two or more characters and their bigrams (scikit-learn's default word analyzer)."""
    return _with_bigrams(_TOKEN.findall(text.lower()))


def cased_word_ngrams(text: str) -> list[str]:
    """Words with their case, punctuation marks, and their bigrams (TfidfVectorizer(lowercase=False,
    token_pattern=CASED_TOKEN_PATTERN)): how a text is written ("I", "Here", "**", ":"), not only what it says."""
    return _with_bigrams(_CASED_TOKEN.findall(text))


def tfidf_row(
    text: str, index: dict[str, int], idf: np.ndarray, analyzer: Callable[[str], list[str]] = word_ngrams
) -> tuple[np.ndarray, np.ndarray]:
    """One text's tf-idf as (columns, unit-norm values), as scikit-learn's
    TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True) computes it: terms outside `index` left out."""
    counts = Counter(analyzer(text))
    columns = np.fromiter((index.get(term, -1) for term in counts), dtype=np.intp, count=len(counts))
    known = columns >= 0
    columns = columns[known]
    values = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts))[known])) * idf[columns]
    norm = float(np.linalg.norm(values))
    return columns, values / norm if norm > 0 else values


def tfidf(
    texts: Sequence[str],
    vocabulary: Sequence[str],
    idf: np.ndarray,
    analyzer: Callable[[str], list[str]] = word_ngrams,
) -> np.ndarray:
    """Dense tf-idf rows (`tfidf_row`) of `texts` over `vocabulary`."""
    index = {term: i for i, term in enumerate(vocabulary)}
    out = np.zeros((len(texts), len(vocabulary)))
    for row, text in enumerate(texts):
        columns, values = tfidf_row(text, index, idf, analyzer)
        out[row, columns] = values
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
