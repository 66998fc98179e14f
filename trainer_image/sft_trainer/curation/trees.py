"""Gradient-boosted trees shipped as numpy arrays: the style judge's model.

`benchmarks/train_classifiers.py` fits a scikit-learn
HistGradientBoostingClassifier (binary) and flattens its trees into one node
table saved with `numpy.savez_compressed`: per node the feature, threshold,
children (indexes into the same table), leaf flag, leaf value and where a
missing value goes; `roots` holds each tree's first node. Here the trees are
walked with numpy alone, all rows and all trees at once, so the trainer image
needs no scikit-learn. Entries named `meta_*` carry the threshold, the
feature names and the figures measured at training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .linear import load_arrays

NODE_ARRAYS = ("feature", "threshold", "left", "right", "is_leaf", "value", "missing_left", "roots", "baseline")


@dataclass(frozen=True)
class TreeEnsemble:
    """A binary boosted-tree model: raw score = baseline + the sum of one leaf value per tree."""

    path: Path
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    is_leaf: np.ndarray
    value: np.ndarray
    missing_left: np.ndarray
    roots: np.ndarray
    baseline: float
    n_features: int
    depth: int
    meta: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> TreeEnsemble:
        arrays = load_arrays(path, set(NODE_ARRAYS + ("meta_n_features", "meta_depth")))
        meta = {k: v.item() if v.ndim == 0 else v.tolist() for k, v in arrays.items() if k.startswith("meta_")}
        return cls(
            path,
            arrays["feature"].astype(np.intp),
            arrays["threshold"].astype(np.float64),
            arrays["left"].astype(np.intp),
            arrays["right"].astype(np.intp),
            arrays["is_leaf"].astype(bool),
            arrays["value"].astype(np.float64),
            arrays["missing_left"].astype(bool),
            arrays["roots"].astype(np.intp),
            float(arrays["baseline"]),
            int(meta["meta_n_features"]),
            int(meta["meta_depth"]),
            meta,
        )

    def raw_scores(self, features: np.ndarray) -> np.ndarray:
        """The log-odds of the positive class per row (scikit-learn's `decision_function`)."""
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise ValueError(
                f"{self.path.name} expects {self.n_features} features per row, got an array of shape {features.shape}"
            )
        rows = np.arange(len(features))[:, None]
        node = np.broadcast_to(self.roots, (len(features), len(self.roots))).copy()
        # One step down every tree per pass; a row that reached a leaf stays there.
        for _ in range(self.depth):
            values = features[rows, self.feature[node]]
            go_left = np.where(np.isnan(values), self.missing_left[node], values <= self.threshold[node])
            node = np.where(self.is_leaf[node], node, np.where(go_left, self.left[node], self.right[node]))
        return self.baseline + self.value[node].sum(axis=1)


def flatten_histogram_boosting(model: Any) -> dict[str, np.ndarray]:
    """The node table of a fitted binary HistGradientBoostingClassifier (numerical features only), for `savez`."""
    tables, roots, offset, depth = [], [], 0, 0
    for (predictor,) in model._predictors:  # one tree per boosting iteration for a binary model
        nodes = predictor.nodes
        if nodes["is_categorical"].any():
            raise ValueError("categorical splits are not supported by the numpy trees")
        roots.append(offset)
        tables.append((nodes, offset))
        depth = max(depth, int(nodes["depth"].max()))
        offset += len(nodes)
    cat = np.concatenate
    return {
        "feature": cat([n["feature_idx"] for n, _ in tables]).astype(np.int32),
        "threshold": cat([n["num_threshold"] for n, _ in tables]).astype(np.float64),
        "left": cat([n["left"].astype(np.int64) + o for n, o in tables]).astype(np.int32),
        "right": cat([n["right"].astype(np.int64) + o for n, o in tables]).astype(np.int32),
        "is_leaf": cat([n["is_leaf"] for n, _ in tables]).astype(bool),
        "value": cat([n["value"] for n, _ in tables]).astype(np.float64),
        "missing_left": cat([n["missing_go_to_left"] for n, _ in tables]).astype(bool),
        "roots": np.asarray(roots, dtype=np.int32),
        "baseline": np.asarray(float(np.ravel(model._baseline_prediction)[0])),
        "meta_n_features": np.asarray(int(model.n_features_in_)),
        "meta_depth": np.asarray(depth),
    }
