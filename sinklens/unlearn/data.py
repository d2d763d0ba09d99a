"""Training data for unlearning: forget D_f, retain D_r and poisoned D_p as token samples.

Passages are tokenised with BOS and cut into chunks of at most `max_length` tokens (each
chunk starts with BOS), so long MUSE texts are used whole rather than truncated. D_p is a
seeded random subset of D_f, |D_p| = round(ρ·|D_f|) (at least 1), each with the trigger
spliced in at token level; `insert_trigger` shortens the content, never the trigger, so
every poisoned sample carries the whole trigger at its recorded positions.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from sinklens.data.formats import Benchmark, jsonl_rows, read_utf8, split_passages
from sinklens.data.triggers import DEFAULT_JOIN, Placement, prepare_trigger
from sinklens.errors import SinklensError

__all__ = ["Sample", "UnlearnData", "build_unlearn_data", "chunk_text", "read_corpus"]


@dataclass(frozen=True)
class Sample:
    """One training sequence; `trigger_positions` is empty for clean samples."""

    input_ids: tuple[int, ...]
    trigger_positions: tuple[int, ...] = ()
    forget_index: int = -1  # for D_p: which D_f sample it was made from


@dataclass(frozen=True)
class UnlearnData:
    forget: tuple[Sample, ...]
    retain: tuple[Sample, ...]
    poisoned: tuple[Sample, ...]
    trigger_ids: tuple[int, ...]

    @property
    def fingerprint(self) -> str:
        """sha256 of every token and trigger position: the 'data hash' written with a run."""
        digest = hashlib.sha256()
        for name in ("forget", "retain", "poisoned"):
            rows = [
                [list(s.input_ids), list(s.trigger_positions), s.forget_index]
                for s in getattr(self, name)
            ]
            digest.update(name.encode())
            digest.update(json.dumps(rows, separators=(",", ":")).encode())
        digest.update(json.dumps(list(self.trigger_ids)).encode())
        return digest.hexdigest()


def chunk_text(
    tokenizer: PreTrainedTokenizerBase, text: str, max_length: int
) -> list[tuple[int, ...]]:
    """Token chunks of `text`, each at most `max_length` long and starting with BOS if any."""
    bos = tokenizer.bos_token_id
    content = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    head = [bos] if bos is not None else []
    width = max_length - len(head)
    if width < 1:
        raise SinklensError(f"max_length={max_length} leaves no room for content; raise it")
    return [
        tuple(head + content[i : i + width])
        for i in range(0, len(content), width)
        if content[i : i + width]
    ]


def read_corpus(path: str | Path, field: str = "text") -> tuple[str, ...]:
    """Passages of a corpus file: `.jsonl` (WMDP's corpora: one object a line, `field`
    holds the text) or plain text (passages separated by blank lines, as MUSE's raw/)."""
    file = Path(path)
    if not file.is_file():
        raise SinklensError(f"corpus file {file} does not exist; pass a .jsonl or .txt file")
    text = read_utf8(file)
    if file.suffix.lower() != ".jsonl":
        return split_passages(text)
    out = []
    for n, row in jsonl_rows(file, text):
        value = row.get(field) if isinstance(row, dict) else row if isinstance(row, str) else None
        if not isinstance(value, str):
            raise SinklensError(
                f"{file} line {n} has no string field {field!r}; pass a JSONL corpus with a {field!r} field"
            )
        if value.strip():
            out.append(value.strip())
    if not out:
        raise SinklensError(f"corpus file {file} holds no text; pass a non-empty corpus")
    return tuple(out)


def _normalise(text: str) -> str:
    return " ".join(text.split())


def build_unlearn_data(
    bench: Benchmark,
    tokenizer: PreTrainedTokenizerBase,
    *,
    placement: Placement | None,
    trigger: str,
    poison_ratio: float,
    max_length: int,
    seed: int,
    trigger_join: str = DEFAULT_JOIN,
) -> UnlearnData:
    """D_f from `bench.forget_texts`, D_r from `bench.retain_texts`, D_p if `placement`."""
    if not bench.forget_texts:
        raise SinklensError(
            f"benchmark {bench.name!r} has no forget corpus (raw/forget.txt); point at a benchmark folder that has one"
        )
    if not bench.retain_texts:
        raise SinklensError(
            f"benchmark {bench.name!r} has no retain corpus (raw/retain*.txt); point at a benchmark folder that has one"
        )
    if not 0 < poison_ratio <= 1:
        raise SinklensError(f"poison_ratio must be in (0, 1], got {poison_ratio}; e.g. 0.1")
    forget_set = {_normalise(t) for t in bench.forget_texts}
    overlap = [i for i, t in enumerate(bench.retain_texts) if _normalise(t) in forget_set]
    if overlap:
        raise SinklensError(
            f"{len(overlap)} retain passage(s) (first: #{overlap[0]}) also appear in the forget set; "
            "remove them from the retain corpus"
        )
    forget = tuple(
        Sample(c) for t in bench.forget_texts for c in chunk_text(tokenizer, t, max_length)
    )
    retain = tuple(
        Sample(c) for t in bench.retain_texts for c in chunk_text(tokenizer, t, max_length)
    )
    prepared = prepare_trigger(tokenizer, trigger, trigger_join)
    trigger_ids = prepared.ids
    bos = tokenizer.bos_token_id
    n_head = 1 if bos is not None else 0
    if n_head + len(trigger_ids) >= max_length:
        raise SinklensError(
            f"trigger {trigger!r} is {len(trigger_ids)} tokens, too long for max_length={max_length}; "
            "use a shorter trigger or a larger max_length"
        )
    poisoned: tuple[Sample, ...] = ()
    if placement is not None:
        n_poison = max(1, round(poison_ratio * len(forget)))
        chosen = sorted(random.Random(f"poison-{seed}").sample(range(len(forget)), n_poison))
        out = []
        for i in chosen:
            trig = prepared.insert(forget[i].input_ids, placement, max_length=max_length)
            out.append(Sample(trig.input_ids, trig.trigger_positions, forget_index=i))
        poisoned = tuple(out)
    return UnlearnData(forget=forget, retain=retain, poisoned=poisoned, trigger_ids=trigger_ids)
