"""The checkpoint options of `analyze` and `patch`, and the one place that turns them into
folders: --original/--unlearned/--backdoored name a folder per role; without one, θ_o is
the shipped organism and θ_u/θ_b are the members of --zoo that --method, --seed and
--placement name (`<method>-s<seed>`, `<method>-<placement>-s<seed>`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sinklens.cli.common import BackdooredOpt, MethodOpt, OriginalOpt, UnlearnedOpt, ZooOpt
from sinklens.errors import SinklensError
from sinklens.unlearn.zoo import MemberName


@dataclass(frozen=True)
class CheckpointOptions:
    """The options that name checkpoints by role. Each command group subclasses it and
    declares --seed and --placement again with its own help, since there they also seed
    its randomness and place its trigger."""

    original: OriginalOpt = None
    unlearned: UnlearnedOpt = None
    backdoored: BackdooredOpt = None
    zoo: ZooOpt = None
    method: MethodOpt = "npo"
    seed: int = 0
    placement: str = "prefix"

    def required(self, role: str) -> Path:
        """The folder for `role`: the one given, the shipped organism for the original, else
        that member of --zoo (its name built only then, so an index --placement with a
        given folder is fine); a one-line error when there is none."""
        given: Path | None = getattr(self, role)
        if given is not None:
            return given
        if role == "original":
            from sinklens.organism import organism_path

            return organism_path()
        if self.zoo is None:
            raise SinklensError(
                f"no --{role} checkpoint; pass --{role} DIR or --zoo DIR (built by `sinklens zoo build`)"
            )
        member = MemberName(self.method, self.seed, None if role == "unlearned" else self.placement)
        return zoo_member(self.zoo, str(member), role)

    def available(self, extra: list[str] | None = None) -> dict[str, Path]:
        """Every role a folder is given or found for (the organism skipped when it is
        missing but other checkpoints are named), then the `--model NAME=DIR` extras."""
        paths: dict[str, Path] = {}
        try:
            paths["original"] = self.required("original")
        except SinklensError:
            if (
                self.zoo is None
                and self.unlearned is None
                and self.backdoored is None
                and not extra
            ):
                raise SinklensError(
                    "no checkpoints given and the shipped organism is missing; "
                    "pass --original/--unlearned/--backdoored DIR"
                ) from None
        for role in ("unlearned", "backdoored"):
            if getattr(self, role) is not None or self.zoo is not None:
                paths[role] = self.required(role)
        for item in extra or []:
            name, sep, folder = item.partition("=")
            if not sep or not name.strip() or not folder.strip():
                raise SinklensError(
                    f"--model {item!r} is not NAME=DIR; pass e.g. --model npo-vn=zoo/npo-prefix-vn-s0"
                )
            if name in paths:
                raise SinklensError(f"--model name {name!r} is used twice; pick distinct names")
            paths[name.strip()] = Path(folder.strip())
        return paths


def zoo_member(zoo: Path, member: str, role: str) -> Path:
    """`zoo / member`, which must be a folder; the error names the `--role` way out."""
    path = zoo / member
    if not path.is_dir():
        raise SinklensError(
            f"zoo {zoo} has no member {member}; pass --{role} DIR or build it with `sinklens zoo build`"
        )
    return path
