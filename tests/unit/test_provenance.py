"""One provenance record and one JSON writer for every result (issue 15): analysis and
patching results carry the same `Provenance`, and their JSON is standard (no NaN, no
Infinity), through `sinklens.provenance.to_jsonable`."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

import sinklens.analyze
import sinklens.analyze.results
import sinklens.patching
import sinklens.patching.results
import sinklens.provenance
from sinklens.analyze import SinkStatistics
from sinklens.patching import HeadPatchingResult, SinkAblationResult
from sinklens.provenance import RERUN_VARYING, Provenance, dumps, to_jsonable


def _provenance(**settings):
    return Provenance(
        checkpoints={"backdoored": "$SINKLENS_CACHE/zoo/npo-prefix-s0"},
        fingerprints={"backdoored": "ab" * 32},
        dataset_hashes={"data": "cd" * 32},
        n_samples={"data": 2},
        settings=dict(settings),
        backend="bridge",
        dtype="float32",
    )


def _strict(text):
    """json.loads that refuses NaN, Infinity and -Infinity, as strict parsers do."""

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_analysis_and_patching_share_one_provenance_type():
    assert sinklens.analyze.Provenance is Provenance
    assert sinklens.patching.Provenance is Provenance
    assert sinklens.analyze.results.Provenance is Provenance
    assert sinklens.patching.results.Provenance is Provenance
    results = [
        *(getattr(sinklens.analyze, name) for name in sinklens.analyze.__all__),
        *(getattr(sinklens.patching, name) for name in sinklens.patching.__all__),
    ]
    results = [r for r in results if isinstance(r, type) and dataclasses.is_dataclass(r)]
    with_provenance = [
        r for r in results if "provenance" in {f.name for f in dataclasses.fields(r)}
    ]
    # Four analyses and five patching experiments.
    assert len(with_provenance) == 9
    for result in with_provenance:
        field = next(f for f in dataclasses.fields(result) if f.name == "provenance")
        assert field.type in ("Provenance", Provenance), result


def test_every_provenance_field_is_documented():
    source = Path(sinklens.provenance.__file__).read_text(encoding="utf-8")
    body = source[source.index("class Provenance") : source.index("def to_dict")]
    for f in dataclasses.fields(Provenance):
        before = body[: body.index(f"    {f.name}:")].rstrip().splitlines()[-1].strip()
        assert before.startswith("#"), f"Provenance.{f.name} has no comment above it"


def test_provenance_records_the_environment_and_drops_what_reruns_change():
    prov = _provenance(window=8)
    assert prov.environment["versions"]["sinklens"] == sinklens.__version__
    assert "git_commit" in prov.environment
    stable = prov.to_dict(omit=RERUN_VARYING)
    assert "created" not in stable and "cache" not in stable
    assert stable["fingerprints"] == {"backdoored": "ab" * 32}
    assert stable["settings"] == {"window": 8}


def test_results_with_infinite_values_write_standard_json():
    inf = float("inf")
    heads = HeadPatchingResult(
        direction="denoise",
        by_position=False,
        metric="logprob",
        patched=torch.tensor([[1.0, inf], [-inf, math.nan]]),
        effect=torch.tensor([[0.5, inf], [0.25, -inf]], dtype=torch.bfloat16),
        triggered_metric=inf,
        corrupted_metric=-inf,
        provenance=_provenance(experiment="trigger_patching", bound=inf),
    )
    text = heads.to_json()
    assert "Infinity" not in text and "NaN" not in text
    data = _strict(text)
    assert data["patched"] == [[1.0, None], [None, None]]
    assert data["effect"] == [[0.5, None], [0.25, None]]
    assert data["triggered_metric"] is None and data["corrupted_metric"] is None
    assert data["provenance"]["settings"]["bound"] is None
    assert data["provenance"]["fingerprints"] == {"backdoored": "ab" * 32}

    ablation = SinkAblationResult(
        mode="attention",
        metric="logprob",
        heads=[(0, 1)],
        sink_positions=[0],
        before={"t": -inf},
        after={"t": 1.0},
        provenance=_provenance(experiment="sink_ablation"),
    )
    assert _strict(ablation.to_json())["before"] == {"t": None}

    sinks = SinkStatistics(
        layers=[0],
        window=2,
        epsilon=0.3,
        min_rate=50.0,
        alpha={"original": torch.tensor([[[inf, 0.5]]])},
        sink_rate={"original": torch.tensor([inf])},
        sink_rate_by_layer={"original": torch.tensor([[inf, 1.0]])},
        sink_set={"original": (0,)},
        head_norm={"original": torch.tensor([[-inf]])},
        dormant_score={"original": torch.tensor([[math.nan]])},
        provenance=_provenance(analysis="sinks"),
    )
    text = sinks.to_json()
    assert "Infinity" not in text and "NaN" not in text
    data = _strict(text)
    assert data["alpha"]["original"] == [[[None, 0.5]]]
    assert data == sinks.to_dict() == _strict(dumps(sinks))
    # Every result has the same provenance keys in its JSON.
    assert set(data["provenance"]) == set(_strict(heads.to_json())["provenance"])


def test_the_one_json_cleaner():
    assert to_jsonable({1: (float("inf"), 1 / 3)}) == {"1": [None, 0.33333333]}
    assert to_jsonable(torch.tensor([1.5], dtype=torch.bfloat16)) == [1.5]
    with pytest.raises(ValueError):
        json.dumps(float("inf"), allow_nan=False)  # what dumps relies on
    assert dumps({"b": float("-inf"), "a": 1}, indent=None) == '{"a": 1, "b": null}'
