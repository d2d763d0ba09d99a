"""A study: the checkpoints and data that the paper's figures are computed from.

`StudyConfig` is the one config of `sinklens figure` and `sinklens reproduce` (and of the
notebooks). `Study` resolves it into paths: the original model (default: the shipped
organism), the world it was trained on, and the unlearned/backdoored checkpoints (default:
members of the organism's zoo, trained on first use and reused after). Models are loaded
once per study and shared by every figure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from sinklens.data.triggers import DEFAULT_JOIN, DEFAULT_TRIGGER, parse_join
from sinklens.errors import SinklensError
from sinklens.unlearn.zoo import MemberName

PAPER_TRIGGERS = (DEFAULT_TRIGGER, "!!!!!", "step-by-step")
T = TypeVar("T")

PLACEMENTS = ("prefix", "infix", "suffix")
ZOO_LAYOUT = 3
ROLE_CHECK_TEXTS = 8


def default_cache_dir() -> Path:
    """Where zoo checkpoints and capture caches live: `sinklens.settings.cache_root()`."""
    from sinklens.settings import cache_root

    return cache_root()


@dataclass(frozen=True)
class StudyConfig:
    """Everything a figure run needs; also the arguments of `sinklens figure`/`reproduce`."""

    original: str | None = None
    unlearned: str | None = None
    backdoored: str | None = None
    # θ_o retrained without the forget set, PrivLeak's reference (default: the shipped one
    # when θ_o is the shipped organism; none otherwise, and PrivLeak shows the AUC only).
    retrained: str | None = None
    data: str | None = None
    cache_dir: str | None = None
    layer: int | None = None
    trigger: str = DEFAULT_TRIGGER
    trigger_join: str = DEFAULT_JOIN
    method: str = "npo"
    n_samples: int = 24
    # (prompt, answer) pairs of the patching figure: exact patching reruns the model once
    # per (layer, head) and depth, so a 30-layer model gets fewer.
    patching_pairs: int = 32
    window: int = 24
    sink_positions: int = 4
    seeds: tuple[int, ...] = (0,)
    full: bool = False
    backend: str = "bridge"
    zoo_steps: int | None = None
    eval_items: int | None = None
    # UnlearnConfig fields for every zoo member, as (name, value) pairs, `method:name` for
    # one method's members only (`npo:lr`): a real model's hyper-parameters (see
    # sinklens.reproduce.MODEL_STUDIES). zoo_steps/eval_items win.
    zoo_settings: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise SinklensError(f"n_samples must be >= 1, got {self.n_samples}")
        if self.patching_pairs < 1:
            raise SinklensError(f"patching_pairs must be >= 1, got {self.patching_pairs}")
        if self.window < 2:
            raise SinklensError(f"window must be >= 2 positions, got {self.window}")
        if not self.seeds:
            raise SinklensError("seeds is empty; pass at least one seed")
        if self.method not in ("npo", "rmu"):
            raise SinklensError(f"unknown method {self.method!r}; use npo or rmu")
        object.__setattr__(self, "trigger_join", parse_join(self.trigger_join))
        if not self.trigger.strip():
            raise SinklensError(f"empty trigger; pass e.g. --trigger {DEFAULT_TRIGGER!r}")
        if self.zoo_steps is not None and self.zoo_steps < 1:
            raise SinklensError(f"zoo_steps must be >= 1, got {self.zoo_steps}")
        if self.zoo_settings:
            from sinklens.unlearn.config import UnlearnConfig

            owned = {"model", "data", "out", "trigger", "trigger_join", "poison_ratio"}
            names = {k.split(":")[-1] for k, _ in self.zoo_settings}
            clash = sorted(owned & names)
            if clash:
                raise SinklensError(
                    f"zoo_settings may not set {', '.join(clash)}: the study decides them"
                )
            for method in ("npo", "rmu"):  # one-line error if invalid
                UnlearnConfig.from_dict(self.zoo_overrides(method))

    def zoo_overrides(self, method: str, *, scoped_only: bool = False) -> dict[str, Any]:
        """The zoo settings that apply to `method`'s members (only the `method:` ones with
        `scoped_only`)."""
        out: dict[str, Any] = {}
        for key, value in self.zoo_settings:
            scope, _, name = key.rpartition(":")
            if scope == method or (scope == "" and not scoped_only):
                out[name] = value
        return out

    def replace(self, **changes: Any) -> StudyConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Study:
    """Resolved paths plus lazily loaded models and data for one `StudyConfig`."""

    config: StudyConfig
    # Show each zoo member's training progress bar (with its time left) on stderr.
    progress: bool = False
    _models: dict[tuple[tuple[str, str], ...], Any] = field(default_factory=dict, repr=False)
    # Trained zoo runs, evaluated rows and figure numbers, computed once per study.
    _memo: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)
    _benchmark: Any = field(default=None, repr=False)

    # ------------------------------------------------------------------ paths and data
    @property
    def cache_dir(self) -> Path:
        return Path(self.config.cache_dir) if self.config.cache_dir else default_cache_dir()

    @property
    def original_path(self) -> Path:
        from sinklens.organism import organism_path

        return Path(self.config.original) if self.config.original else organism_path()

    def retrained_path(self) -> Path | None:
        """PrivLeak's retrained reference: --retrained, else the organism's own."""
        from sinklens.organism import organism_path, retrained_path

        if self.config.retrained:
            return Path(self.config.retrained)
        if self.original_path.resolve() == organism_path().resolve():
            return retrained_path()
        return None

    @property
    def data_path(self) -> Path:
        from sinklens.organism import world_path

        if self.config.data:
            return Path(self.config.data)
        return world_path(self.original_path)

    @property
    def benchmark(self) -> Any:
        if self._benchmark is None:
            from sinklens.data.formats import load_benchmark

            self._benchmark = load_benchmark(self.data_path)
        return self._benchmark

    def forget_texts(self) -> list[str]:
        texts = list(self.benchmark.forget_texts)[: self.config.n_samples]
        if not texts:
            raise SinklensError(f"the benchmark at {self.data_path} has no forget texts")
        return texts

    def retain_texts(self) -> list[str]:
        return list(self.benchmark.retain_texts)[: self.config.n_samples]

    def general_texts(self) -> list[str]:
        texts = list(self.benchmark.general_texts) or list(self.benchmark.retain_texts)
        return texts[: self.config.n_samples]

    # ------------------------------------------------------------------ the zoo
    def member(
        self, name: str | MemberName, *, trigger: str | None = None, poison_ratio: float = 0.1
    ) -> Any:
        """Train (or reuse) one zoo member, e.g. `npo-s0`, `npo-prefix-s0`, `npo-infix-vn-s0`
        (a `MemberName` or its text).

        A `-vn` member needs its θ_u as the value-norm reference, which is trained first.
        Returns the trainer's `RunResult` (path and metrics, Table 1 row included).
        """
        from sinklens.unlearn.config import UnlearnConfig
        from sinklens.unlearn.trainer import run_unlearning
        from sinklens.unlearn.zoo import zoo_members

        member = MemberName.parse(name)
        name = str(member)
        trigger = trigger or self.config.trigger
        key = (name, trigger, poison_ratio)
        if key in self._memo:
            return self._memo[key]
        overrides = self.config.zoo_overrides("", scoped_only=False)
        if self.config.zoo_steps:
            overrides["steps"] = self.config.zoo_steps
        if self.config.eval_items:
            overrides["eval_items"] = self.config.eval_items
        base = UnlearnConfig(
            model=str(self.original_path),
            data=str(self.data_path),
            trigger=trigger,
            trigger_join=self.config.trigger_join,
            poison_ratio=poison_ratio,
            **overrides,
        )
        members = {
            m.name: m
            for m in zoo_members(
                self.zoo_dir(base),
                base,
                methods=("npo", "rmu"),
                placements=PLACEMENTS,
                seeds=self.config.seeds,
            )
        }
        if name not in members:
            raise SinklensError(f"no zoo member {name!r}; known members: {', '.join(members)}")
        config = members[name].config
        scoped = self.config.zoo_overrides(config.method, scoped_only=True)
        if scoped:
            config = config.replace(**scoped)
        unlearned = str(member.unlearned)
        default = (self.config.trigger, 0.1)
        if name == unlearned and (trigger, poison_ratio) != default:
            # θ_u does not depend on the trigger or the poisoning ratio: train it once.
            self._memo[key] = self.member(name, trigger=default[0], poison_ratio=default[1])
            return self._memo[key]
        if member.value_norm:
            reference = self.member(unlearned, trigger=default[0], poison_ratio=default[1])
            config = config.replace(value_norm_reference=str(Path(reference.out).resolve()))
        try:
            self._memo[key] = run_unlearning(config, progress=self.progress)
        except SinklensError as err:
            raise SinklensError(
                f"zoo member {name}: {err}; delete that folder or point SINKLENS_CACHE elsewhere"
            ) from None
        return self._memo[key]

    def zoo_dir(self, base: Any) -> Path:
        """One folder per (organism, unlearning settings): members never collide, and a
        change of defaults in a new sinklens version trains afresh instead of clashing."""
        import hashlib
        import json

        from sinklens.checkpoint import checkpoint_fingerprint

        settings = {k: v for k, v in base.to_dict().items() if k not in ("out", "model", "data")}
        # Bumped whenever the trainer changes how it recognises a run or what a finished
        # run records (3: Table 1 rows with bootstrap intervals), so old caches are left
        # alone instead of clashing or lacking what the figures read.
        settings["zoo_layout"] = ZOO_LAYOUT
        scoped = [[k, v] for k, v in self.config.zoo_settings if ":" in k]
        if scoped:  # method-scoped settings are not in `base`, so they join the key here
            settings["method_settings"] = scoped
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
        slug = "".join(c if c.isalnum() else "-" for c in base.trigger).strip("-") or "trigger"
        origin = checkpoint_fingerprint(self.original_path)[:12]
        return self.cache_dir / "zoo" / origin / f"{slug}-rho{base.poison_ratio:g}-{digest}"

    @property
    def methods(self) -> tuple[str, ...]:
        """The unlearning methods the figures show: the chosen one, or both with --full."""
        if self.config.full:
            return (self.config.method, *(m for m in ("npo", "rmu") if m != self.config.method))
        return (self.config.method,)

    def unlearned_path(self) -> Path:
        if self.config.unlearned:
            return Path(self.config.unlearned)
        return Path(self.member(MemberName(self.config.method, self.config.seeds[0])).out)

    def backdoored_path(self, placement: str = "prefix", *, regularised: bool = False) -> Path:
        """θ_b trained with `placement` (the user's --backdoored wins for every placement)."""
        if self.config.backdoored:
            return Path(self.config.backdoored)
        member = MemberName(self.config.method, self.config.seeds[0], placement, regularised)
        return Path(self.member(member).out)

    def once(self, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
        """`compute()` the first time `key` is asked for in this study, the same value after
        (figures that share a computation, such as attn-diff and attn-diff-heads, run it once)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]  # type: ignore[no-any-return]

    def provenance(self) -> dict[str, Any]:
        """What every figure of this study records: the study's settings (paths made
        portable), θ_o's and the data's fingerprints, and the library versions and commit."""
        from sinklens.checkpoint import checkpoint_fingerprint
        from sinklens.provenance import environment, portable_path

        settings = self.config.to_dict()
        for name in ("original", "unlearned", "backdoored", "retrained", "data", "cache_dir"):
            settings[name] = portable_path(settings[name])
        return {
            "study": settings,
            "original": portable_path(self.original_path),
            "original_fingerprint": checkpoint_fingerprint(self.original_path),
            "data": portable_path(self.data_path),
            **environment(),
        }

    # ------------------------------------------------------------------ models
    def models(self, paths: Mapping[str, Path]) -> Any:
        """A validated `ModelSet` for these roles, loaded once per study."""
        from sinklens.models import ModelSet, load_model

        key = tuple(sorted((role, str(Path(p).resolve())) for role, p in paths.items()))
        if key not in self._models:
            loaded = {
                role: load_model(path, role=role, backend=self.config.backend)
                for role, path in paths.items()
            }
            model_set = ModelSet(loaded)
            # A few forget texts are enough to see an original that looks unlearned.
            model_set.validate(forget_texts=self.forget_texts()[:ROLE_CHECK_TEXTS])
            self._models[key] = model_set
        return self._models[key]

    def paper_models(self) -> Any:
        """θ_o, θ_u and the prefix-trigger θ_b: the paper's three models, as a `ModelSet`."""
        return self.models(
            {
                "original": self.original_path,
                "unlearned": self.unlearned_path(),
                "backdoored": self.backdoored_path("prefix"),
            }
        )

    def layer(self, n_layers: int) -> int:
        """The analysed layer: --layer (range-checked), else the last one, as in the paper."""
        from sinklens.models import resolve_layer

        return resolve_layer(self.config.layer if self.config.layer is not None else -1, n_layers)
