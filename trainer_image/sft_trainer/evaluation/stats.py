"""Bootstrap 95% confidence intervals over prompts, for figures and for base-vs-tuned deltas.

Every figure of the evaluation is a ratio of sums over prompts: a rate is
sum(hits) / n, instruction-level accuracy is sum(followed) / sum(instructions),
mean per-token NLL is sum(token NLL) / sum(tokens). The bootstrap resamples
prompts (the unit that was sampled) with replacement and recomputes the
ratio, so prompts with several instructions or many tokens weigh as they do
in the figure itself. A delta between two models on the same prompts uses
the *paired* bootstrap: the same resampled prompts for both, which removes the
prompt-to-prompt variance both models share and gives a much tighter interval
than two independent intervals would.

Percentile intervals, 2,000 resamples, a fixed seed: the same inputs give the
same interval on every run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
SEED = 20240601
LEVEL = 0.95


@dataclass(frozen=True, slots=True)
class Estimate:
    """A figure with its bootstrap interval; None bounds when it cannot be computed (no prompts)."""

    value: float | None
    low: float | None
    high: float | None
    n: int

    def to_json(self, digits: int = 4) -> dict[str, float | int | None]:
        return {"value": _round(self.value, digits), "low": _round(self.low, digits),
                "high": _round(self.high, digits), "n": self.n}  # fmt: skip


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def _weights(numerators: Sequence[float], denominators: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    num = np.asarray(numerators, dtype=np.float64)
    den = np.ones_like(num) if denominators is None else np.asarray(denominators, dtype=np.float64)
    if num.shape != den.shape:
        raise ValueError(f"numerators ({num.shape[0]}) and denominators ({den.shape[0]}) differ in length")
    if not (np.isfinite(num).all() and np.isfinite(den).all()):
        raise ValueError("a per-prompt value is NaN or infinite; drop or count such prompts before the bootstrap")
    return num, den


def _draws(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(samples: np.ndarray) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def ratio_estimate(
    numerators: Sequence[float],
    denominators: Sequence[float] | None = None,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Estimate:
    """sum(numerators) / sum(denominators) over prompts (a mean when denominators is None), with its interval."""
    num, den = _weights(numerators, denominators)
    n = int(num.shape[0])
    if n == 0 or den.sum() == 0:
        return Estimate(None, None, None, n)
    value = float(num.sum() / den.sum())
    idx = _draws(n, resamples, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    low, high = _interval(boot)
    return Estimate(value, low, high, n)


def paired_delta(
    base: tuple[Sequence[float], Sequence[float] | None],
    tuned: tuple[Sequence[float], Sequence[float] | None],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Estimate:
    """tuned - base of two ratio figures over the SAME prompts, by the paired bootstrap.

    Each side is (numerators, denominators) per prompt, in the same prompt order.
    """
    b_num, b_den = _weights(*base)
    t_num, t_den = _weights(*tuned)
    if b_num.shape != t_num.shape:
        raise ValueError(f"paired bootstrap needs the same prompts: base has {b_num.shape[0]}, tuned {t_num.shape[0]}")
    n = int(b_num.shape[0])
    if n == 0 or b_den.sum() == 0 or t_den.sum() == 0:
        return Estimate(None, None, None, n)
    value = float(t_num.sum() / t_den.sum() - b_num.sum() / b_den.sum())
    idx = _draws(n, resamples, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = t_num[idx].sum(axis=1) / t_den[idx].sum(axis=1) - b_num[idx].sum(axis=1) / b_den[idx].sum(axis=1)
    low, high = _interval(boot)
    return Estimate(value, low, high, n)
