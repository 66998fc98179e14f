"""`training.evaluation`: the suites run on base and tuned model after training, and the gates on their figures.

Every suite is on by default with sizes that fit a GPU pod (a few minutes for
a 7B model); the CPU quickstart sets small sizes. A suite's data path is a
path as the pod sees it (a mounted volume); unset, the copy shipped with the
trainer is used (IFEval's 541 prompts, 198 safety prompts), or, for the
reference and style suites, the run's held-out split.
"""

from __future__ import annotations

from pydantic import Field

from .base import WireModel


class IFEvalSuite(WireModel):
    enabled: bool = True
    """Answer IFEval's verifiable-instruction prompts and score them strict and loose, prompt and instruction level."""
    prompts: int | None = Field(default=None, ge=1)
    """Prompts answered, spread over the file; unset: all 541."""
    max_new_tokens: int = Field(default=256, ge=1, le=4096)
    """Longest greedy reply; a reply that reaches it is kept and counted (hitTokenCap)."""
    data: str | None = None
    """IFEval's input_data.jsonl as the pod sees it; unset: the copy shipped with the trainer."""


class ReferenceSuite(WireModel):
    enabled: bool = True
    """Mean per-token negative log-likelihood of held-out human answers, base vs tuned."""
    records: int | None = Field(default=None, ge=1)
    """Records scored; unset: all of them."""
    data: str | None = None
    """A dataset file of human-written answers the model never trained on; unset: the run's held-out split."""


class SafetySuite(WireModel):
    enabled: bool = True
    """Refusal on held-out AdvBench and XSTest unsafe, over-refusal on XSTest safe (replaces the old safety probe)."""
    prompts_per_set: int | None = Field(default=None, ge=1)
    """Prompts per set, spread over its types; unset: every prompt of the set."""
    max_new_tokens: int = Field(default=64, ge=1, le=1024)
    """Longest greedy reply; the refusal judge reads the first 200 characters."""
    data: str | None = None
    """Folder holding advbench_harmful_behaviors.csv and xstest_prompts.csv; unset: the 198 prompts shipped with the trainer."""


class StyleSuite(WireModel):
    enabled: bool = True
    """Assistant-style (GPT-ism) probability of the model's own replies to held-out prompts, by the curation's style classifier."""
    prompts: int = Field(default=100, ge=1)
    """Held-out prompts answered (the reference suite's records)."""
    max_new_tokens: int = Field(default=256, ge=1, le=4096)
    """Longest greedy reply."""


class ForgettingSuite(WireModel):
    enabled: bool = True
    """Perplexity of general reference text (no chat template), base vs tuned: what fine-tuning cost in plain language modelling."""


class EvaluationGates(WireModel):
    """Limits on the figures; one that fails sets EvaluationPassed=False and marks the export as not promoted."""

    min_ifeval_delta: float | None = Field(default=None, ge=-1, le=1, alias="minIFEvalDelta")
    """Smallest allowed change of IFEval prompt-level strict accuracy, tuned minus base (0.02 = +2 points; -0.05 tolerates a 5-point drop)."""
    max_over_refusal: float | None = Field(default=None, ge=0, le=1)
    """Largest allowed share of XSTest safe prompts the tuned model refuses."""
    max_forgetting_increase: float | None = Field(default=None, ge=0)
    """Largest allowed relative increase of reference-text perplexity, tuned over base (0.1 = 10% higher)."""
    max_style_increase: float | None = Field(default=None, ge=-1, le=1)
    """Largest allowed change of the mean assistant-style probability of the replies, tuned minus base."""


class EvaluationConfig(WireModel):
    """The evaluation after training (rank 0): base vs tuned, every figure with its delta and 95% interval."""

    enabled: bool = True
    """Evaluate after training; off: the run ends with the training report only."""
    ifeval: IFEvalSuite = Field(default_factory=IFEvalSuite)
    """Instruction following (IFEval)."""
    reference: ReferenceSuite = Field(default_factory=ReferenceSuite)
    """Likelihood of held-out human answers."""
    safety: SafetySuite = Field(default_factory=SafetySuite)
    """Refusal and over-refusal."""
    style: StyleSuite = Field(default_factory=StyleSuite)
    """Chatbot style of the model's own replies."""
    forgetting: ForgettingSuite = Field(default_factory=ForgettingSuite)
    """Reference-text perplexity drift."""
    gates: EvaluationGates = Field(default_factory=EvaluationGates)
    """Limits that decide EvaluationPassed and promotion; unset limits are not checked."""
    batch_size: int = Field(default=16, ge=1, le=512)
    """Prompts generated together."""

    def suites(self) -> list[str]:
        """Names of the suites switched on, in the order they run."""
        if not self.enabled:
            return []
        switched = {
            "ifeval": self.ifeval.enabled,
            "safety": self.safety.enabled,
            "reference": self.reference.enabled,
            "style": self.style.enabled,
            "forgetting": self.forgetting.enabled,
        }
        return [name for name, on in switched.items() if on]


# --------------------------------------------------------------------------
# What the pod reports: status.evaluation of the SFTJob
# --------------------------------------------------------------------------


class FigureSummary(WireModel):
    base: float | None = None
    """The base model's value (rates 0-1, NLL in nats per token)."""
    tuned: float | None = None
    """The tuned model's value."""
    delta: float | None = None
    """tuned - base."""
    low: float | None = None
    """Lower end of the delta's 95% paired-bootstrap interval."""
    high: float | None = None
    """Upper end of the delta's 95% paired-bootstrap interval."""


class EvaluationSummary(WireModel):
    """The evaluation's outcome in brief; eval/eval_report.json and .html in the output have everything."""

    passed: bool
    """The evaluation ran and every gate passed (condition EvaluationPassed)."""
    promoted: bool
    """The export may ship: false when a gate failed or the evaluation could not run (the output then holds NOT_PROMOTED)."""
    figures: dict[str, FigureSummary] = Field(default_factory=dict)
    """Figure (suite + name, e.g. ifevalPromptLevelStrict) -> base, tuned, delta and its interval."""
    gates_checked: int = 0
    """Gates set in evaluation.gates and checked."""
    failed_gates: list[str] = Field(default_factory=list)
    """One line per failed gate: the figure, its limit and by how much it missed."""
    regressed: list[str] = Field(default_factory=list)
    """Figures whose delta's interval lies wholly on the worse side of zero."""
    not_run: dict[str, str] = Field(default_factory=dict)
    """Suite -> why it could not run (the other suites' figures stand)."""
    error: str | None = None
    """Why the whole evaluation failed; the trained artifacts are intact."""
    report: str | None = None
    """The HTML report, relative to the output folder."""
