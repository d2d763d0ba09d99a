"""On-disk benchmark formats shared by the organism and the real benchmarks.

One folder holds one benchmark, in the MUSE layout plus WMDP-style multiple choice:

    raw/forget.txt, raw/retain*.txt, raw/general.txt    passages separated by a blank line
    raw/holdout.txt                                      forget-like passages no model saw
    knowmem/{forget_qa,forget_qa_icl,retain_qa,retain_qa_icl}.json   [{"question", "answer"}]
    verbmem/forget.json                                  [{"prompt", "gt"}]
    choice/{forget,retain}.jsonl                         {"question", "choices", "answer"} a line
    privleak/{forget,holdout}.json                       MUSE's membership-inference sets:
                                                         a JSON list of texts (or {"text"})

Every part except the folder itself is optional (missing -> empty tuple), so the same
loader reads MUSE-Books, MUSE-News, WMDP and the organism's world.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinklens.errors import SinklensError

__all__ = [
    "Benchmark",
    "ChoiceItem",
    "KnowMemItem",
    "VerbMemItem",
    "load_benchmark",
    "split_passages",
    "write_benchmark",
]


@dataclass(frozen=True)
class KnowMemItem:
    """A MUSE knowledge-memorisation item: a question and its short answer."""

    question: str
    answer: str


@dataclass(frozen=True)
class VerbMemItem:
    """A MUSE verbatim-memorisation item: a passage opening and its true continuation."""

    prompt: str
    gt: str


@dataclass(frozen=True)
class ChoiceItem:
    """A WMDP-style multiple-choice item; `answer` indexes `choices`."""

    question: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class Benchmark:
    """One benchmark folder on disk, fully in memory."""

    name: str
    forget_texts: tuple[str, ...] = ()
    retain_texts: tuple[str, ...] = ()
    general_texts: tuple[str, ...] = ()
    knowmem_forget: tuple[KnowMemItem, ...] = ()
    knowmem_forget_icl: tuple[KnowMemItem, ...] = ()
    knowmem_retain: tuple[KnowMemItem, ...] = ()
    knowmem_retain_icl: tuple[KnowMemItem, ...] = ()
    verbmem_forget: tuple[VerbMemItem, ...] = ()
    choice_forget: tuple[ChoiceItem, ...] = ()
    choice_retain: tuple[ChoiceItem, ...] = ()
    # Documents like the forget set that no model was trained on: PrivLeak's non-members.
    holdout_texts: tuple[str, ...] = ()
    # MUSE ships its own member set for PrivLeak (privleak/forget.json); else forget_texts.
    privleak_forget_texts: tuple[str, ...] = ()

    @property
    def privleak_members(self) -> tuple[str, ...]:
        """The forget documents PrivLeak scores as members."""
        return self.privleak_forget_texts or self.forget_texts


_KNOWMEM_FILES = {
    "knowmem_forget": "forget_qa.json",
    "knowmem_forget_icl": "forget_qa_icl.json",
    "knowmem_retain": "retain_qa.json",
    "knowmem_retain_icl": "retain_qa_icl.json",
}


def split_passages(text: str) -> tuple[str, ...]:
    """Passages of a raw text file: blocks separated by one or more blank lines."""
    blocks: list[str] = []
    current: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.strip():
            current.append(line)
        elif current:
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    return tuple(b.strip() for b in blocks)


def read_utf8(path: Path) -> str:
    """A text file's contents; a one-line error if it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SinklensError(f"{path} is not UTF-8 text ({err}); re-save it as UTF-8") from None


def _read_text(path: Path) -> tuple[str, ...]:
    return split_passages(read_utf8(path)) if path.is_file() else ()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SinklensError(
            f"{path} is not valid JSON ({err}); fix or regenerate the file"
        ) from err


def _fields(path: Path, row: Any, keys: tuple[str, ...], where: str) -> list[Any]:
    if not isinstance(row, dict) or any(k not in row for k in keys):
        raise SinklensError(
            f"{path}: {where} must be an object with keys {', '.join(keys)}; fix the file"
        )
    return [row[k] for k in keys]


def _text(path: Path, value: Any, where: str, key: str) -> str:
    """A text field: a non-blank string, never a number or list coerced to one."""
    if not isinstance(value, str) or not value.strip():
        got = "blank text" if isinstance(value, str) else f"a {type(value).__name__}"
        raise SinklensError(
            f"{path}: {where} field {key!r} must be non-blank text, got {got}; fix the file"
        )
    return value


def _read_pairs(path: Path, item: type, keys: tuple[str, str]) -> tuple[Any, ...]:
    """A JSON list of two-key objects (KnowMem {question, answer}, VerbMem {prompt, gt})."""
    if not path.is_file():
        return ()
    rows = _read_json(path)
    if not isinstance(rows, list):
        raise SinklensError(f"{path} must hold a JSON list of {{{', '.join(keys)}}}; fix the file")
    return tuple(
        item(
            *(
                _text(path, v, f"item {i}", k)
                for k, v in zip(keys, _fields(path, row, keys, f"item {i}"), strict=True)
            )
        )
        for i, row in enumerate(rows)
    )


def _read_knowmem(path: Path) -> tuple[KnowMemItem, ...]:
    return _read_pairs(path, KnowMemItem, ("question", "answer"))


def _read_verbmem(path: Path) -> tuple[VerbMemItem, ...]:
    return _read_pairs(path, VerbMemItem, ("prompt", "gt"))


