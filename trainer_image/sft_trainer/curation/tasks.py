"""Step 9, task type: label every record with one of the TaskType values.

Method ("rules", the default): ordered keyword rules over the *instruction*
(the first user turn's first paragraph), with two looks at the rest of the
record: whether the prompt carries a context paragraph (an Alpaca input, a
quoted passage), and whether the response is code. The first rule that
matches wins; the order encodes how we break ties, the same order as the
labelling rule of the committed sample (tests/data/curation/README.md):

    coding > summarization > rewriting > classification > extraction >
    reasoning > creative_writing > brainstorming > closed_qa > open_qa > other

Its accuracy on that hand-labelled sample is measured by
tests/unit/curation/test_tasks.py and reported in docs/curation.md.

Method "learned": `LearnedTaskLabeller`, a multinomial logistic regression
over the prompt and response embeddings (`conv.features["prompt_emb"]`,
`["response_emb"]`), the instruction's words (tf-idf, vocabulary shipped with
the weights), the rules' label and two flags, trained by
`benchmarks/train_classifiers.py` on labels that never include the audit
sample (benchmarks/data/README.md); weights in
`resources/classifiers/tasks.npz`, applied with numpy.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import numpy as np

from ..config.curation import TaskType
from ..formats import Conversation
from .base import Annotator
from .linear import CLASSIFIERS_DIR, LinearModel, softmax, tfidf
from .text import last_response, looks_like_code, prompt_text

if TYPE_CHECKING:
    from ..models.embedder import Embedder

# Rules run on the lower-cased instruction: cheaper than re.IGNORECASE.
_I = 0

_RULES: list[tuple[str, re.Pattern[str]]] = [
    (
        "coding",
        re.compile(
            r"\b(?:code|coding|program|programming|function|script|python|java|javascript|typescript|c\+\+|c#|ruby|golang|rust|php|"
            r"swift|kotlin|sql|query|html|css|json|xml|regex|regular expression|algorithm|api|class|method|variable|array|loop|"
            r"compile|debug|bug|syntax|pseudo-?code|snippet|bash|shell|command line|git|database schema|data structure|"
            r"linked list|binary search|recursion|recursive|sort(?:ing)? algorithm|console|react|node\.js|django|excel formula)\b",
            _I,
        ),
    ),
    (
        "summarization",
        re.compile(
            r"\b(?:summari[sz]e|summary|summarising|summarizing|tl;?dr|condense|sum up|main points|key points|gist|synopsis|abstract of)\b",
            _I,
        ),
    ),
    (
        "rewriting",
        re.compile(
            r"\b(?:rewrite|re-write|rephrase|paraphrase|reword|revise|edit|proofread|correct (?:the |any |this )?(?:grammar|spelling|sentence|errors?|mistakes?|text)|"
            r"fix (?:the |any )?(?:grammar|errors?|sentence)|translate|convert (?:the |this |it )?(?:sentence|text|paragraph|following)|"
            r"change (?:the |this )?(?:sentence|tense|voice|verb)|make (?:the |this |it )?(?:sentence|text|paragraph)?\s*(?:more|less|shorter|longer|concise|formal|informal)|"
            r"simplify|shorten|passive voice|active voice|in (?:the )?(?:past|future|present) tense|replace (?:the )?(?:word|words|phrase)|"
            r"reorder|rearrange|arrange|sort|alphabeti[sz]e|transform (?:the |this )?(?:sentence|text)|capitali[sz]e|punctuat\w*|"
            r"(?:add|insert|delete|remove) (?:\w+ ){0,4}(?:to|into|from) (?:the |this )?(?:following |given )?(?:sentence|text|paragraph|phrase)|"
            r"complete the (?:following |given )?(?:sentence|phrase|text)|adapt|"
            r"more (?:formal|polite|concise|professional)|synonym|antonym|plural|singular)\b",
            _I,
        ),
    ),
    (
        "classification",
        re.compile(
            r"\b(?:classify|classification|categori[sz]e|categori[sz]ation|which category|what category|what type of|what kind of|label (?:the|each|this)|"
            r"sentiment|positive or negative|fact or (?:an )?opinion|true or false|spam|identify (?:the )?(?:type|genre|category|tone|part of speech|mood)|"
            r"is (?:this|the following|it) (?:a |an )?(?:positive|negative|fact|opinion|question|statement|sentence|example)|"
            r"determine (?:whether|if)|decide (?:whether|if)|tell (?:me )?(?:whether|if)|odd one out|does not belong|"
            r"(?:is|are) (?:the following|these|this) (?:\w+ ){0,3}(?:or)\b|which of the following|part of speech|animal or|mammal|"
            r"rate (?:the|this)|grade (?:the|this)|detect)\b",
            _I,
        ),
    ),
    (
        "extraction",
        re.compile(
            r"\b(?:extract|pull out|find (?:all|the|every|any)\b[^.?!]{0,60}\b(?:in|from) (?:the |this |following |given )?(?:text|passage|sentence|paragraph|article|list|document|data|input)|"
            r"identify (?:all|the|every|any)\b[^.?!]{0,60}\b(?:in|from) (?:the |this |following |given )?(?:text|passage|sentence|paragraph|article)|"
            r"list (?:all|the) \w+ (?:mentioned|in the (?:text|passage|article|sentence))|mentioned in|named entit\w*|"
            r"(?:find|identify|underline|highlight|pick out|select) the (?:subject|verb|noun|adjective|adverb|main idea|keyword|key words|keywords)|"
            r"what (?:is|are) the (?:subject|verb|nouns?|adjectives?|adverbs?)\b)",
            _I,
        ),
    ),
    (
        "reasoning",
        re.compile(
            r"\b(?:calculate|compute|solve|equation|math|arithmetic|how many|how much|probability|percent(?:age)?|average|mean|median|sum of|"
            r"product of|difference between \d|convert \d|\d\s*%|\$\s?\d|\d+ ?(?:[-+*/x×÷^]|plus|minus|times|divided by) ?\d+|logic(?:al)?|puzzle|riddle|"
            r"deduce|infer|prove|derivative|integral|area of|perimeter|volume of|circumference|square root|factorial|prime|"
            r"fraction|decimal|ratio|estimate|step[- ]by[- ]step|reason(?:ing)? (?:through|about)|what (?:is|would be) the (?:next|missing) (?:number|term)|"
            r"sequence|evaluate (?:the|this) expression|simplify the expression|interest rate|compound interest)\b",
            _I,
        ),
    ),
    (
        "creative_writing",
        re.compile(
            r"\b(?:poem|poetry|haiku|limerick|sonnet|verse|rhyme|story|stories|tale|fable|fairy tale|narrative|novel|fiction|lyrics|song|rap|"
            r"script|screenplay|dialogue|dialog|conversation between|monologue|character|plot|scene|joke|pun|slogan|tagline|motto|jingle|"
            r"tweet|caption|headline|title for|name for|creative|imagine|pretend|role-?play|metaphor|simile|analogy|personif\w*|"
            r"(?:write|compose|draft|create) (?:a |an )?(?:\w+ ){0,3}(?:letter|email|speech|essay|blog post|article|post|review|advert\w*|ad|description|invitation|toast|eulogy|bio|biography|cover letter|message|note|paragraph|introduction|conclusion|opening|ending)|"
            r"describe (?:a|an|the) (?:\w+ ){0,3}(?:scene|setting|place|sunset|landscape|feeling|character|day|moment|experience))\b",
            _I,
        ),
    ),
    (
        "brainstorming",
        re.compile(
            r"\b(?:brainstorm|ideas?|suggest\w*|come up with|think of|recommend\w*|tips|advice|ways to|ways of|strategies|"
            r"generate (?:a )?list|list (?:some|possible|potential|different) |"
            r"what are some|options|alternatives|activities|plan|itinerary|strategy|campaign|slogans|names for)\b",
            _I,
        ),
    ),
]

_QUESTION = re.compile(
    r"^\s*(?:what|why|how|who|whom|whose|when|where|which|is|are|was|were|do|does|did|can|could|should|would|will|explain|describe|define|tell me|discuss|compare|contrast|give an? (?:example|explanation|overview|definition)|outline|identify|name)\b|\?\s*$",
    _I,
)
_CONTEXT_QA = re.compile(
    r"\b(?:based on|according to|from|in) (?:the|this) (?:text|passage|paragraph|article|context|information|input|excerpt|story|document|poem)\b|\banswer (?:the|this|following) question",
    _I,
)


def instruction_and_context(conv: Conversation) -> tuple[str, str]:
    """The first user turn split into the instruction (first paragraph) and any context after it."""
    first = next((m.content for m in conv.messages if m.role == "user"), "")
    head, _, rest = first.strip().partition("\n\n")
    return head, rest


def label(conv: Conversation) -> str:
    """The task type of one record by the ordered rules (see the module docstring)."""
    instruction, context = instruction_and_context(conv)
    instruction = instruction.lower()
    response = next((m.content for m in conv.messages if m.role == "assistant"), "")
    for task, pattern in _RULES:
        if pattern.search(instruction):
            if task == "coding" and not _coding_confirmed(instruction, response):
                continue
            return task
    if looks_like_code(response):
        return "coding"
    if context and (_QUESTION.search(instruction) or _CONTEXT_QA.search(instruction)):
        return "closed_qa"
    if _CONTEXT_QA.search(instruction):
        return "closed_qa"
    if _QUESTION.search(instruction) or instruction.endswith("?"):
        return "open_qa"
    if _GENERATE.search(instruction):
        return "brainstorming" if _IDEAS.search(instruction) else "creative_writing"
    if _ANSWER_VERB.search(instruction):
        return "closed_qa" if context else "open_qa"
    return "other"


# Fallbacks for instructions no keyword rule caught: an open-ended "make
# something" is creative writing, unless what is made is a set of ideas; a
# "find / determine / list" is a question, closed when it comes with context.
_GENERATE = re.compile(
    r"^\s*(?:please |you )?(?:create|generate|write|compose|design|construct|develop|devise|formulate|propose|produce|draft|make|come up|invent|build|craft|suggest|brainstorm|think)\b"
)
_IDEAS = re.compile(
    r"\b(?:plan|list|ideas?|examples?|ways|strategy|strategies|campaign|itinerary|menu|schedule|agenda|questions|survey|questionnaire|solutions?|names|steps|outline|checklist|tips|recipe|categories|options|activities|goals|rules|policy|guidelines|criteria)\b"
)
_ANSWER_VERB = re.compile(
    r"^\s*(?:please |you )?(?:find|determine|predict|evaluate|analy[sz]e|assess|state|select|choose|pick|identify|list|name|give|provide|output|tell|estimate|recommend|suggest|explain|describe|compare|in what|for what|take|calculate|check|verify|specify|indicate|report|look up|research|show|present|summari[sz]e|discuss|offer|cite|quote)\b"
)


# Words that name programming things but also occur in plain questions
# ("What is a function of the liver?"); they count only with code around.
_WEAK_CODING = re.compile(
    r"^(?:function|class|method|variable|array|loop|program|query|console|api|bug|algorithm|script)$", _I
)


def _coding_confirmed(instruction: str, response: str) -> bool:
    hits = {m.group(0).lower() for m in _RULES[0][1].finditer(instruction)}
    if any(not _WEAK_CODING.match(h) for h in hits):
        return True
    return looks_like_code(response) or bool(
        re.search(
            r"\b(?:write|create|implement|generate|debug|fix|design|develop|construct|build) (?:a |an |the )?(?:\w+ ){0,3}(?:function|program|class|method|script|query|algorithm|loop)\b",
            instruction,
            _I,
        )
    )


class RuleTaskLabels(Annotator):
    """`meta["task"]` by the ordered keyword rules above (no model needed)."""

    name = "tasks"
    batch_size = 4096
    forkable = True

    def annotate(self, convs: Sequence[Conversation]) -> None:
        for conv in convs:
            conv.meta["task"] = label(conv)


def normalised_entropy(counts: Counter[str] | dict[str, int], categories: int | None = None) -> float:
    """Shannon entropy of the mix divided by ln(categories) (default: the types present); 0 for one type."""
    total = sum(counts.values())
    present = [c for c in counts.values() if c > 0]
    k = categories if categories is not None else len(present)
    if total == 0 or k <= 1:
        return 0.0
    h = -sum((c / total) * math.log(c / total) for c in present)
    return h / math.log(k)


# --------------------------------------------------------------------------
# Method "learned": a small trained head over sentence embeddings
# --------------------------------------------------------------------------

TASK_WEIGHTS = CLASSIFIERS_DIR / "tasks.npz"
PROMPT_KEY = "prompt_emb"
RESPONSE_KEY = "response_emb"
CONFIDENCE_KEY = "task_confidence"
TASK_TYPES: tuple[str, ...] = get_args(TaskType)


def rule_features(conv: Conversation) -> np.ndarray:
    """What the head sees beside the embeddings: the rules' label (one-hot), a context paragraph, a code answer."""
    _, context = instruction_and_context(conv)
    one_hot = np.zeros(len(TASK_TYPES))
    one_hot[TASK_TYPES.index(label(conv))] = 1.0
    response = next((m.content for m in conv.messages if m.role == "assistant"), "")
    return np.concatenate([one_hot, [float(bool(context.strip())), float(looks_like_code(response))]])


