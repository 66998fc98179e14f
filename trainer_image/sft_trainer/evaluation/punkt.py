"""NLTK Punkt sentence-splitter parameters for the IFEval checkers, trained here and shipped with the trainer.

The IFEval checkers count sentences with NLTK's Punkt English model
(`punkt_tab`). NLTK downloads that model from the internet and no package
registry carries it, so an evaluation pod cannot fetch it. Punkt is
unsupervised: its parameters (abbreviations, collocations, frequent sentence
starters, orthographic context) are learned from plain text by
`nltk.tokenize.punkt.PunktTrainer`. We train them once from permissively
licensed English text (see `TRAINING_SOURCES`), add a short list of common
English abbreviations written for this project (Punkt learns an abbreviation
only from enough occurrences, and our text is small next to the newswire
corpus NLTK's own model came from), and ship the result as package data:
`resources/nltk_data/tokenizers/punkt_tab/english/`. `use_packaged_punkt()`
puts that folder first on NLTK's search path, so every machine splits
sentences the same way and nothing is ever downloaded.

Rebuild (and compare with a regex splitter on LIMA answers, which are never
trained on):

    python -m sft_trainer.evaluation.punkt build ../shared/data
    python -m sft_trainer.evaluation.punkt compare ../shared/data
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

# Permissive licences only: the parameters are shipped in the trainer.
TRAINING_SOURCES = {
    "oasst_en_100_tree.jsonl": "Apache-2.0; human-written messages only (synthetic ones skipped)",
    "gpteacher_roleplay_instruct.json": "MIT; responses",
    "self_instruct_seed_tasks.jsonl": "Apache-2.0; instructions and outputs",
    "self_instruct_user_oriented_instructions.jsonl": "Apache-2.0; instructions and outputs",
}

# Lower-case, without the final period, as Punkt stores them.
SEED_ABBREVIATIONS = [
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "sr",
    "jr",
    "st",
    "mt",
    "ft",
    "vs",
    "etc",
    "e.g",
    "i.e",
    "cf",
    "al",
    "approx",
    "dept",
    "est",
    "inc",
    "ltd",
    "co",
    "corp",
    "govt",
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "mon",
    "tue",
    "wed",
    "thu",
    "fri",
    "sat",
    "sun",
    "no",
    "vol",
    "p",
    "pp",
    "fig",
    "eq",
    "ch",
    "sec",
    "u.s",
    "u.k",
    "u.n",
    "a.m",
    "p.m",
    "b.c",
    "a.d",
    "ph.d",
    "m.d",
    "b.a",
    "m.a",
    "b.sc",
    "gen",
    "col",
    "lt",
    "sgt",
    "capt",
    "rev",
    "hon",
    "gov",
    "sen",
    "rep",
    "pres",
]


def packaged_root() -> Path:
    return Path(str(resources.files("sft_trainer.resources").joinpath("nltk_data")))


def english_dir(root: Path) -> Path:
    return root / "tokenizers" / "punkt_tab" / "english"


def use_packaged_punkt() -> Path:
    """Put the shipped Punkt parameters first on NLTK's search path; returns their root.

    Raises FileNotFoundError naming the folder when the package lacks them.
    """
    import nltk

    root = packaged_root()
    if not (english_dir(root) / "abbrev_types.txt").is_file():
        raise FileNotFoundError(f"the Punkt parameters are missing from {english_dir(root)}; rebuild them: {__doc__}")
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return root


def training_text(shared_data: Path) -> str:
    texts: list[str] = []

    def walk(node: dict) -> None:
        if node.get("lang") == "en" and not node.get("synthetic") and not node.get("deleted"):
            texts.append(node["text"])
        for reply in node.get("replies", []):
            walk(reply)

    for line in (shared_data / "oasst_en_100_tree.jsonl").read_text(encoding="utf-8").splitlines():
        walk(json.loads(line)["prompt"])
    texts += [r["response"] for r in json.loads((shared_data / "gpteacher_roleplay_instruct.json").read_text())]
    for name in ("self_instruct_seed_tasks.jsonl", "self_instruct_user_oriented_instructions.jsonl"):
        for line in (shared_data / name).read_text(encoding="utf-8").splitlines():
            task = json.loads(line)
            texts.append(task["instruction"])
            texts += [i["output"] for i in task["instances"] if i.get("output")]
    texts.append(resources.files("sft_trainer.resources").joinpath("reference_text.txt").read_text(encoding="utf-8"))
    return "\n\n".join(texts)


def build(shared_data: Path, root: Path) -> dict[str, int]:
    """Train Punkt on TRAINING_SOURCES, add SEED_ABBREVIATIONS, write punkt_tab files under `root`."""
    import nltk
    from nltk.tokenize.punkt import PunktTrainer, save_punkt_params

    trainer = PunktTrainer()
    trainer.train(training_text(shared_data), finalize=True)
    params = trainer.get_params()
    params.abbrev_types |= set(SEED_ABBREVIATIONS)
    target = english_dir(root)
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(0o700)  # NLTK refuses to write into a folder others can write to
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    save_punkt_params(params, dir=str(target))
    return {
        "abbreviations": len(params.abbrev_types),
        "collocations": len(params.collocations),
        "sentenceStarters": len(params.sent_starters),
        "orthographicContexts": len(params.ortho_context),
    }


def compare(shared_data: Path, sample: int = 300) -> dict[str, float]:
    """Sentence counts of the shipped Punkt vs the IFEval package's regex splitter on LIMA answers."""
    use_packaged_punkt()
    from if_verifiable.ifeval.instructions_util import count_sentences, split_into_sentences

    records = json.loads((shared_data / "lima_llamafactory.json").read_text(encoding="utf-8"))
    answers = [r["output"] for r in records[:sample] if r.get("output")]
    punkt = [count_sentences(a) for a in answers]
    regex = [len(split_into_sentences(a)) for a in answers]
    same = sum(p == r for p, r in zip(punkt, regex, strict=True))
    within_one = sum(abs(p - r) <= 1 for p, r in zip(punkt, regex, strict=True))
    return {
        "answers": len(answers),
        "punktSentences": sum(punkt),
        "regexSentences": sum(regex),
        "sameCount": same / len(answers),
        "withinOne": within_one / len(answers),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sft_trainer.evaluation.punkt", description=__doc__)
    parser.add_argument("command", choices=["build", "compare"])
    parser.add_argument("shared_data", type=Path, help="the shared data folder (../shared/data)")
    parser.add_argument("--out", type=Path, default=None, help="nltk_data root to write (default: the package's)")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(json.dumps(build(args.shared_data, args.out or packaged_root()), indent=2))
    else:
        print(json.dumps(compare(args.shared_data), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
