"""Name -> unlearning method. Add a method by writing one file and one line here."""

from __future__ import annotations

from torch import nn

from sinklens.errors import SinklensError
from sinklens.unlearn.base import UnlearnMethod
from sinklens.unlearn.config import METHOD_NAMES, UnlearnConfig
from sinklens.unlearn.npo import NPO
from sinklens.unlearn.rmu import RMU

__all__ = ["METHODS", "make_method"]

METHODS: dict[str, type[UnlearnMethod]] = {"npo": NPO, "rmu": RMU}
assert tuple(METHODS) == METHOD_NAMES, "config.METHOD_NAMES must list the registry's methods"


def make_method(cfg: UnlearnConfig, model: nn.Module) -> UnlearnMethod:
    try:
        cls = METHODS[cfg.method]
    except KeyError:
        raise SinklensError(
            f"unknown unlearning method {cfg.method!r}; use one of {', '.join(METHODS)}"
        ) from None
    return cls(cfg, model)
