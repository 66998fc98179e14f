"""Train the two shipped classifiers and print how well they separate on held-out data.

    SFT_SHARED_DATA=../shared/data .venv/bin/python benchmarks/train_classifiers.py [--only style|tasks]
    (make classifiers)

Writes `trainer_image/sft_trainer/resources/classifiers/{style,tasks}.npz`
(numpy arrays: the style model's tree nodes, the task head's standardisation,
coefficients and intercept, and `meta_*` entries with the threshold and the
figures printed here). scikit-learn is
used here only; the pipeline reads the weights with numpy.

**Style** (`style.npz` and `style_words.npz`, read by `curation/style.py`):
gradient-boosted trees (HistGradientBoostingClassifier, exported to numpy by
`curation/trees.py`) over `style.feature_matrix` of the response beside its
prompt and,
stacked, the logit of a logistic regression over the tf-idf of its cased
word unigrams and bigrams (the trees are fitted on that model's out-of-fold
logits). Every source is cut by `noise.calibration_half` (CRC-32 of the
prompt): the models are fitted on the calibration half, the threshold is
chosen on the calibration half's out-of-fold scores of the whole stack (5
folds, each prompt in one fold; the word logits inside each fold's training
part are out-of-fold again), and the figures are measured on the held-out
half, which the tests score. AlpacaEval's six generators answer the same
prompts, so one prompt's answers are all in the same half and fold. The
human answers beside LIMA (OpenAssistant, self-instruct) train with both
halves: no test scores them, and more of them raised the long chat answers
caught at 0.8% of LIMA out-of-fold from 0.74 to 0.80 (three fold seeds;
held out, 0.784 -> 0.779 of all long chat answers, LIMA flagged 1.4 -> 1.2%).
- human (label 0): LIMA, OpenAssistant assistant replies not flagged
  synthetic, self-instruct seed and user-oriented instances;
- assistant style (label 1): AlpacaEval outputs of gpt4, gpt-3.5-turbo-0301,
  claude-2 and llama-2-70b-chat-hf (chat-tuned models: markdown lists, "Here
  are some...", closing summaries), GPT-4 Alpaca, GPTeacher role-play;
- left out of training, scored for information: AlpacaEval text_davinci_003
  and alpaca-7b (instruction-tuned, not chat-tuned: short plain answers in
  the style of raw Alpaca; calling them "assistant style" would teach the
  classifier that a short plain answer is synthetic and flag terse human
  answers), GPTeacher code generation (its answers are code, which has no
  chat style), raw Alpaca (text-davinci-003, the data users most often curate).
The judge decides only on answers of at least `min_words` words: the start
of the first band of `LENGTH_EDGES` from which the out-of-fold AUC of LIMA
against the chat models' answers is `MIN_JUDGED_AUC` or better in every
longer band (shorter answers are scored, never rejected for style).
The threshold is the lowest at which at most `HUMAN_FP_TARGET` of the
calibration half's out-of-fold LIMA scores exceed it, counting only the
answers long enough to be judged; the learning rate is
the one whose out-of-fold scores put the most long chat-model answers (the
noise kit's assistant_style donors) above that threshold. The perplexity
blend (`style.PerplexityBlend`, read when the packaged scorer LM ran) is
fitted the same way: the long calibration rows are scored by the scorer at
its default windows (perplexity only, cached in `.cache/scorer_scores.jsonl`:
about 30 min on 2 CPU cores the first time), and of `PERPLEXITY_WEIGHTS` the
weight that puts the most long chat answers above the LIMA cut of the blended
out-of-fold scores is kept. Where that cut
lands on answers the model never saw, `benchmarks/nested_style_cut.py` tells
from the same rows (`fit_style` on four fifths, judged on the fifth).

**Task labels** (`tasks.npz`, read by `curation/tasks.LearnedTaskLabeller`):
multinomial logistic regression over the prompt and response embeddings,
the rules' label (one-hot), whether the prompt carries a context paragraph
and whether the response is code. Training labels, all committed under
benchmarks/data/ (README.md there says how each was made): hand labels of
Alpaca records outside the audit sample, self-instruct seed tasks labelled by
their task name, GPTeacher code generation (coding) and role-play (creative
writing) samples, and the rules' labels on Alpaca records for the rule
classes whose precision on the hand labels is at least `RULE_PRECISION`.
The regularisation strength is chosen by 5-fold cross-validation on the hand
labels. The audit sample (tests/data/curation/alpaca_audit_labels.jsonl) is
never read here: `benchmarks/curation_audit.py` and the tests measure on it.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import random
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "trainer_image"))

from sft_trainer.curation import gptisms, linear, noise, style, tasks, trees  # noqa: E402
from sft_trainer.curation.text import last_response, last_user_turn, prompt_text  # noqa: E402
from sft_trainer.formats import Conversation, Message, RejectedRecord, read_dataset  # noqa: E402

LABELS_DIR = ROOT / "benchmarks" / "data"
CACHE_DIR = ROOT / ".cache" / "embeddings"
SEED = 0
FOLDS = 5
HUMAN_FP_TARGET = 0.008
"""Share of human (LIMA) answers the style threshold may flag on the calibration half's out-of-fold scores
(the goal allows 1% on the held-out half; a little under it leaves room for sampling error)."""
GPTISM_MAX_DENSITY = 15.0
"""The GPT-ism step's default threshold (config GptismStep.max_density), measured beside the classifier."""
RULE_PRECISION = 0.9
"""A rule class lends its labels to training when at least this share of the hand labels it predicts agree."""
RULE_LABELS_PER_CLASS = 150
GPTEACHER_PER_SOURCE = 150
LENGTH_EDGES = (0, 50, 100, 150, 200, 250)
"""Bands of answer length (words) in which the style model's separation is measured."""
MIN_JUDGED_AUC = 0.95
"""The judge decides only from the answer length on which the model tells LIMA from chat models this well."""
STYLE_LEARNING_RATES = (0.05, 0.1)
STYLE_TREES = 300
STYLE_LEAVES = 15
STYLE_WORD_C = 3.0
"""Inverse regularisation of the word n-gram model (the better of 3 and 10 on out-of-fold scores)."""
STYLE_WORD_VOCABULARY = 30_000
"""The most frequent cased word unigrams and bigrams kept (the shipped vocabulary)."""
PERPLEXITY_WEIGHTS = (0.25, 0.5, 0.75, 1.0)
"""Weights tried for the scorer LM's perplexity term in the style logit (`style.PerplexityBlend`)."""
SCORER_CACHE = ROOT / ".cache" / "scorer_scores.jsonl"
"""The packaged scorer's scores of the long style rows, by content (`calibrate_scorer.score_all`): 2 CPU cores
score about one record a second, so only the first `make classifiers` pays for them."""
KIT_SOURCES = frozenset(f"alpaca_eval_{m}" for m in noise.CHAT_MODELS)
"""The sources the noise kit's assistant_style plants come from (its donors)."""
TASK_C_GRID = (0.01, 0.03)
WORD_WEIGHTS = (10.0, 30.0)
"""Strength of the instruction's tf-idf columns against the standardised embedding columns."""

