"""IFEval: the 541 verifiable-instruction prompts, strict and loose accuracy at prompt and instruction level.

The checkers are the `if-verifiable` package's port of Google's
`instruction_following_eval` (the same 25 instruction types, the same strict
and loose rules: loose also tries the reply without its first/last line and
without markdown asterisks). Its sentence counting needs NLTK's Punkt model,
which we ship (punkt.py), so scoring makes no network call.

Input: Google's `input_data.jsonl` (`{key, prompt, instruction_id_list, kwargs}`),
read from a path (a volume in a pod, `../shared/data/eval/ifeval_input_data.jsonl`
in development). Output: `ifeval_responses.jsonl`, one `{"prompt", "response"}`
per line in input order, the file Google's scorer reads (a prompt skipped as
too long for the context gets an empty response there and is counted, not
scored, here).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..formats import Message
from ..runconfig import ConfigError
from .generation import EvalModel
from .suite import Figure, SuiteResult

RESPONSES_FILE = "ifeval_responses.jsonl"


@dataclass(frozen=True, slots=True)
class IFEvalPrompt:
    key: int
    prompt: str
    instruction_id_list: list[str]
    kwargs: list[dict[str, Any]]


def instruction_registry() -> dict[str, Any]:
    """Instruction id -> checker class, with the shipped Punkt parameters in place (no download)."""
    from .punkt import use_packaged_punkt

    use_packaged_punkt()
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    return dict(INSTRUCTION_DICT)


def load_prompts(path: Path, limit: int | None = None) -> tuple[list[IFEvalPrompt], Counter[str]]:
    """The prompts of an IFEval input file (`limit` of them, spread over it), and the malformed lines counted by reason.

    Raises ConfigError naming the file when it is missing or holds no usable prompt.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ifeval.data: {path} does not exist (IFEval's input_data.jsonl)")
    registry = instruction_registry()
    prompts: list[IFEvalPrompt] = []
    rejected: Counter[str] = Counter()
    for _number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        reason = None
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            reason = "malformed_json"
        else:
            reason = _problem(record, registry)
        if reason:
            rejected[reason] += 1
            continue
        prompts.append(IFEvalPrompt(record["key"], record["prompt"], record["instruction_id_list"], record["kwargs"]))
    if not prompts:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items())) or "the file is empty"
        raise ConfigError(f"ifeval.data: {path} holds no usable IFEval prompt ({detail})")
    if limit is not None:  # spread over the file, so a sample covers the instruction types
        prompts = prompts[:: max(1, len(prompts) // limit)][:limit]
    return prompts, rejected


def _problem(record: Any, registry: dict[str, Any]) -> str | None:
    """The reason code of a malformed record, or None."""
    if not isinstance(record, dict):
        return "not_an_object"
    if not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
        return "missing_prompt"
    if not isinstance(record.get("key"), int):
        return "missing_key"
    ids, kwargs = record.get("instruction_id_list"), record.get("kwargs")
    if not isinstance(ids, list) or not ids or not isinstance(kwargs, list) or len(kwargs) != len(ids):
        return "instructions_and_kwargs_mismatch"
    if any(i not in registry for i in ids):
        return "unknown_instruction"
    if not all(isinstance(k, dict) for k in kwargs):
        return "instructions_and_kwargs_mismatch"
    return None


@dataclass(frozen=True, slots=True)
class Score:
    strict: list[bool]
    loose: list[bool]


def score(prompt: IFEvalPrompt, response: str, registry: dict[str, Any]) -> Score:
    """Strict and loose verdict per instruction (an empty reply follows nothing)."""
    from if_verifiable.common import evaluate_instructions

    results, _ = evaluate_instructions(
        response=response,
        instruction_id_list=prompt.instruction_id_list,
        kwargs_list=prompt.kwargs,
        prompt=prompt.prompt,
        instruction_registry=registry,
    )
    if not results:  # empty reply: the package returns no per-instruction verdicts
        fails = [False] * len(prompt.instruction_id_list)
        return Score(fails, fails)
    return Score([r.strict_pass for r in results], [r.loose_pass for r in results])


def run_ifeval(
    model: EvalModel,
    data: Path,
    out_dir: Path,
    *,
    limit: int | None = None,
    max_new_tokens: int = 256,
    examples: int = 3,
) -> SuiteResult:
    """Generate for every prompt, write the responses file, score strict and loose."""
    prompts, rejected = load_prompts(data, limit)
    registry = instruction_registry()
    run = model.generator.run([[Message("user", p.prompt)] for p in prompts], max_new_tokens)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / RESPONSES_FILE).open("w", encoding="utf-8") as out:
        for p, reply in zip(prompts, run.replies, strict=True):
            out.write(json.dumps({"prompt": p.prompt, "response": reply.text if reply else ""}) + "\n")

    result = SuiteResult("ifeval", skipped=Counter(rejected))
    ids: list[str] = []
    prompt_strict: list[float] = []
    prompt_loose: list[float] = []
    followed_strict: list[float] = []
    followed_loose: list[float] = []
    instructions: list[float] = []
    for position, (p, reply) in enumerate(zip(prompts, run.replies, strict=True)):
        if reply is None:
            result.skipped[run.skipped[position]] += 1
            continue
        verdict = score(p, reply.text, registry)
        ids.append(str(p.key))
        prompt_strict.append(float(all(verdict.strict)))
        prompt_loose.append(float(all(verdict.loose)))
        followed_strict.append(float(sum(verdict.strict)))
        followed_loose.append(float(sum(verdict.loose)))
        instructions.append(float(len(verdict.strict)))
        if len(result.examples) < examples:
            result.examples.append(
                {"id": str(p.key), "prompt": p.prompt, "response": reply.text, "followedStrict": all(verdict.strict)}
            )
    result.figures = [
        Figure("promptLevelStrict", "Prompts with every instruction followed (strict)", ids, prompt_strict),
        Figure("promptLevelLoose", "Prompts with every instruction followed (loose)", ids, prompt_loose),
        Figure("instructionLevelStrict", "Instructions followed (strict)", ids, followed_strict, instructions),
        Figure("instructionLevelLoose", "Instructions followed (loose)", ids, followed_loose, instructions),
    ]
    result.counts = {
        "prompts": len(ids),
        "instructions": int(sum(instructions)),
        "hitTokenCap": run.hit_cap,
        "maxNewTokens": max_new_tokens,
        "newTokens": run.new_tokens,
        "generationSeconds": round(run.seconds, 2),
    }
    return result