def embedding_pair(convs: Sequence[Conversation], embedder: Embedder | None) -> np.ndarray:
    """Prompt and response vectors side by side: from `conv.features`, or encoded here when absent."""
    have = all(PROMPT_KEY in c.features and RESPONSE_KEY in c.features for c in convs)
    if have:
        prompts = np.stack([np.asarray(c.features[PROMPT_KEY], dtype=np.float64) for c in convs])
        responses = np.stack([np.asarray(c.features[RESPONSE_KEY], dtype=np.float64) for c in convs])
    elif embedder is not None:
        prompts = embedder.encode([prompt_text(c) for c in convs]).astype(np.float64)
        responses = embedder.encode([last_response(c) for c in convs]).astype(np.float64)
    else:
        missing = next(c for c in convs if PROMPT_KEY not in c.features or RESPONSE_KEY not in c.features)
        raise ValueError(
            f"record {missing.source_index} has no features[{PROMPT_KEY!r}] / [{RESPONSE_KEY!r}]: run the embeddings "
            "annotator first, or give the labeller an embedder"
        )
    return np.hstack([prompts, responses])


def instruction_text(conv: Conversation) -> str:
    """The words the tf-idf part reads: the instruction (first paragraph of the first user turn)."""
    return instruction_and_context(conv)[0]