Encode = Callable[[Sequence[str]], np.ndarray]


# --------------------------------------------------------------------------
# Embeddings, cached on disk by text (a rerun costs seconds, not minutes)
# --------------------------------------------------------------------------


def cached_encoder(encode: Encode, name: str) -> Encode:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"{hashlib.sha1(name.encode()).hexdigest()[:12]}.npz"
    store: dict[str, np.ndarray] = dict(np.load(path)) if path.exists() else {}

    def run(texts: Sequence[str]) -> np.ndarray:
        keys = [hashlib.sha1(t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in store}.items())
        if todo:
            print(f"  embedding {len(todo)} texts...", flush=True)
            vectors = encode([t for _, t in todo])
            store.update({k: v for (k, _), v in zip(todo, vectors, strict=True)})
            np.savez(path, **store)
        return np.stack([store[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)

    return run


def default_encoder() -> tuple[Encode, str]:
    """The embedder the pipeline uses by default (`curation.embedder.model` unset): the heads are trained on its vectors."""
    from sft_trainer.models.embedder import load_embedder

    embedder = load_embedder(None, "cpu")
    return embedder.encode, embedder.name


# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------


def _read(path: Path) -> list[Conversation]:
    out = []
    for item in read_dataset(path):
        if isinstance(item, RejectedRecord):
            raise ValueError(f"{path}: record {item.source_index} is unreadable: {item.reasons}")
        out.append(item)
    return out


def _pair(prompt: str, response: str, index: int) -> Conversation:
    return Conversation([Message("user", prompt), Message("assistant", response)], index)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def oasst_human_replies(data: Path) -> list[Conversation]:
    """Assistant replies written by people, each with the message it answers (synthetic messages skipped)."""
    out: list[Conversation] = []

    def walk(node: dict, parent: dict | None) -> None:
        human = not node.get("synthetic") and parent is not None and not parent.get("synthetic")
        if node.get("role") == "assistant" and human and node.get("lang", "en") == "en":
            out.append(_pair(parent["text"], node["text"], len(out)))
        for child in node.get("replies", []):
            walk(child, node)

    for tree in _jsonl(data / "oasst_en_100_tree.jsonl"):
        walk(tree["prompt"], None)
    return out


def self_instruct_pairs(path: Path) -> list[Conversation]:
    out = []
    for row in _jsonl(path):
        for inst in row["instances"]:
            if inst["output"].strip():
                prompt = row["instruction"] + (f"\n\n{inst['input']}" if inst["input"].strip() else "")
                out.append(_pair(prompt, inst["output"], len(out)))
    return out


def alpaca_eval(data: Path, model: str) -> list[Conversation]:
    return noise.load_chat_answers(data, models=(model,))


@dataclass
class Source:
    name: str
    convs: list[Conversation]
    label: int | None
    """1 assistant style, 0 human, None: scored for information only."""
    held_out: bool = True
    """False: no test scores this source, so both halves train (the human answers beside LIMA are scarce)."""


def style_sources(data: Path, rng: random.Random) -> list[Source]:
    roleplay = _read(data / "gpteacher_roleplay_instruct.json")
    codegen = _read(data / "gpteacher_codegen_instruct.json")
    alpaca = noise.load_alpaca(data)
    return [
        Source("lima", noise.load_lima(data), 0),
        Source("oasst_human", oasst_human_replies(data), 0, held_out=False),
        Source("self_instruct_seeds", self_instruct_pairs(data / "self_instruct_seed_tasks.jsonl"), 0, held_out=False),
        Source(
            "self_instruct_user_oriented",
            self_instruct_pairs(data / "self_instruct_user_oriented_instructions.jsonl"),
            0,
            held_out=False,
        ),
        *(Source(f"alpaca_eval_{m}", alpaca_eval(data, m), 1) for m in noise.CHAT_MODELS),
        Source("alpaca_gpt4", _read(data / "alpaca_gpt4_en_demo_llamafactory.json"), 1),
        Source("gpteacher_roleplay", rng.sample(roleplay, 800), 1),
        Source("alpaca_eval_text_davinci_003", alpaca_eval(data, "text_davinci_003"), None),
        Source("alpaca_eval_alpaca-7b", alpaca_eval(data, "alpaca-7b"), None),
        Source("gpteacher_codegen", rng.sample(codegen, 300), None),
        Source("raw_alpaca", rng.sample(alpaca, 4000), None),
    ]


# --------------------------------------------------------------------------
# Style
# --------------------------------------------------------------------------


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def style_estimator(learning_rate: float):  # noqa: ANN201
    """Boosted trees over the style features, classes weighted to equal total weight."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=STYLE_TREES,
        learning_rate=learning_rate,
        max_leaf_nodes=STYLE_LEAVES,
        class_weight="balanced",
        early_stopping=False,
        random_state=SEED,
    )


def save_trees(path: Path, model, meta: dict) -> None:  # noqa: ANN001
    arrays = trees.flatten_histogram_boosting(model)
    for key, value in meta.items():
        arrays[f"meta_{key}"] = np.asarray(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def fit_word_model(texts: Sequence[str], labels: np.ndarray):  # noqa: ANN201
    """The style model's word part: logistic regression over tf-idf of cased word unigrams and bigrams."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    vectorizer = TfidfVectorizer(
        ngram_range=(1, 2),
        sublinear_tf=True,
        min_df=2,
        lowercase=False,
        token_pattern=linear.CASED_TOKEN_PATTERN,
        max_features=STYLE_WORD_VOCABULARY,
    )
    logistic = LogisticRegression(C=STYLE_WORD_C, max_iter=3000, class_weight="balanced")
    return make_pipeline(vectorizer, logistic).fit(list(texts), labels)


def out_of_fold_word_logits(texts: Sequence[str], labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each row's word-model logit from a model fitted without its prompt group: the trees' training input (stacking)."""
    out = np.zeros(len(texts))
    for train, test in prompt_folds(labels, groups):
        model = fit_word_model([texts[i] for i in train], labels[train])
        out[test] = model.decision_function([texts[i] for i in test])
    return out


def prompt_folds(labels: np.ndarray, groups: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """FOLDS stratified folds that keep every prompt in one fold (AlpacaEval's generators answer the same prompts)."""
    from sklearn.model_selection import StratifiedGroupKFold

    return list(StratifiedGroupKFold(FOLDS, shuffle=True, random_state=SEED).split(labels, labels, groups))


def save_word_model(path: Path, model) -> None:  # noqa: ANN001
    vectorizer, logistic = model[0], model[-1]
    vocabulary = vectorizer.get_feature_names_out()
    np.savez_compressed(
        path,
        mean=np.zeros(len(vocabulary)),
        scale=np.ones(len(vocabulary)),
        coef=logistic.coef_.astype(np.float64),
        intercept=logistic.intercept_,
        vocabulary=np.asarray([str(t) for t in vocabulary]),
        idf=vectorizer.idf_.astype(np.float64),
    )


def auc_by_length(words: np.ndarray, pred: np.ndarray, human: np.ndarray, chat: np.ndarray) -> dict[int, float]:
    """Out-of-fold AUC of LIMA against the chat models' answers within each band of `LENGTH_EDGES` (keyed by its start)."""
    out = {}
    for start, end in zip(LENGTH_EDGES, (*LENGTH_EDGES[1:], np.inf), strict=True):
        band = (words >= start) & (words < end)
        out[int(start)] = round(roc_auc(chat[band & (human | chat)], pred[band & (human | chat)]), 4)
    return out


def shortest_separated_length(by_length: dict[int, float]) -> int:
    """The start of the first length band from which every longer band separates at MIN_JUDGED_AUC or better."""
    starts = sorted(by_length)
    for start in starts:
        if all(by_length[s] >= MIN_JUDGED_AUC for s in starts if s >= start):
            return start
    raise SystemExit(f"no answer length separates chat models from people at AUC {MIN_JUDGED_AUC}: {by_length}")


def lima_cut(pred: np.ndarray, long_enough: np.ndarray, is_lima: np.ndarray) -> float:
    """The lowest threshold that flags at most HUMAN_FP_TARGET of LIMA, counting only answers long enough to judge."""
    judged = np.where(long_enough, pred, 0.0)
    return float(np.quantile(judged[is_lima], 1 - HUMAN_FP_TARGET, method="higher"))


@dataclass
class StyleRows:
    """The style model's training rows, with the masks the goal reads: LIMA, the kit's sources, the kit-like
    (long) chat answers."""

    texts: list[str]
    features: np.ndarray
    labels: np.ndarray
    prompt_groups: np.ndarray
    words: np.ndarray
    is_lima: np.ndarray
    is_kit_source: np.ndarray
    kit_like: np.ndarray

    def subset(self, index: np.ndarray) -> StyleRows:
        arrays = (self.features, self.labels, self.prompt_groups, self.words, self.is_lima, self.is_kit_source)
        return StyleRows([self.texts[i] for i in index], *(a[index] for a in arrays), self.kit_like[index])


@dataclass
class StyleFit:
    """A fitted stack (word model, trees) with the threshold, judged length and learning rate chosen out of fold."""

    word_model: Any
    trees: Any
    train_inputs: np.ndarray
    """The trees' training rows: the features and the out-of-fold word logits."""
    chosen: dict
    """learning_rate, threshold, min_words and the out-of-fold figures they were chosen by."""
    out_of_fold: np.ndarray
    """The whole stack's out-of-fold probabilities at the chosen learning rate."""

    def probabilities(self, texts: Sequence[str], features: np.ndarray) -> np.ndarray:
        return self.trees.predict_proba(np.column_stack([features, self.word_model.decision_function(texts)]))[:, 1]


@dataclass
class StyleData:
    sources: list[Source]
    labelled: list[Source]
    halves: dict[bool, dict[str, list[Conversation]]]
    """True: the training part of each source (its calibration half, or all of it), False: its held-out half."""
    rows: StyleRows
    """The training part's rows."""


def style_data(data: Path) -> StyleData:
    sources = style_sources(data, random.Random(SEED))
    halves: dict[bool, dict[str, list[Conversation]]] = {True: {}, False: {}}
    for src in sources:
        for half in (True, False):
            halves[half][src.name] = [c for c in src.convs if noise.calibration_half(c) == half or not src.held_out]
        if not src.held_out:
            halves[False][src.name] = []
    labelled = [s for s in sources if s.label is not None]
    cal = [c for s in labelled for c in halves[True][s.name]]
    texts = [last_response(c) for c in cal]
    group = np.concatenate([np.full(len(halves[True][s.name]), i) for i, s in enumerate(labelled)])
    # The goal's terms on the calibration half: the noise kit plants long chat-model answers.
    kit_like = np.array(
        [
            s.name in KIT_SOURCES and len(last_response(c).split()) >= noise.MIN_CHAT_ANSWER_WORDS
            for s in labelled
            for c in halves[True][s.name]
        ]
    )
    rows = StyleRows(
        texts=texts,
        features=style.feature_matrix([last_user_turn(c) for c in cal], texts),
        labels=np.concatenate([np.full(len(halves[True][s.name]), s.label) for s in labelled]),
        prompt_groups=np.unique([prompt_text(c) for c in cal], return_inverse=True)[1],
        words=np.array([style.word_count(t) for t in texts]),
        is_lima=group == [s.name for s in labelled].index("lima"),
        is_kit_source=np.isin(group, [i for i, s in enumerate(labelled) if s.name in KIT_SOURCES]),
        kit_like=kit_like,
    )
    return StyleData(sources, labelled, halves, rows)


def fit_style(rows: StyleRows) -> StyleFit:
    """Choose the learning rate, judged length and threshold on out-of-fold scores, then fit the stack on all rows."""
    texts, y = rows.texts, rows.labels
    # Out-of-fold scores of the whole stack: in each outer fold the word model's logits that
    # the trees train on are themselves out-of-fold within the training part.
    folds = prompt_folds(y, rows.prompt_groups)
    stacked = []
    for train, test in folds:
        train_texts = [texts[i] for i in train]
        inner = out_of_fold_word_logits(train_texts, y[train], rows.prompt_groups[train])
        outer = fit_word_model(train_texts, y[train]).decision_function([texts[i] for i in test])
        stacked.append((np.column_stack([rows.features[train], inner]), np.column_stack([rows.features[test], outer])))
        print(f"  word model: fold {len(stacked)}/{FOLDS} done", flush=True)
    best: dict = {"kit_recall": -1.0}
    for c in STYLE_LEARNING_RATES:
        pred = np.zeros(len(y))
        for (train, test), (x_train, x_test) in zip(folds, stacked, strict=True):
            pred[test] = style_estimator(c).fit(x_train, y[train]).predict_proba(x_test)[:, 1]
        by_length = auc_by_length(rows.words, pred, rows.is_lima, rows.is_kit_source)
        min_words = shortest_separated_length(by_length)
        threshold = lima_cut(pred, rows.words >= min_words, rows.is_lima)
        recall = float((pred[rows.kit_like] > threshold).mean())
        print(
            f"  style learning rate {c}: out-of-fold AUC {roc_auc(y, pred):.4f}, judged from {min_words} words"
            f" (LIMA vs chat AUC by length {by_length}), long chat answers above the LIMA cut {recall:.3f}"
        )
        if recall > best["kit_recall"]:
            lima_flagged = float(np.mean((pred[rows.is_lima] > threshold) & (rows.words[rows.is_lima] >= min_words)))
            best = {"learning_rate": c, "kit_recall": recall, "auc": roc_auc(y, pred), "min_words": min_words,
                    "threshold": threshold, "auc_by_length": by_length, "lima_flagged": lima_flagged}  # fmt: skip
            out_of_fold = pred
    x_train = np.column_stack([rows.features, out_of_fold_word_logits(texts, y, rows.prompt_groups)])
    trees = style_estimator(best["learning_rate"]).fit(x_train, y)
    return StyleFit(fit_word_model(texts, y), trees, x_train, best, out_of_fold)


@functools.cache
def packaged_scorer():  # noqa: ANN201
    """The packaged scorer at its default windows, loaded once for the three sets `train_style` scores."""
    from sft_trainer.models.scorer import ScorerLM

    return ScorerLM.load(None)


def scorer_perplexities(convs: Sequence[Conversation]) -> np.ndarray:
    """The packaged scorer's `cond_ppl` of each record at the default windows, as curation computes it (NaN: none)."""
    import calibrate_scorer  # benchmarks/ is this script's folder

    if convs:
        calibrate_scorer.score_all(packaged_scorer(), convs, SCORER_CACHE, with_order=False)
    values = [c.meta["scores"]["cond_ppl"] for c in convs]
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def long_perplexities(convs: Sequence[Conversation], min_words: int) -> np.ndarray:
    """`scorer_perplexities` of the records the judge decides on (at least `min_words` words); NaN for the others."""
    out = np.full(len(convs), np.nan)
    long = [i for i, c in enumerate(convs) if style.word_count(last_response(c)) >= min_words]
    out[long] = scorer_perplexities([convs[i] for i in long])
    return out


def fit_perplexity_blend(rows: StyleRows, fit: StyleFit, perplexity: np.ndarray) -> tuple[style.PerplexityBlend, dict]:
    """The perplexity term's weight, chosen like the learning rate: the one whose blended out-of-fold scores put
    the most long chat answers above the LIMA cut; the offset moves that cut onto the shipped threshold."""
    long_enough = rows.words >= fit.chosen["min_words"]
    log_ppl = np.log(perplexity)
    usable = long_enough & np.isfinite(log_ppl) & (perplexity >= 1.0)
    mean, scale = float(log_ppl[usable].mean()), float(log_ppl[usable].std())
    logits = logit(fit.out_of_fold)
    term = np.where(usable, (mean - np.where(usable, log_ppl, 0.0)) / scale, 0.0)
    by_weight = {}
    for weight in PERPLEXITY_WEIGHTS:
        pred = linear.sigmoid(logits + np.clip(weight * term, -style.MAX_SHIFT, style.MAX_SHIFT))
        cut = lima_cut(pred, long_enough, rows.is_lima)
        by_weight[weight] = (float((pred[rows.kit_like] > cut).mean()), cut)
    weight = max(by_weight, key=lambda w: by_weight[w][0])
    recall, cut = by_weight[weight]
    blend = style.PerplexityBlend(
        weight, mean, scale, float(logit(np.array(fit.chosen["threshold"])) - logit(np.array(cut)))
    )
    figures = {
        "weight": weight, "mean_log_ppl": mean, "scale": scale, "offset": blend.offset,
        "cv_auc_ppl_alone": roc_auc(rows.kit_like[usable & (rows.is_lima | rows.kit_like)], -log_ppl[usable & (rows.is_lima | rows.kit_like)]),
        "cv_kit_recall_by_weight": {str(w): r for w, (r, _) in by_weight.items()},
    }  # fmt: skip
    return blend, figures


def logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(clipped / (1 - clipped))


def train_style(data: Path) -> dict:
    prepared = style_data(data)
    sources, labelled, halves = prepared.sources, prepared.labelled, prepared.halves
    fit = fit_style(prepared.rows)
    best, word_model, model = fit.chosen, fit.word_model, fit.trees
    threshold, min_words = best["threshold"], best["min_words"]
    texts_cal, x_cal = prepared.rows.texts, fit.train_inputs
    calibration = [c for s in labelled for c in halves[True][s.name]]  # the rows' order
    blend, blend_figures = fit_perplexity_blend(prepared.rows, fit, long_perplexities(calibration, min_words))

    def scores(convs: Sequence[Conversation], perplexity: np.ndarray | None = None) -> np.ndarray:
        texts = [last_response(c) for c in convs]
        p = fit.probabilities(texts, style.feature_matrix([last_user_turn(c) for c in convs], texts))
        if perplexity is None:
            return p
        return linear.sigmoid(logit(p) + blend.shifts(perplexity))

    def probs(name: str, half: bool) -> np.ndarray:
        convs = halves[half][name]
        return scores(convs) if convs else np.zeros(0)

    def judged(convs: Sequence[Conversation], p: np.ndarray) -> np.ndarray:
        """What StyleJudge rejects with the shipped defaults: long enough and above the threshold."""
        rule = style.judged_assistant_style
        return np.array(
            [rule(last_response(c), float(q), threshold, min_words) for c, q in zip(convs, p, strict=True)], dtype=bool
        )

    report: dict = {
        "learning_rate": best["learning_rate"],
        "threshold": threshold,
        "min_words": min_words,
        "cv_auc": best["auc"],
        "cv_kit_recall": best["kit_recall"],
        "cv_lima_vs_chat_auc_by_length": best["auc_by_length"],
        "sources": {},
    }
    for half, label in ((True, "calibration"), (False, "held_out")):
        ys, ps = [], []
        flags = []
        for src in labelled:
            p = probs(src.name, half)
            ys.append(np.full(len(p), src.label))
            ps.append(p)
            flags.append(judged(halves[half][src.name], p))
        y, p, flagged = np.concatenate(ys), np.concatenate(ps), np.concatenate(flags)
        report[label] = {
            "auc": roc_auc(y, p),
            "precision": float((flagged & (y == 1)).sum() / max(1, flagged.sum())),
            "recall": float((flagged & (y == 1)).sum() / max(1, (y == 1).sum())),
            "human_flagged": float((flagged & (y == 0)).sum() / max(1, (y == 0).sum())),
        }
    for src in sources:
        p = probs(src.name, False)
        flagged = judged(halves[False][src.name], p)
        report["sources"][src.name] = {"n": len(p), "flagged": float(flagged.mean()) if len(p) else None}
    # The goal's own terms: the noise kit's assistant_style plants vs clean LIMA, held-out half.
    lima_held = [c for c in noise.load_lima(data) if not noise.calibration_half(c)]
    donors = [c for s in sources if s.name.startswith("alpaca_eval_") and s.label == 1 for c in s.convs]
    planted = noise.plant("assistant_style", lima_held * 4, random.Random(1), chat_answers=donors)
    planted = [c for c in planted if not noise.calibration_half(c)]
    p_planted = scores(planted)
    p_lima = probs("lima", False)
    flag_planted, flag_lima = judged(planted, p_planted), judged(lima_held, p_lima)
    gptisms_planted = np.array([gptisms.response_density(c) > GPTISM_MAX_DENSITY for c in planted])
    gptisms_lima = np.array([gptisms.response_density(c) > GPTISM_MAX_DENSITY for c in lima_held])
    report["noise_kit"] = {
        "gptisms_recall": float(gptisms_planted.mean()),
        "gptisms_lima_flagged": float(gptisms_lima.mean()),
        "either_recall": float((flag_planted | gptisms_planted).mean()),
        "either_lima_flagged": float((flag_lima | gptisms_lima).mean()),
        "assistant_style_n": len(planted),
        "assistant_style_recall": float(flag_planted.mean()),
        "assistant_style_precision": float(flag_planted.sum() / max(1, flag_planted.sum() + flag_lima.sum())),
        "lima_n": len(p_lima),
        "lima_flagged": float(flag_lima.mean()),
        "auc": roc_auc(np.r_[np.ones(len(p_planted)), np.zeros(len(p_lima))], np.r_[p_planted, p_lima]),
    }
    # The same with the scorer LM's perplexity, as curation scores when the LM runs (a GPU, by default).
    flag_planted = judged(planted, scores(planted, long_perplexities(planted, min_words)))
    flag_lima = judged(lima_held, scores(lima_held, long_perplexities(lima_held, min_words)))
    blend_figures["noise_kit"] = {
        "assistant_style_recall": float(flag_planted.mean()),
        "lima_flagged": float(flag_lima.mean()),
    }
    report["perplexity_blend"] = blend_figures
    save_word_model(style.WORD_WEIGHTS, word_model)
    save_trees(
        style.STYLE_WEIGHTS,
        model,
        {
            "threshold": threshold,
            "min_words": min_words,
            "feature_names": list(style.MODEL_INPUTS),
            "heldout_auc": report["held_out"]["auc"],
            "noise_kit_auc": report["noise_kit"]["auc"],
            **{f"lm_{k}": v for k, v in vars(blend).items()},
            "report": json.dumps(report),
        },
    )
    shipped = style.StyleClassifier()
    sample = texts_cal[:: max(1, len(texts_cal) // 300)]  # dense tf-idf rows: a sample, not 4,000 x 30,000
    if not np.allclose(shipped.words.logits(sample), word_model.decision_function(sample), atol=1e-6):
        raise SystemExit("the numpy word model disagrees with scikit-learn's: the export is broken")
    if not np.allclose(shipped.model.raw_scores(x_cal), model.decision_function(x_cal), atol=1e-6):
        raise SystemExit("the numpy trees disagree with scikit-learn's model: the export is broken")
    if shipped.blend != blend:
        raise SystemExit(
            f"the shipped perplexity blend {shipped.blend} is not the fitted {blend}: the export is broken"
        )
    return report


def print_style(report: dict) -> None:
    print(
        f"style: learning rate {report['learning_rate']}, threshold {report['threshold']:.4f}, judged from"
        f" {report['min_words']} words (out-of-fold AUC {report['cv_auc']:.4f}, long chat answers above it"
        f" {report['cv_kit_recall']:.3f}; LIMA vs chat AUC by length {report['cv_lima_vs_chat_auc_by_length']})"
    )
    for half in ("calibration", "held_out"):
        r = report[half]
        print(
            f"  {half:12} AUC {r['auc']:.4f}  precision {r['precision']:.3f}  recall {r['recall']:.3f}"
            f"  human flagged {r['human_flagged']:.4f}"
        )
    print("  held-out share flagged per source:")
    for name, row in report["sources"].items():
        share = "-" if row["flagged"] is None else f"{row['flagged']:.3f}"
        print(f"    {name:32} n={row['n']:5d}  flagged {share}")
    k = report["noise_kit"]
    print(
        f"  noise kit (held-out): assistant_style recall {k['assistant_style_recall']:.3f} (n={k['assistant_style_n']}),"
        f" clean LIMA flagged {k['lima_flagged']:.4f} (n={k['lima_n']}), precision {k['assistant_style_precision']:.3f},"
        f" AUC {k['auc']:.4f}"
    )
    b = report["perplexity_blend"]
    print(
        f"  with the scorer LM's perplexity (weight {b['weight']}; perplexity alone: out-of-fold AUC"
        f" {b['cv_auc_ppl_alone']:.3f}, long LIMA vs long chat): long chat answers above the LIMA cut out of fold"
        f" {b['cv_kit_recall_by_weight']} by weight; noise kit (held-out) recall"
        f" {b['noise_kit']['assistant_style_recall']:.3f}, clean LIMA flagged {b['noise_kit']['lima_flagged']:.4f}"
    )
    print(
        f"  beside it, the GPT-ism step (max density {GPTISM_MAX_DENSITY}): recall {k['gptisms_recall']:.3f},"
        f" LIMA flagged {k['gptisms_lima_flagged']:.4f}; either of the two: recall {k['either_recall']:.3f},"
        f" LIMA flagged {k['either_lima_flagged']:.4f}"
    )


# --------------------------------------------------------------------------
# Task labels
# --------------------------------------------------------------------------


@dataclass
class Labelled:
    conv: Conversation
    task: str
    source: str


def hand_labels(alpaca: list[Conversation]) -> list[Labelled]:
    return [
        Labelled(alpaca[row["source_index"]], row["task"], "alpaca_hand")
        for row in _jsonl(LABELS_DIR / "task_labels_alpaca.jsonl")
    ]


def seed_labels(data: Path) -> list[Labelled]:
    by_id = {row["id"]: row["task"] for row in _jsonl(LABELS_DIR / "task_labels_self_instruct_seeds.jsonl")}
    out = []
    for row in _jsonl(data / "self_instruct_seed_tasks.jsonl"):
        inst = row["instances"][0]
        prompt = row["instruction"] + (f"\n\n{inst['input']}" if inst["input"].strip() else "")
        out.append(Labelled(_pair(prompt, inst["output"], len(out)), by_id[row["id"]], "self_instruct_seeds"))
    return out


def gpteacher_labels(data: Path, rng: random.Random) -> list[Labelled]:
    code = rng.sample(_read(data / "gpteacher_codegen_instruct.json"), GPTEACHER_PER_SOURCE)
    roleplay = rng.sample(_read(data / "gpteacher_roleplay_instruct.json"), GPTEACHER_PER_SOURCE)
    return [Labelled(c, "coding", "gpteacher_codegen") for c in code] + [
        Labelled(c, "creative_writing", "gpteacher_roleplay") for c in roleplay
    ]


def confident_rule_classes(hand: list[Labelled]) -> dict[str, float]:
    """Rule classes whose predictions agree with the hand labels at least RULE_PRECISION of the time."""
    predicted = Counter(tasks.label(h.conv) for h in hand)
    right = Counter(tasks.label(h.conv) for h in hand if tasks.label(h.conv) == h.task)
    return {t: right[t] / n for t, n in predicted.items() if n >= 5 and right[t] / n >= RULE_PRECISION}


def rule_labels(alpaca: list[Conversation], exclude: set[int], classes: set[str], rng: random.Random) -> list[Labelled]:
    """Up to RULE_LABELS_PER_CLASS rule-labelled Alpaca records per confident class, none hand-labelled or audited."""
    pool = [i for i in range(len(alpaca)) if i not in exclude]
    rng.shuffle(pool)
    taken: Counter[str] = Counter()
    out = []
    for i in pool:
        task = tasks.label(alpaca[i])
        if task in classes and taken[task] < RULE_LABELS_PER_CLASS:
            taken[task] += 1
            out.append(Labelled(alpaca[i], task, "alpaca_rules"))
        if len(taken) == len(classes) and all(n == RULE_LABELS_PER_CLASS for n in taken.values()):
            break
    return out


def audit_indexes() -> set[int]:
    """Only the record numbers, so that no audit record is ever used for training; its labels are not read."""
    path = ROOT / "tests" / "data" / "curation" / "alpaca_audit_labels.jsonl"
    return {json.loads(line)["source_index"] for line in path.read_text(encoding="utf-8").splitlines()}


def dense_task_matrix(items: Sequence[Labelled], encode: Encode) -> np.ndarray:
    """Embeddings and rule features: the part of the head's input that is standardised."""
    convs = [h.conv for h in items]
    prompts = encode([prompt_text(c) for c in convs]).astype(np.float64)
    responses = encode([last_response(c) for c in convs]).astype(np.float64)
    return np.hstack([prompts, responses, np.stack([tasks.rule_features(c) for c in convs])])


@dataclass
class TaskHead:
    """A fitted head in the shipped layout: [tf-idf of the instruction x weight | standardised dense features]."""

    vocabulary: list[str]
    idf: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    model: object

    def features(self, items: Sequence[Labelled], dense: np.ndarray) -> np.ndarray:
        words = linear.tfidf([tasks.instruction_text(h.conv) for h in items], self.vocabulary, self.idf)
        return (np.hstack([words, dense]) - self.mean) / self.scale

    def predict(self, items: Sequence[Labelled], dense: np.ndarray) -> np.ndarray:
        return self.model.predict(self.features(items, dense))  # type: ignore[attr-defined]


def fit_task_head(items: Sequence[Labelled], dense: np.ndarray, c: float, word_weight: float) -> TaskHead:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    vectorizer.fit([tasks.instruction_text(h.conv) for h in items])
    vocabulary = [str(t) for t in vectorizer.get_feature_names_out()]
    idf = vectorizer.idf_.astype(np.float64)
    # The tf-idf columns are not centred (sparse counts); their "scale" 1/weight sets their
    # strength against the standardised dense columns.
    mean = np.r_[np.zeros(len(vocabulary)), dense.mean(axis=0)]
    scale = np.r_[np.full(len(vocabulary), 1.0 / word_weight), np.where(dense.std(axis=0) > 0, dense.std(axis=0), 1.0)]
    head = TaskHead(vocabulary, idf, mean, scale, None)
    logistic = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
    head.model = logistic.fit(head.features(items, dense), [h.task for h in items])
    return head


def train_tasks(data: Path, encode: Encode, embedder_name: str) -> dict:
    from sklearn.model_selection import StratifiedKFold

    rng = random.Random(SEED)
    alpaca = noise.load_alpaca(data)
    hand = hand_labels(alpaca)
    audit = audit_indexes()
    if audit & {h.conv.source_index for h in hand}:
        raise SystemExit("a hand-labelled training record is in the audit sample")
    confident = confident_rule_classes(hand)
    extra = seed_labels(data) + gpteacher_labels(data, rng)
    extra += rule_labels(alpaca, audit | {h.conv.source_index for h in hand}, set(confident), rng)
    d_hand, d_extra = dense_task_matrix(hand, encode), dense_task_matrix(extra, encode)
    y_hand = np.array([h.task for h in hand])
    rules_hand = np.mean([tasks.label(h.conv) == h.task for h in hand])

    # Cross-validation on the hand labels (the target distribution): each fold's
    # model sees the other folds plus every extra source.
    counts = Counter(y_hand)
    strat = np.array([t if counts[t] >= FOLDS else "rare" for t in y_hand])
    folds = list(StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(d_hand, strat))
    report: dict = {
        "n_hand": len(hand),
        "n_extra": Counter(h.source for h in extra),
        "confident_rule_classes": confident,
    }
    report["rules_accuracy_on_hand"] = float(rules_hand)
    best, best_acc = (TASK_C_GRID[0], WORD_WEIGHTS[0]), -1.0
    for c in TASK_C_GRID:
        for weight in WORD_WEIGHTS:
            right = 0
            for train, test in folds:
                items = [hand[i] for i in train] + extra
                head = fit_task_head(items, np.vstack([d_hand[train], d_extra]), c, weight)
                right += int((head.predict([hand[i] for i in test], d_hand[test]) == y_hand[test]).sum())
            acc = right / len(y_hand)
            print(
                f"  tasks C={c} word weight {weight}: cross-validated accuracy on the hand labels {acc:.3f}", flush=True
            )
            if acc > best_acc:
                best, best_acc = (c, weight), acc
    head = fit_task_head(hand + extra, np.vstack([d_hand, d_extra]), *best)
    logistic = head.model
    report.update({"C": best[0], "word_weight": best[1], "cv_accuracy": best_acc})
    report["classes"] = [str(c) for c in logistic.classes_]  # type: ignore[attr-defined]
    path = tasks.TASK_WEIGHTS
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        mean=head.mean,
        scale=head.scale,
        coef=logistic.coef_.astype(np.float32),  # type: ignore[attr-defined]
        intercept=logistic.intercept_,  # type: ignore[attr-defined]
        vocabulary=np.asarray(head.vocabulary),
        idf=head.idf,
        meta_classes=np.asarray(report["classes"]),
        meta_embedder=np.asarray(embedder_name),
        meta_cv_accuracy=np.asarray(best_acc),
        meta_report=np.asarray(json.dumps(report)),
    )
    return report


def print_tasks(report: dict) -> None:
    print(
        f"tasks: {report['n_hand']} hand labels + {dict(report['n_extra'])};"
        f" rule classes lent: {', '.join(f'{t} ({p:.2f})' for t, p in report['confident_rule_classes'].items())}"
    )
    print(
        f"  C={report['C']}, word weight {report['word_weight']}: cross-validated accuracy on the hand labels {report['cv_accuracy']:.3f}"
        f" (rules alone: {report['rules_accuracy_on_hand']:.3f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("style", "tasks"))
    args = parser.parse_args()
    data = noise.shared_data_dir()
    if args.only in (None, "style"):
        print_style(train_style(data))
    if args.only in (None, "tasks"):
        encode, name = default_encoder()
        print_tasks(train_tasks(data, cached_encoder(encode, name), name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