def _choice_item(path: Path, row: Any, where: str) -> ChoiceItem:
    q, choices, answer = _fields(path, row, ("question", "choices", "answer"), where)
    if not isinstance(choices, list) or not choices:
        raise SinklensError(f"{path}: {where} needs a non-empty list of choices; fix the file")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise SinklensError(
            f"{path}: {where} answer must be an index into its {len(choices)} choices; fix the file"
        )
    return ChoiceItem(
        question=_text(path, q, where, "question"),
        choices=tuple(_text(path, c, where, f"choices[{i}]") for i, c in enumerate(choices)),
        answer=answer,
    )


def jsonl_rows(path: Path, text: str) -> list[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line of a JSONL file's `text`."""
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as err:
            raise SinklensError(
                f"{path} line {n} is not valid JSON ({err}); fix or regenerate the file"
            ) from None
    return rows


def _read_choice(path: Path) -> tuple[ChoiceItem, ...]:
    if not path.is_file():
        return ()
    rows = jsonl_rows(path, read_utf8(path))
    return tuple(_choice_item(path, row, f"line {n}") for n, row in rows)


def _read_texts(path: Path) -> tuple[str, ...]:
    """A JSON list of texts, or of {"text": ...} objects (MUSE's privleak files)."""
    if not path.is_file():
        return ()
    rows = _read_json(path)
    if not isinstance(rows, list):
        raise SinklensError(f"{path} must hold a JSON list of texts; fix the file")
    return tuple(
        _text(
            path,
            row["text"] if isinstance(row, dict) and "text" in row else row,
            f"item {i}",
            "text",
        )
        for i, row in enumerate(rows)
    )


def load_benchmark(path: str | Path) -> Benchmark:
    """Read a benchmark folder (MUSE layout, optional WMDP `choice/`) into a `Benchmark`.

    Missing optional parts give empty tuples; a missing folder or a malformed file raises
    `SinklensError` naming the file.
    """
    root = Path(path)
    if not root.is_dir():
        raise SinklensError(
            f"benchmark folder {root} does not exist; pass a folder in MUSE layout "
            "(raw/, knowmem/, verbmem/) or run `sinklens organism path`"
        )
    raw = root / "raw"
    retain: list[str] = []
    for f in sorted(raw.glob("retain*.txt")) if raw.is_dir() else []:
        retain.extend(_read_text(f))
    km = {field: _read_knowmem(root / "knowmem" / fname) for field, fname in _KNOWMEM_FILES.items()}
    return Benchmark(
        name=root.name,
        forget_texts=_read_text(raw / "forget.txt"),
        retain_texts=tuple(retain),
        general_texts=_read_text(raw / "general.txt"),
        verbmem_forget=_read_verbmem(root / "verbmem" / "forget.json"),
        choice_forget=_read_choice(root / "choice" / "forget.jsonl"),
        choice_retain=_read_choice(root / "choice" / "retain.jsonl"),
        holdout_texts=_read_text(raw / "holdout.txt")
        or _read_texts(root / "privleak" / "holdout.json"),
        privleak_forget_texts=_read_texts(root / "privleak" / "forget.json"),
        **km,
    )


def _dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # newline="\n" keeps bytes identical across platforms, so hashes of the folder are stable.
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def _passages_text(passages: tuple[str, ...]) -> str:
    for i, p in enumerate(passages):
        if not p.strip() or p != p.strip() or "\n\n" in p.replace("\r\n", "\n"):
            raise SinklensError(
                f"passage {i} is empty, has surrounding whitespace or a blank line inside, "
                "so it would not survive the blank-line-separated raw format; strip it first"
            )
    return "\n\n".join(passages) + "\n"


def write_benchmark(bench: Benchmark, path: str | Path) -> None:
    """Write `bench` in the layout `load_benchmark` reads, with deterministic bytes.

    Empty parts are not written (so loading gives back empty tuples); JSON uses sorted
    keys, indent 2 and a trailing newline.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    texts = {
        "forget.txt": bench.forget_texts,
        "retain.txt": bench.retain_texts,
        "general.txt": bench.general_texts,
        "holdout.txt": bench.holdout_texts,
    }
    for fname, passages in texts.items():
        if passages:
            _write(root / "raw" / fname, _passages_text(passages))
    for field, fname in _KNOWMEM_FILES.items():
        items: tuple[KnowMemItem, ...] = getattr(bench, field)
        if items:
            rows = [{"question": it.question, "answer": it.answer} for it in items]
            _write(root / "knowmem" / fname, _dump_json(rows))
    if bench.verbmem_forget:
        rows_v = [{"prompt": it.prompt, "gt": it.gt} for it in bench.verbmem_forget]
        _write(root / "verbmem" / "forget.json", _dump_json(rows_v))
    for fname, choice_items in (
        ("forget.jsonl", bench.choice_forget),
        ("retain.jsonl", bench.choice_retain),
    ):
        if choice_items:
            lines = [
                json.dumps(
                    {"answer": it.answer, "choices": list(it.choices), "question": it.question},
                    sort_keys=True,
                    ensure_ascii=False,
                )
                for it in choice_items
            ]
            _write(root / "choice" / fname, "\n".join(lines) + "\n")
    if bench.privleak_forget_texts:
        _write(root / "privleak" / "forget.json", _dump_json(list(bench.privleak_forget_texts)))
