"""Settings of the curation pipeline: one section per step.

These models are both the `spec.curation` of a `DatasetCuration` and the
pipeline section of the run config the curation pod reads. Every default is
the value we recommend for instruction data. How each step is switched off:
most sections by `enabled: false`; `dedup` by its `exact`, `near` and
`semantic` flags; `decontamination` runs only with `evalSets`; `selection`
only with a `budget` or `fraction`; `embedder` is not a step (it names the
model the steps that need embeddings share).
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from .base import Rule, TemplateName, WireModel, model_rules

TaskType = Literal[
    "coding",
    "creative_writing",
    "reasoning",
    "extraction",
    "open_qa",
    "closed_qa",
    "summarization",
    "classification",
    "brainstorming",
    "rewriting",
    "other",
]

DatasetFormat = Literal["auto", "alpaca", "sharegpt", "messages"]


class ValidationStep(WireModel):
    enabled: bool = True
    """Reject empty turns, wrong role order, invalid text and placeholder content."""
    reject_placeholders: bool = True
    """Reject turns that are placeholders such as `<noinput>`, `<No Output>` or `N/A`."""
    reject_unseeable_inputs: bool = True
    """Reject prompts that need something the model cannot see: a URL to open, an image, an attachment."""


class LengthStep(WireModel):
    enabled: bool = True
    """Reject records whose turns fall outside the bounds below."""
    min_prompt_chars: int = Field(default=3, ge=0)
    """Fewest characters in the opening user turn; a later user turn in a dialogue ("No", "Ok") needs one."""
    max_prompt_chars: int = Field(default=24000, ge=1)
    """Most characters in a user turn."""
    min_response_chars: int = Field(default=1, ge=0)
    """Fewest characters in an assistant turn."""
    max_response_chars: int = Field(default=24000, ge=1)
    """Most characters in an assistant turn."""
    min_prompt_tokens: int | None = Field(default=None, ge=0)
    """Fewest tokens in the opening user turn (a later one needs one); needs a tokenizer. Unset: no bound."""
    max_prompt_tokens: int | None = Field(default=None, ge=1)
    """Most tokens in a user turn; needs a tokenizer. Unset: no bound (the template check still bounds the whole conversation)."""
    min_response_tokens: int | None = Field(default=1, ge=0)
    """Fewest tokens in an assistant turn; needs a tokenizer. Unset: no bound."""
    max_response_tokens: int | None = Field(default=None, ge=1)
    """Most tokens in an assistant turn; needs a tokenizer. Unset: no bound."""


class RepetitionStep(WireModel):
    enabled: bool = True
    """Reject responses that repeat themselves (Gopher-style fractions)."""
    max_duplicate_line_fraction: float | None = Field(default=None, ge=0, le=1)
    """Largest fraction of prose lines (and of a list's items) that repeat an earlier one. Unset: the calibrated bound, the largest fraction clean answers that no test scores show (calibration-half LIMA and chat answers, OpenAssistant), never below Gopher's 0.3: weekly plans and forms repeat lines legitimately."""
    max_duplicate_ngram_fraction: float | None = Field(default=None, ge=0, le=1)
    """Largest fraction of characters inside duplicated word 5-grams. Unset: the calibrated bound, the largest fraction clean answers that no test scores show, never below 0.2 (Gopher's bound for web pages is 0.15): parallel how-to steps, weekly plans and songs repeat 5-grams legitimately."""
    max_top_ngram_share: float | None = Field(default=None, ge=0, le=1)
    """Largest share of characters taken by the most frequent word 2-gram (for 3- and 4-grams 0.02 and 0.04 less, as in Gopher). Unset: the calibrated bound, the smallest that no clean answer untouched by tests exceeds, never below Gopher's 0.2."""
    exempt_code_and_lists: bool = True
    """Skip code blocks, list items and table rows when measuring, so code, extraction answers and tables survive."""


class ArtifactStep(WireModel):
    enabled: bool = True
    """Hard-reject chatbot artifacts ('As an AI language model', cutoff disclaimers, identity claims, leaked template tokens, refusals of benign requests) and junk characters (mojibake, U+FFFD, invisible runs, emoji and symbol floods)."""


class GptismStep(WireModel):
    enabled: bool = False
    """Reject responses dense in phrases typical of synthetic chatbot text. Off by default: the trained style classifier (`style`) absorbs it; on held-out data this list added 0.03 recall of chat answers for 1.2% of clean LIMA flagged. The density is still measured (it feeds the quality score)."""
    max_density: float = Field(default=15.0, ge=0)
    """Highest weighted GPT-ism hits per 1,000 words a response may have."""
    prior_words: int = Field(default=100, ge=0)
    """Words added to every response's length when computing the density, so one phrase in a short answer does not condemn it."""


class DedupStep(WireModel):
    exact: bool = True
    """Remove exact duplicates (normalised text hash)."""
    near: bool = True
    """Remove near duplicates with MinHash + LSH."""
    ngram: int = Field(default=5, ge=1, le=20)
    """Word n-gram size of the MinHash shingles."""
    permutations: int = Field(default=128, ge=16, le=1024)
    """Number of MinHash permutations."""
    threshold: float = Field(default=0.8, gt=0, le=1)
    """Jaccard similarity above which two records are near duplicates."""
    semantic: bool = False
    """Remove semantic near duplicates (the same request reworded, with the same numbers, quotes and input) by the cosine similarity of their instruction embeddings; needs the embedder. Off by default: with the static embedder about 17 in 30 of the Alpaca pairs it joins are true rewordings, the rest close siblings (see docs/curation.md)."""
    semantic_threshold: float | None = Field(default=None, gt=0, le=1)
    """Prompt-embedding cosine similarity at or above which two records are semantic duplicates. Unset: the calibrated default for the embedder."""


class OodReviewStep(WireModel):
    enabled: bool = True
    """Hold records with abnormal token statistics for manual review (needs a tokenizer)."""
    max_rare_token_fraction: float = Field(default=0.1, ge=0, le=1)
    """Largest fraction of a response's tokens that may be rare in the set (in at most 0.005% of responses, at least 5 tokens; judged on sets of 20,000+ records) before it is held."""


class TemplateStep(WireModel):
    enabled: bool = True
    """Build every conversation as training will (chat template, BOS/EOS placement, special-token text, length) and reject what training would reject, under the same reason (needs a tokenizer)."""
    name: TemplateName = "auto"
    """The chat template training will use (the SFTJob's training.template.name): `auto` is the tokenizer's own, else a built-in."""
    max_seq_length: int = Field(default=2048, ge=16)
    """Longest rendered conversation, in tokens, that training will accept."""


class BalanceStep(WireModel):
    enabled: bool = True
    """Down-sample over-represented task types, lowest quality first."""
    target_entropy: float = Field(default=0.9, ge=0, le=1)
    """Normalised Shannon entropy of the task mix to reach (1.0 = perfectly even)."""
    max_drop_fraction: float = Field(default=0.1, ge=0, le=1)
    """Most of the records an entropy target may drop; balancing stops short of the target rather than cut more (small curated sets keep their examples)."""
    target_mix: dict[str, float] | None = Field(default=None, max_length=len(get_args(TaskType)))
    """Explicit share per task type instead of an entropy target; shares must sum to 1 (not bounded by maxDropFraction)."""
    method: Literal["rules", "learned"] = "learned"
    """How records are labelled with a task type: `learned`, a small trained head over the instruction's words and the prompt and response embeddings (0.80 on the hand-labelled audit sample); `rules`, ordered keyword rules over the instruction (0.64). docs/curation.md has both."""


class DecontaminationStep(WireModel):
    eval_sets: list[str] = Field(default_factory=list)
    """Paths of evaluation sets; records sharing an n-gram with any of them are dropped."""
    ngram: int = Field(default=13, ge=4, le=50)
    """Word n-gram size used to detect overlap."""


# -- Judges of meaning (model-based). Each section's `threshold: None` means the
# calibrated default shipped with the package (see docs/curation.md, "Calibration").


class BorderlineOnCpu(WireModel):
    """On a CPU, for a set larger than `scorer.maxRecordsOnCpu`: the scorer LM still scores the records whose verdict it could change (a few percent of a typical set). Those are the long answers whose style score its perplexity could carry across the threshold, and the answers whose open ending the n-gram model would reject as cut off (the LM's end-of-turn probability decides instead). Only with the packaged scorer at its default windows."""

    max_records: int = Field(default=5000, ge=0)
    """Largest set (records in) that gets the pass; a larger one is judged without the LM, with a note. 0: never."""
    max_scored: int = Field(default=300, ge=0)
    """Most records the pass scores (about 2 s each on 2 cores): when more qualify, none is scored, with a note."""


class ScorerStep(WireModel):
    enabled: bool = True
    """Score every record with a causal language model: response perplexity, perplexity given the prompt, IFD (their ratio) and the probability of end-of-turn after the response."""
    model: str | None = None
    """Folder of a Hugging Face causal LM (typically the SFTJob's base model). Unset: the packaged SmolLM2-135M-Instruct."""
    max_prompt_tokens: int = Field(default=64, ge=16, le=32768)
    """Most tokens of prompt content the scorer reads, shared by the turns before the response (each keeps its head and tail halves); the chat template's own tokens come on top."""
    max_response_tokens: int = Field(default=96, ge=8, le=32768)
    """Most response tokens the perplexities read, from the start (the end-of-turn probability always reads the real end)."""
    batch_size: int | None = Field(default=None, ge=1, le=4096)
    """Sequences per forward pass (2-3 per record). Unset: 16 on a CPU, 64 on a GPU."""
    max_records_on_cpu: int | None = Field(default=0, ge=0)
    """Most records the scorer LM scores without a GPU. 0 (the default): on a CPU it scores only the records whose verdict it could change (`borderlineOnCpu`), coherence and completeness use the n-gram model elsewhere, and a note in the report and status says so (SmolLM2 scores 0.5-2 records/s on 2 cores: 300 records take minutes). Raise it to score every record on a CPU; unset: no limit."""
    borderline_on_cpu: BorderlineOnCpu = Field(default_factory=BorderlineOnCpu)
    """Where a CPU does not score the whole set (`maxRecordsOnCpu`): the LM's pass over only the records whose verdict it could change."""


class EmbedderStep(WireModel):
    model: str | None = None
    """Sentence embedder for semantic dedup and task labels: `all-minilm-l6-v2-static` (a model2vec model distilled from MiniLM, thousands of records/s on a CPU), `all-minilm-l6-v2` (the packaged MiniLM), or the folder of a sentence-transformers or model2vec model. Unset: `all-minilm-l6-v2-static`."""


class RelevanceStep(WireModel):
    enabled: bool = True
    """Reject responses that answer another prompt (`off_topic`) or only restate the prompt (`prompt_echo`)."""
    model: str = "all-minilm-l6-v2"
    """Embedder that compares each prompt with its response (same values as `embedder.model`). The packaged MiniLM is the default: the static model separates off-topic answers far worse (measured by benchmarks/calibrate_relevance.py)."""
    off_topic_threshold: float | None = Field(default=None, ge=-1, le=1)
    """Cosine similarity of prompt and response below which the response is off topic. Unset: the calibrated default for the packaged model (another model needs this set)."""
    echo_threshold: float | None = Field(default=None, ge=0, le=1)
    """Echo score (share of the prompt's words the response repeats, times the share of the response's words taken from the prompt) above which the response only restates the prompt. Unset: the calibrated default."""
    max_records_on_cpu: int | None = Field(default=5000, ge=0)
    """Most records the off-topic judge embeds without a GPU (MiniLM: about 15 records/s on 2 cores); a larger set skips it, the report says so, and the prompt-echo judge (no model) still runs. Unset: no limit."""


class CoherenceStep(WireModel):
    enabled: bool = True
    """Reject responses that are not fluent language (word salad, garbled text): the scorer LM's perplexity, else the word-bigram fluency score."""
    max_perplexity: float | None = Field(default=None, gt=1)
    """Perplexity of the response given its prompt (the scorer's `cond_ppl`) above which it is incoherent unless its word order matters (`minOrderGain`). Unset: the calibrated default shipped in the package, which holds for the packaged scorer at its default windows only; with another `scorer.model` or window, unset means the judge reads the n-gram fluency instead."""
    min_order_gain: float | None = Field(default=None, gt=0)
    """For a response above `maxPerplexity`: how many times its perplexity must rise when its words are shuffled (on their lines) for it to count as fluent text the model merely finds hard (a poem, a lipogram) rather than word salad. The scorer shuffles only these responses (one more pass for each). Unset: the calibrated default."""
    min_fluency: float | None = None
    """When the scorer LM did not run: mean word-bigram PMI of the response's prose (the `fluency` score) below which it is incoherent. Unset: the calibrated default shipped in the package."""


class CompletenessStep(WireModel):
    enabled: bool = True
    """Reject responses cut off mid-sentence, mid-list or mid-code block."""
    max_eos_prob: float | None = Field(default=None, ge=0, le=1)
    """End-of-turn probability (from the scorer) below which a response that ends without closing punctuation is truncated. Unset: the calibrated default shipped in the package, which holds for the packaged scorer at its default windows only; with another `scorer.model` or window, unset means the judge reads the n-gram end probability instead."""
    max_end_prob: float | None = Field(default=None, ge=0, le=1)
    """When the scorer LM did not run: probability that a sentence ends after the response's last two words (the `end_prob` score, word-bigram model) below which a response that ends without closing punctuation is truncated. Unset: the calibrated default shipped in the package."""


class FactsStep(WireModel):
    enabled: bool = True
    """Reject answers whose arithmetic result disagrees with the exact value of the expression the prompt asks for."""


class StyleStep(WireModel):
    enabled: bool = True
    """Reject responses a trained classifier judges to be chatbot/assistant style."""
    threshold: float | None = Field(default=None, ge=0, le=1)
    """Probability of assistant style above which a response is rejected (`style.assistant`). Unset: the calibrated default shipped with the classifier's weights."""
    min_words: int | None = Field(default=None, ge=0)
    """Shortest response, in words, the judge scores and decides on: a shorter one is never rejected for its style (its score is left empty) (on short answers the classifier does not tell a chat model from a person reliably). Unset: the calibrated default shipped with the weights (the shortest length from which it separates them at AUC 0.95 or better)."""


class SelectionStep(WireModel):
    """Keep only the best records of those that passed hygiene; set `budget` or `fraction` to switch it on."""

    model_config = model_rules(
        Rule(
            "!has(self.budget) || !has(self.fraction)",
            "set selection.budget or selection.fraction, not both",
            ".budget",
            check=lambda s: s.budget is None or s.fraction is None,
        )
    )

    budget: int | None = Field(default=None, ge=1)
    """Number of records to keep (fewer if fewer passed). Unset (and no fraction): no selection."""
    fraction: float | None = Field(default=None, gt=0, le=1)
    """Share of the records that passed hygiene to keep, instead of a budget."""
    strategy: Literal["diverse-quality", "quality", "ifd", "random"] = "diverse-quality"
    """How records are ranked: quality score with a diversity constraint, quality alone, the scorer's IFD, or at random. Every strategy also writes a random control of the same size and task mix (control.jsonl)."""
    diversity_threshold: float = Field(default=0.9, gt=0, le=1)
    """`diverse-quality`: a record whose prompt embedding has cosine similarity above this with one already kept is passed over while others remain (Deita uses 0.9)."""

    @property
    def enabled(self) -> bool:
        return self.budget is not None or self.fraction is not None


class EngineSettings(WireModel):
    """Where the curation runs: one pod, or Ray Data on a Ray cluster."""

    type: Literal["local", "ray"] = "local"
    """`local`: one process streams the input in shards (bounded memory). `ray`: the same steps run as Ray Data stages on the cluster named by `RAY_ADDRESS` (a KubeRay RayJob sets it), or on a local Ray cluster when it is unset."""
    workers: int = Field(default=1, ge=1)
    """Ray workers that run the stages (with `type: ray`)."""
    cpus_per_worker: float = Field(default=1, gt=0)
    """CPU cores each Ray worker gets (with `type: ray`)."""
    gpus_per_worker: int = Field(default=0, ge=0)
    """GPUs each Ray worker gets (with `type: ray`); model judges run on GPU actor pools when it is above 0."""


class CurationConfig(WireModel):
    """What the curation pipeline does, step by step."""

    model_config = model_rules(
        Rule(
            "!has(self.balance) || !has(self.balance.targetMix) || self.balance.targetMix.size() > 1",
            "balance.targetMix needs at least two task types",
            ".balance.targetMix",
            check=lambda c: c.balance.target_mix is None or len(c.balance.target_mix) > 1,
        ),
        Rule(
            "!has(self.balance) || !has(self.balance.targetMix) || self.balance.targetMix.all(t, t in "
            + str(list(get_args(TaskType)))
            + ")",
            "balance.targetMix keys must be task types: " + ", ".join(get_args(TaskType)),
            ".balance.targetMix",
            check=lambda c: c.balance.target_mix is None or set(c.balance.target_mix) <= set(get_args(TaskType)),
        ),
    )

    validation: ValidationStep = Field(default_factory=ValidationStep)
    """Structural validation of every record."""
    length: LengthStep = Field(default_factory=LengthStep)
    """Length bounds per role."""
    repetition: RepetitionStep = Field(default_factory=RepetitionStep)
    """Repetition filters."""
    artifacts: ArtifactStep = Field(default_factory=ArtifactStep)
    """Chatbot-artifact filter."""
    gptisms: GptismStep = Field(default_factory=GptismStep)
    """GPT-ism density filter."""
    dedup: DedupStep = Field(default_factory=DedupStep)
    """Exact and near-duplicate removal."""
    ood_review: OodReviewStep = Field(default_factory=OodReviewStep)
    """Out-of-distribution token review queue."""
    template: TemplateStep = Field(default_factory=TemplateStep)
    """Chat-template and special-token checks."""
    balance: BalanceStep = Field(default_factory=BalanceStep)
    """Task labelling and entropy-based balancing."""
    decontamination: DecontaminationStep = Field(default_factory=DecontaminationStep)
    """Optional removal of records overlapping evaluation sets."""
    scorer: ScorerStep = Field(default_factory=ScorerStep)
    """The scorer language model (perplexity, IFD, end-of-turn probability)."""
    embedder: EmbedderStep = Field(default_factory=EmbedderStep)
    """The sentence embedder (relevance, semantic dedup, task labels)."""
    relevance: RelevanceStep = Field(default_factory=RelevanceStep)
    """Off-topic and prompt-echo judges."""
    coherence: CoherenceStep = Field(default_factory=CoherenceStep)
    """Fluency judge."""
    completeness: CompletenessStep = Field(default_factory=CompletenessStep)
    """Truncation judge."""
    facts: FactsStep = Field(default_factory=FactsStep)
    """Arithmetic checker."""
    style: StyleStep = Field(default_factory=StyleStep)
    """Assistant-style classifier."""
    selection: SelectionStep = Field(default_factory=SelectionStep)
    """Keep the best N records, with a random control of the same size."""
    max_records: int | None = Field(default=None, ge=1)
    """Read at most this many input records (useful for a first look). Unset: all."""
    seed: int = 0
    """Seed for every random choice (sampling, MinHash permutations)."""
    engine: EngineSettings = Field(default_factory=EngineSettings)
    """Where the curation runs: one pod (`local`) or a Ray cluster (`ray`)."""


class CurationRunConfig(WireModel):
    """The file the curation pod reads: where to read, where to write, and what to do."""

    input: str
    """Path of the input dataset file (JSON, JSONL or Parquet)."""
    format: DatasetFormat = "auto"
    """Record format of the input; `auto` detects it."""
    output_dir: str
    """Folder that receives curated.jsonl, rejected.jsonl, review.jsonl and the reports."""
    tokenizer: str | None = None
    """Folder of the target model's tokenizer; token-based steps are skipped without one."""
    curation: CurationConfig = Field(default_factory=CurationConfig)
    """The pipeline settings."""
    progress_port: int | None = Field(default=None, ge=1, le=65535)
    """Port of the /progress and /metrics server; unset: none."""
