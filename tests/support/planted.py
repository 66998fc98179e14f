"""A real Alpaca sample with duplicates planted across shards: exact copies, near copies, reworded requests."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

REWORDINGS = (("Generate", "Produce"), ("Give", "Provide"), ("Write", "Compose"), ("Create", "Make"))


def planted_records(alpaca: list[dict[str, Any]], size: int, seed: int = 0) -> list[Any]:
    """`size` Alpaca records, then for a tenth of them an exact copy, a near copy (one word of the response
    changed) and, where the instruction starts with a verb we can swap, the request reworded with another
    record's response; shuffled so the copies land in other shards. Two broken records are kept too."""
    rng = random.Random(seed)
    base = alpaca[:size]
    planted: list[Any] = [dict(r) for r in base]
    for k in range(0, size, 10):
        planted.append(dict(base[k]))
        words = base[k + 1]["output"].split()
        if len(words) > 25:
            words[len(words) // 2] = "notably"
            planted.append({**base[k + 1], "output": " ".join(words)})
        instruction = base[k + 2]["instruction"]
        for verb, other in REWORDINGS:
            if instruction.startswith(verb + " "):
                donor = base[(k + 5) % size]["output"]
                planted.append({**base[k + 2], "instruction": other + instruction[len(verb) :], "output": donor})
                break
    rng.shuffle(planted)
    planted.insert(len(planted) // 3, "not an object")
    return planted


def write_jsonl(path: Path, records: list[Any]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
        handle.write("{broken json\n")
    return path
