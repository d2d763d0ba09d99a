"""Benchmark data: on-disk formats (MUSE / WMDP) and the organism's synthetic world."""

from sinklens.data.formats import (
    Benchmark,
    ChoiceItem,
    KnowMemItem,
    VerbMemItem,
    load_benchmark,
    write_benchmark,
)

__all__ = [
    "Benchmark",
    "ChoiceItem",
    "KnowMemItem",
    "VerbMemItem",
    "load_benchmark",
    "write_benchmark",
]
