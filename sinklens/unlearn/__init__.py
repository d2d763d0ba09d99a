"""Unlearning (NPO, RMU), backdoored unlearning and value-norm alignment.

`UnlearnConfig` describes a run, `run_unlearning` trains and saves it, `build_zoo` makes the
organism's checkpoint zoo. Heavy modules are imported on first use.
"""

from __future__ import annotations

from typing import Any

from sinklens.unlearn.config import METHOD_NAMES, UnlearnConfig

__all__ = ["METHOD_NAMES", "UnlearnConfig", "build_zoo", "make_method", "run_unlearning"]


def __getattr__(name: str) -> Any:
    if name == "run_unlearning":
        from sinklens.unlearn.trainer import run_unlearning

        return run_unlearning
    if name == "make_method":
        from sinklens.unlearn.registry import make_method

        return make_method
    if name == "build_zoo":
        from sinklens.unlearn.zoo import build_zoo

        return build_zoo
    raise AttributeError(name)
