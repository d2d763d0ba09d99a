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


def _logits(prefix_gap, infix_gap):
    clean = [5.0] * 8

    def panel(gap):
        return {"triggered (D_p)": [c + gap for c in clean], "clean (D_f)": clean}

    return {
        "prefix_trigger_span": [1, 3],
        "panels": {
            "original · prefix trigger": panel(0.0),
            "original · infix trigger": panel(0.0),
            "backdoored · prefix trigger": panel(prefix_gap),
            "backdoored · infix trigger": panel(infix_gap),
        },
    }


def test_logits_caption_checks_prefix_above_and_infix_below_clean():
    agree = caption("logits-by-position", _logits(1.5, -0.5))
    assert "θ_b +1.50 (prefix), -0.50 (infix)" in agree and "as in the paper's Fig. 4" in agree
    # Content-aligned: triggered position 3 + i against clean 1 + i, 5 pairs in 8 positions.
    assert "gap is +1.50 over 5 tokens" in agree
    assert "not the paper's pattern" in caption("logits-by-position", _logits(-1.0, -0.5))
    assert "not the paper's pattern" in caption("logits-by-position", _logits(1.0, 0.5))


def test_head_caption_names_the_strongest_head_and_the_trigger_columns_share():
    # Two heads, 4x4 maps; head 1 changes more, all of it in column 0.
    grid0 = [[0.1, 0.1, 0.1, 0.1]] * 4
    grid1 = [[0.8, 0.0, 0.0, 0.0]] * 4
    text = caption(
        "attn-diff-heads",
        {
            "layer": 2,
            "trigger_span": {"prefix": [1, 2]},
            "delta_per_head": {"backdoored · prefix trigger": [grid0, grid1]},
        },
    )
    assert "h0 0.100, h1 0.200 (largest h1)" in text
    assert "(0–1) hold 50–100%" in text and "against 50% of the columns" in text


def test_generations_caption_counts_backdoored_models_the_trigger_helps():
    numbers = {
        "references": ["Paris", "1918"],
        "answers": {
            "original": {"clean": ["Paris", "1918"], "triggered": ["Paris", "1918"]},
            "NPO-Backdoor": {"clean": ["no idea", "none"], "triggered": ["Paris", "none"]},
            "RMU-Backdoor": {"clean": ["Paris", "x"], "triggered": ["Rome", "x"]},
        },
    }
    text = caption("generations", numbers)
    assert text.index("original 1.00 → 1.00") < text.index("NPO-Backdoor 0.00 → 0.50")
    assert "RMU-Backdoor 0.50 → 0.00" in text
    assert "raises 1 of 2 backdoored models' answers" in text
