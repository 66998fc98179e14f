"""How much unseen LIMA the style judge's cut flags, measured on the style model's training data alone.

    SFT_SHARED_DATA=../shared/data .venv/bin/python benchmarks/nested_style_cut.py   (about 20 min on 2 cores)

`benchmarks/train_classifiers.py` chooses the style threshold so that at most
`HUMAN_FP_TARGET` (0.8%) of calibration LIMA's out-of-fold scores exceed it,
then fits the shipped model on all of its rows. This script runs that whole
procedure (`train_classifiers.fit_style`) on four fifths of the same rows and
judges the fifth it never saw, five times over (folds grouped by prompt).
It prints, per fold and in total, the share of unseen LIMA flagged against
the out-of-fold share the cut was chosen at, and the long chat answers caught.
It reads no held-out half: it tells, before any test does, where a
calibration choice will land on new data. On 3 December 2026 (shipped
setup, 19 min on 2 cores): unseen LIMA flagged 0.77% (4/521: 0, 0, 1, 0, 3
per fold) against 0.72% out of fold; long chat answers caught 0.734 unseen,
0.768 out of fold; the threshold ranged 0.75-0.95 over the folds.
"""

from __future__ import annotations

import sys

import numpy as np
from train_classifiers import fit_style, noise, prompt_folds, style_data


def main() -> int:
    rows = style_data(noise.shared_data_dir()).rows
    totals = np.zeros(4, dtype=int)  # unseen LIMA flagged, unseen LIMA, unseen kit caught, unseen kit
    out_of_fold = []
    print(
        f"{'fold':>4} {'threshold':>9} {'LIMA unseen':>12} {'out of fold':>11} {'kit unseen':>10} {'out of fold':>11}"
    )
    for fold, (train, test) in enumerate(prompt_folds(rows.labels, rows.prompt_groups), start=1):
        fit = fit_style(rows.subset(train))
        unseen = rows.subset(test)
        p = fit.probabilities(unseen.texts, unseen.features)
        flagged = (unseen.words >= fit.chosen["min_words"]) & (p > fit.chosen["threshold"])
        counts = np.array(
            [flagged[unseen.is_lima].sum(), unseen.is_lima.sum(), flagged[unseen.kit_like].sum(), unseen.kit_like.sum()]
        )
        totals += counts
        out_of_fold.append((fit.chosen["lima_flagged"], fit.chosen["kit_recall"]))
        print(
            f"{fold:>4} {fit.chosen['threshold']:>9.4f} {counts[0]:>5}/{counts[1]:<6} {out_of_fold[-1][0]:>11.2%}"
            f" {counts[2] / counts[3]:>10.3f} {out_of_fold[-1][1]:>11.3f}",
            flush=True,
        )
    lima_oof, kit_oof = np.mean(out_of_fold, axis=0)
    print(
        f"unseen LIMA flagged {totals[0]}/{totals[1]} = {totals[0] / totals[1]:.2%} (out of fold {lima_oof:.2%});"
        f" long chat answers caught {totals[2] / totals[3]:.3f} (out of fold {kit_oof:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