def task_feature_matrix(
    convs: Sequence[Conversation], embedder: Embedder | None, vocabulary: Sequence[str], idf: np.ndarray
) -> np.ndarray:
    """[instruction tf-idf | prompt embedding | response embedding | rule features], the head's input."""
    words = tfidf([instruction_text(c) for c in convs], vocabulary, idf)
    return np.hstack([words, embedding_pair(convs, embedder), np.stack([rule_features(c) for c in convs])])


class LearnedTaskLabeller(Annotator):
    """Labels each record with the most probable task type of the trained head (`method: learned`).

    Sets `conv.meta["task"]` and `conv.meta["scores"]["task_confidence"]` (the
    head's probability of that type). A record whose embedding is not finite
    falls back to the rules' label with confidence None.
    """

    name = "tasks"
    forkable = True  # in the pipeline it reads the embeddings step's vectors (no embedder of its own)
    batch_size = 1024
    """Large batches: every batch builds the vocabulary's index and a dense tf-idf block."""

    def __init__(self, embedder: Embedder | None = None, weights: Path | None = None) -> None:
        super().__init__()
        self.embedder = embedder
        self.model = LinearModel.load(weights or TASK_WEIGHTS)
        self.classes: list[str] = list(self.model.meta["meta_classes"])
        self.vocabulary = [str(t) for t in self.model.extras["vocabulary"]]
        self.idf = self.model.extras["idf"]
        unknown = set(self.classes) - set(TASK_TYPES)
        if unknown:
            raise ValueError(
                f"{self.model.path}: classes {sorted(unknown)} are not task types ({', '.join(TASK_TYPES)})"
            )

    def label_batch(self, convs: Sequence[Conversation]) -> list[str]:
        if not convs:
            return []
        features = task_feature_matrix(convs, self.embedder, self.vocabulary, self.idf)
        finite = np.isfinite(features).all(axis=1)
        probs = softmax(self.model.logits(np.where(finite[:, None], features, 0.0)))
        out = []
        for conv, p, ok in zip(convs, probs, finite, strict=True):
            best = int(p.argmax())
            task = self.classes[best] if ok else label(conv)
            conv.meta["task"] = task
            conv.meta.setdefault("scores", {})[CONFIDENCE_KEY] = round(float(p[best]), 4) if ok else None
            out.append(task)
        return out

    def annotate(self, convs: Sequence[Conversation]) -> None:
        self.label_batch(convs)
