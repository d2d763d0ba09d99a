"""The organism's checkpoint zoo: θ_u and θ_b for every method, placement and regulariser.

Members (one folder each under `out_dir`, `-s<seed>` appended):
    <method>                         θ_u, normal unlearning
    <method>-<placement>             θ_b, eq. 4
    <method>-<placement>-vn          θ_b with value-norm alignment (eq. 7, θ_u as reference)
A member whose folder already holds the same finished run is reused, so an interrupted
build resumes where it stopped; a folder holding a different run stops the build.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sinklens.errors import SinklensError
from sinklens.unlearn.config import METHOD_NAMES, UnlearnConfig

__all__ = ["MemberName", "ZooMember", "build_zoo", "zoo_members"]

ZOO_TABLE = "zoo_table"


@dataclass(frozen=True)
class MemberName:
    """A zoo member's name, e.g. `npo-s0` (θ_u), `npo-prefix-s0` (θ_b), `rmu-infix-vn-s1`
    (θ_b with value-norm alignment): built and parsed here only, so that a placement such
    as `Prefix` or an index never reaches a folder name unchecked."""

    method: str
    seed: int
    placement: str | int | None = None  # None: θ_u; an int (token index) is refused
    value_norm: bool = False

    def __post_init__(self) -> None:
        from sinklens.data.triggers import PLACEMENTS, parse_placement

        method = str(self.method).strip().lower()
        if method not in METHOD_NAMES:
            raise SinklensError(f"unknown method {self.method!r}; use {' or '.join(METHOD_NAMES)}")
        object.__setattr__(self, "method", method)
        if self.placement is not None:
            placement = parse_placement(self.placement)
            if placement not in PLACEMENTS:
                raise SinklensError(
                    f"the zoo trains triggers at {', '.join(PLACEMENTS)} only, not at token "
                    f"index {placement}; pass your own checkpoint for other placements"
                )
            object.__setattr__(self, "placement", placement)
        elif self.value_norm:
            raise SinklensError("value-norm alignment needs a backdoor placement (a θ_b member)")
        if int(self.seed) < 0:
            raise SinklensError(f"zoo seed must be >= 0, got {self.seed}")
        object.__setattr__(self, "seed", int(self.seed))

    def __str__(self) -> str:
        parts = [self.method, *([str(self.placement)] if self.placement is not None else [])]
        return "-".join([*parts, *(["vn"] if self.value_norm else []), f"s{self.seed}"])

    @property
    def unlearned(self) -> MemberName:
        """The θ_u of the same method and seed (a -vn member's value-norm reference)."""
        return MemberName(self.method, self.seed)

    @classmethod
    def parse(cls, name: str | MemberName) -> MemberName:
        if isinstance(name, MemberName):
            return name
        parts = str(name).strip().lower().split("-")
        seed = parts.pop() if parts else ""
        value_norm = bool(parts) and parts[-1] == "vn"
        if value_norm:
            parts.pop()
        if not seed.startswith("s") or not seed[1:].isdigit() or not 1 <= len(parts) <= 2:
            raise SinklensError(
                f"{name!r} is not a zoo member name; use METHOD[-PLACEMENT[-vn]]-sSEED, "
                "e.g. npo-s0, npo-prefix-s0 or rmu-infix-vn-s1"
            )
        return cls(parts[0], int(seed[1:]), parts[1] if len(parts) == 2 else None, value_norm)


@dataclass(frozen=True)
class ZooMember:
    member: MemberName
    config: UnlearnConfig

    @property
    def name(self) -> str:
        return str(self.member)


def zoo_members(
    out_dir: str | Path,
    base: UnlearnConfig,
    *,
    methods: Sequence[str] = ("npo", "rmu"),
    placements: Sequence[str] = ("prefix", "infix", "suffix"),
    value_norm_weight: float = 1.0,
    seeds: Sequence[int] = (0,),
) -> list[ZooMember]:
    """Every member's name and config, θ_u before the θ_b that reference it."""
    if value_norm_weight <= 0:
        raise SinklensError(
            f"value_norm_weight must be > 0 for the zoo's -vn members, got {value_norm_weight}"
        )
    root = Path(out_dir)
    members = []
    for seed in seeds:
        for method in methods:
            unlearned = MemberName(method, seed)
            u_cfg = base.replace(
                method=unlearned.method,
                seed=seed,
                backdoor=None,
                value_norm_weight=0.0,
                value_norm_reference=None,
                out=str(root / str(unlearned)),
            )
            members.append(ZooMember(unlearned, u_cfg))
            for placement in placements:
                plain = MemberName(method, seed, placement)
                b_cfg = u_cfg.replace(backdoor=plain.placement, out=str(root / str(plain)))
                members.append(ZooMember(plain, b_cfg))
                aligned = MemberName(method, seed, placement, value_norm=True)
                vn_cfg = b_cfg.replace(
                    value_norm_weight=value_norm_weight,
                    value_norm_reference=str((root / str(unlearned)).resolve()),
                    out=str(root / str(aligned)),
                )
                members.append(ZooMember(aligned, vn_cfg))
    return members


def _original_rows(root: Path, base: UnlearnConfig, placements: Sequence[str]) -> list[Any]:
    """θ_o scored with the trigger at each placement: the ceiling each θ_b's BE is read against.

    A trigger can change even the original model's answers (a suffix trigger right before
    the answer makes it continue the trigger's digits), so BE is only comparable to θ_o's
    score at the same placement. Cached per placement, keyed by the model's fingerprint.
    """
    from sinklens.checkpoint import checkpoint_fingerprint, load_hf_model
    from sinklens.data.formats import load_benchmark
    from sinklens.evaluate import Table1Row, TriggerSpec, evaluate_benchmark, table1_row
    from sinklens.unlearn.trainer import default_data_path, default_model_path

    model_path = Path(base.model) if base.model else default_model_path()
    data_path = Path(base.data) if base.data else default_data_path(model_path)
    key = {
        "model": checkpoint_fingerprint(model_path),
        "data": str(data_path.resolve()),
        "trigger": base.trigger,
        "trigger_join": base.trigger_join,
        "eval_items": base.eval_items,
    }
    rows: list[Any] = []
    loaded: tuple[Any, Any] | None = None
    bench = None
    for placement in placements:
        cache = root / f"original-{placement}.json"
        if cache.is_file():
            saved = json.loads(cache.read_text())
            if saved.get("key") == key:
                rows.append(Table1Row.from_dict(saved["row"]))
                continue
        if loaded is None:
            loaded = load_hf_model(model_path)
            bench = load_benchmark(data_path)
        ev = evaluate_benchmark(
            loaded[0],
            loaded[1],
            bench,  # type: ignore[arg-type]
            trigger=TriggerSpec(base.trigger, placement, join=base.trigger_join),
            model_name=f"original-{placement}",
            max_items=base.eval_items,
        )
        row = table1_row(ev)
        record = {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(row).items()
        }
        cache.write_text(json.dumps({"key": key, "row": record}, indent=2, sort_keys=True) + "\n")
        rows.append(row)
    return rows


def build_zoo(
    out_dir: str | Path,
    base: UnlearnConfig | None = None,
    *,
    methods: Sequence[str] = ("npo", "rmu"),
    placements: Sequence[str] = ("prefix", "infix", "suffix"),
    value_norm_weight: float = 1.0,
    seeds: Sequence[int] = (0,),
    progress: bool = True,
    on_member: Callable[[str, bool, float], None] | None = None,
) -> dict[str, Any]:
    """Train (or reuse) every member; write `zoo.json` and the Table 1 rows of all members.

    Returns {"members": {name: {"path", "reused", "train_seconds", "row"}}, "table": [rows]};
    the table starts with θ_o's rows, one per placement (`original-<placement>`).
    `on_member(name, reused, seconds)` is called after each member.
    """
    from sinklens.evaluate import Table1Row, write_table
    from sinklens.unlearn.trainer import run_unlearning

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    base = base or UnlearnConfig()
    members = zoo_members(
        root,
        base,
        methods=methods,
        placements=placements,
        value_norm_weight=value_norm_weight,
        seeds=seeds,
    )
    summary: dict[str, Any] = {"members": {}, "table": []}
    rows = []
    for m in members:
        res = run_unlearning(m.config, progress=progress)
        row = res.metrics.get("evaluation")
        summary["members"][m.name] = {
            "path": str(res.out),
            "reused": res.reused,
            "train_seconds": res.metrics.get("train_seconds"),
            "row": row,
        }
        if row is not None:
            rows.append(Table1Row.from_dict(row, model=m.name))
        if on_member is not None:
            on_member(m.name, res.reused, float(res.metrics.get("train_seconds") or 0.0))
    originals = _original_rows(root, base, placements)
    rows = originals + rows
    summary["table"] = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(r).items()}
        for r in rows
    ]
    if rows:
        write_table(rows, root, stem=ZOO_TABLE)
    (root / "zoo.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
