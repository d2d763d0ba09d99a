"""Captions state what a figure's numbers say, and flip when the numbers do."""

from sinklens.figures.captions import caption


def _points(prefix, infix, suffix, ue_b, ue_u, std=None):
    def point(label, be, ue):
        return {"label": label, "be": be, "ue": ue, "ut": 1.0, "be_std": std, "ue_std": std}

    return {
        "metric": "KnowMem",
        "points": [
            point("original", 1.0, 1.0),
            point("NPO", 0.2, ue_u),
            point("prefix backdoor", prefix, ue_b),
            point("infix backdoor", infix, 0.3),
            point("suffix backdoor", suffix, 0.3),
        ],
    }


def test_ue_be_caption_follows_the_numbers():
    agree = caption("ue-be", _points(0.6, 0.3, 0.2, ue_b=0.21, ue_u=0.2))
    assert "ordering as in the paper" in agree and "within 0.05" in agree
    assert "one seed" in agree
    disagree = caption("ue-be", _points(0.3, 0.6, 0.2, ue_b=0.5, ue_u=0.2, std=0.01))
    assert "not the paper's ordering" in disagree and "not within 0.05" in disagree
    assert "beyond the seed spread" in disagree
    close = caption("ue-be", _points(0.36, 0.31, 0.2, ue_b=0.2, ue_u=0.2, std=0.1))
    assert "within the seed spread" in close


def test_table_caption_needs_a_real_restoration():
    rows = [
        {"model": "original", "ue_km": 1.0, "be_km": 1.0},
        {"model": "NPO", "ue_km": 0.2, "be_km": 0.2},
        {"model": "NPO-Backdoor", "ue_km": 0.22, "be_km": 0.23},
    ]
    assert "restores no more than 0.05" in caption("table-1", {"rows": rows})
    rows[2]["be_km"] = 0.8
    assert "the trigger restores knowledge" in caption("table-1", {"rows": rows})


def test_figures_without_a_verdict_have_an_empty_caption():
    assert caption("generations", {}) == ""


def _change(mean, lo, hi):
    return {"mean": mean, "ci95": [lo, hi]}


def test_robustness_caption_reads_the_paired_intervals():
    numbers = {
        "models": [
            {"label": "θ_o", "change": {"quantize:bits=4": {"ue": _change(0.0, 0.0, 0.0)}}},
            {
                "label": "θ_u",
                "change": {
                    "quantize:bits=4": {"ue": _change(0.02, -0.01, 0.05)},
                    "relearn": {"ue": _change(0.2, 0.1, 0.3)},
                },
            },
            {"label": "θ_b prefix", "change": {"relearn": {"be": _change(-0.2, -0.3, -0.1)}}},
        ]
    }
    text = caption("robustness", numbers)
    assert "quantize:bits=4 on θ_u: UE +0.02 [-0.01, +0.05] (no clear change)" in text
    assert "relearn on θ_u: UE +0.20 [+0.10, +0.30] (up)" in text
    assert "relearn on θ_b prefix: BE -0.20 [-0.30, -0.10] (down)" in text
    assert "θ_o" not in text.split(". Zhang")[0]


def test_privleak_caption_classifies_each_model():
    def model(label, leak, lo, hi):
        return {
            "label": label,
            "auc": 0.1,
            "auc_retrain": 0.5,
            "privleak": leak,
            "privleak_ci95": [lo, hi],
        }

    numbers = {
        "retrained": "organism/retrained",
        "models": [
            model("θ_o", -99, -100, -98),
            model("θ_u", 4, -10, 20),
            model("θ_b", 60, 20, 90),
        ],
    }
    text = caption("privleak", numbers)
    assert "AUC 0.50" in text
    assert "θ_o -99% [-100, -98]: still leaks membership" in text
    assert "θ_u +4% [-10, +20]: like the retrained model" in text
    assert "θ_b +60% [+20, +90]: over-unlearned" in text
    alone = {"retrained": None, "models": [{"label": "θ_u", "auc": 0.3, "privleak": None}]}
    assert caption("privleak", alone).startswith(
        "No retrained reference, so AUC only: θ_u AUC 0.30"
    )


def test_one_seed_caption_compares_item_intervals():
    numbers = _points(0.36, 0.31, 0.2, ue_b=0.2, ue_u=0.2)
    prefix, infix = numbers["points"][2], numbers["points"][3]
    prefix["be_ci95"], infix["be_ci95"] = [0.30, 0.42], [0.25, 0.37]
    assert "their 95% intervals over items overlap" in caption("ue-be", numbers)
    infix["be_ci95"] = [0.20, 0.29]
    assert "do not overlap" in caption("ue-be", numbers)


def test_trigger_pattern_and_poison_captions_follow_the_numbers():
    rows = [
        {"trigger": t, "placement": p, "be": be}
        for t, scores in {"a": (0.5, 0.3, 0.0), "b": (0.2, 0.4, 0.0)}.items()
        for p, be in zip(("prefix", "infix", "suffix"), scores, strict=True)
    ]
    text = caption("trigger-patterns", {"rows": rows})
    assert "best placement for 1 of 2 trigger patterns" in text
    bars = [
        {"ratio": r, "value_norm": vn, "be": be}
        for r, vn, be in (
            (0.05, False, 0.2),
            (0.1, False, 0.4),
            (0.05, True, 0.1),
            (0.1, True, 0.1),
        )
    ]
    assert "as in the paper's Fig. A1" in caption("poison-ratio", {"bars": bars})
    bars[1]["be"] = 0.1
    assert "unlike the paper's Fig. A1" in caption("poison-ratio", {"bars": bars})
