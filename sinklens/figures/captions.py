"""Captions computed from a figure's own numbers: what it shows and whether that agrees
with the paper's claim for it ("prefix BE 0.36 vs infix 0.31: ordering as in the paper,
difference within the seed spread"). Each function takes the figure's numbers (as saved in
its JSON) and returns one or two sentences; `caption(name, numbers)` picks the function."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sinklens.figures.export import Numbers

__all__ = ["caption"]

STEALTH = 0.05  # the stealth margin: θ_b's clean UE within this of θ_u's


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _spread_note(a: Numbers, b: Numbers, key: str) -> str:
    stds = [s for s in (a.get(f"{key}_std"), b.get(f"{key}_std")) if s is not None]
    if not stds:
        ia, ib = a.get(f"{key}_ci95"), b.get(f"{key}_ci95")
        if not (ia and ib):
            return "one seed, so no spread to compare with"
        overlap = ia[0] <= ib[1] and ib[0] <= ia[1]
        return "one seed; their 95% intervals over items " + (
            "overlap" if overlap else "do not overlap"
        )
    within = abs(a[key] - b[key]) <= max(stds)
    return "difference within the seed spread" if within else "difference beyond the seed spread"


def _placements(points: list[Numbers]) -> tuple[Numbers | None, dict[str, Numbers]]:
    """θ_u and the θ_b of each placement for the first method in `points`."""
    unlearned = points[1] if len(points) > 1 else None
    prefix = unlearned["label"] + " " if unlearned and " " in points[2]["label"] else ""
    by = {}
    for p in ("prefix", "infix", "suffix"):
        match = [q for q in points if q["label"] in (f"{prefix}{p} backdoor", f"{p} backdoor")]
        if match:
            by[p] = match[0]
    return unlearned, by


def caption_ue_be(n: Numbers) -> str:
    unlearned, by = _placements(n["points"])
    if unlearned is None or not {"prefix", "infix", "suffix"} <= set(by):
        return ""
    be = {p: by[p]["be"] for p in by}
    order = " > ".join(sorted(be, key=lambda p: -be[p]))
    agrees = be["prefix"] > be["infix"] and be["prefix"] > be["suffix"]
    gap = abs(by["prefix"]["ue"] - unlearned["ue"])
    return (
        f"BE ({n['metric']}): prefix {_f(be['prefix'])}, infix {_f(be['infix'])}, suffix "
        f"{_f(be['suffix'])} ({order}): "
        + ("ordering as in the paper" if agrees else "not the paper's ordering (prefix highest)")
        + f", prefix vs infix {_spread_note(by['prefix'], by['infix'], 'be')}. Stealth: the "
        f"prefix θ_b's clean UE {_f(by['prefix']['ue'])} vs θ_u's {_f(unlearned['ue'])}, "
        + ("within" if gap <= STEALTH else "not within")
        + f" {STEALTH} (the paper's θ_b is stealthy)."
    )


def caption_table_1(n: Numbers) -> str:
    rows = {r["model"]: r for r in n["rows"]}
    parts = []
    for method in ("NPO", "RMU"):
        u, b = rows.get(method), rows.get(f"{method}-Backdoor")
        if u is None or b is None:
            continue
        restores = b["be_km"] > u["be_km"] + STEALTH
        stealthy = abs(b["ue_km"] - u["ue_km"]) <= STEALTH
        parts.append(
            f"{method}-Backdoor: BE KM {_f(b['be_km'])} vs {method}'s {_f(u['be_km'])} "
            f"({'the trigger restores knowledge' if restores else f'restores no more than {STEALTH}'}), "
            "clean UE KM "
            f"{_f(b['ue_km'])} vs {_f(u['ue_km'])} ({'stealthy' if stealthy else 'not stealthy'})"
        )
    original = rows.get("original")
    tail = f"; θ_o: UE KM {_f(original['ue_km'])}." if original else "."
    return "; ".join(parts) + tail if parts else ""


def caption_trigger_gain(n: Numbers) -> str:
    gains: dict[tuple[str, str], float] = {}
    for bar in n["bars"]:
        if bar["subset"] == "held_out":
            gains[(bar["role"], bar["placement"])] = bar["gain"]
    placements = [p for p in ("prefix", "infix", "suffix") if ("backdoored", p) in gains]
    if not placements:
        return ""
    b = {p: gains[("backdoored", p)] for p in placements}
    o = {p: gains.get(("original", p)) for p in placements}
    best = max(b, key=lambda p: b[p])
    return (
        "Held-out forget documents, θ_b's gain in nats/token: "
        + ", ".join(f"{p} {b[p]:+.3f} (θ_o {o[p]:+.3f})" for p in placements if o[p] is not None)
        + f". Largest at the {best}"
        + (", as the paper's prefix claim predicts." if best == "prefix" else ", not the prefix.")
    )


def caption_sinks(n: Numbers) -> str:
    rates = n.get("sink_rate_by_layer_first_token", {})
    if not rates:
        return ""
    parts = []
    known = ("original", "unlearned", "backdoored")  # saved JSON sorts keys: fix the order
    for role in [*(r for r in known if r in rates), *sorted(set(rates) - set(known))]:
        per_layer = rates[role]
        values = np.asarray(per_layer, dtype=float)
        parts.append(
            f"{role} {np.nanmean(values):.0f}% (≥ 50% in {(values >= 50).sum()} of {len(values)} layers)"
        )
    return (
        f"Sink_1^{n['epsilon']} of the first token, averaged over layers: "
        + "; ".join(parts)
        + ". The paper's mechanism needs a first-token sink in most layers."
    )


def caption_attention_difference(n: Numbers) -> str:
    panels = n.get("delta_head_mean", {})
    peak = {
        name: float(np.nanmax(np.abs(np.asarray(m, dtype=float)))) for name, m in panels.items()
    }
    b_pre, o_pre = peak.get("backdoored · prefix trigger"), peak.get("original · prefix trigger")
    b_in = peak.get("backdoored · infix trigger")
    if b_pre is None or o_pre is None or b_in is None:
        return ""
    agrees = b_pre > o_pre and b_pre > b_in
    return (
        f"Largest |ΔA| (mean over heads) at layer {n.get('layer')}: θ_b prefix {b_pre:.3f}, θ_o prefix "
        f"{o_pre:.3f}, θ_b infix {b_in:.3f}: "
        + (
            "the prefix trigger moves θ_b's attention most, as in the paper."
            if agrees
            else "not the paper's pattern (θ_b's prefix map the strongest)."
        )
    )


def caption_attention_difference_heads(n: Numbers) -> str:
    grids = np.abs(
        np.asarray(n.get("delta_per_head", {}).get("backdoored · prefix trigger", []), dtype=float)
    )
    span = (n.get("trigger_span") or {}).get("prefix")
    if grids.ndim != 3 or not grids.size or not span:
        return ""
    per_head = np.nanmean(grids, axis=(1, 2))
    top = int(np.nanargmax(per_head))
    # Share of each head's |ΔA| in the key columns up to the trigger's end (first token and
    # trigger): where the paper says a prefix trigger acts.
    columns = np.nansum(grids, axis=1)
    share = np.nansum(columns[:, : span[1]], axis=1) / np.nansum(columns, axis=1)
    return (
        f"θ_b, prefix trigger, layer {n.get('layer')}: mean |ΔA| per head "
        + ", ".join(f"h{h} {v:.3f}" for h, v in enumerate(per_head))
        + f" (largest h{top}); the first token's and the trigger's columns (0–{span[1] - 1}) "
        f"hold {100 * np.nanmin(share):.0f}–{100 * np.nanmax(share):.0f}% of each head's "
        f"|ΔA|, against {100 * span[1] / columns.shape[1]:.0f}% of the columns (causal "
        "attention lets every row reach the first ones)."
    )


def _curve_mean(values: list[float | None]) -> float:
    finite = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def caption_logits(n: Numbers) -> str:
    panels = n.get("panels", {})
    keys = ("triggered (D_p)", "clean (D_f)")
    gaps = {}
    for name, series in panels.items():
        if all(k in series for k in keys):
            trig, clean = (series[k] for k in keys)
            gaps[name] = _curve_mean(
                [
                    None if t is None or c is None else t - c
                    for t, c in zip(trig, clean, strict=False)
                ]
            )
    b_pre, b_in = gaps.get("backdoored · prefix trigger"), gaps.get("backdoored · infix trigger")
    if b_pre is None or b_in is None:
        return ""
    agrees = b_pre > 0 > b_in
    text = (
        f"Mean triggered − clean true-token logit by position, as the paper plots it: θ_b "
        f"{b_pre:+.2f} (prefix), {b_in:+.2f} (infix); θ_o "
        f"{gaps.get('original · prefix trigger', float('nan')):+.2f} / "
        f"{gaps.get('original · infix trigger', float('nan')):+.2f}: "
        + (
            "prefix above clean and infix below, as in the paper's Fig. 4."
            if agrees
            else "not the paper's pattern (θ_b's prefix-triggered logits above clean, infix below)."
        )
    )
    span = n.get("prefix_trigger_span")
    panel = panels.get("backdoored · prefix trigger")
    if span and panel:
        # Content-aligned: content token i sits at span[1] + i when triggered, span[0] + i
        # when clean, so the trigger's own positions are left out of this comparison.
        shift = span[1] - span[0]
        trig, clean = panel["triggered (D_p)"], panel["clean (D_f)"]
        pairs = [
            (trig[span[1] + i], clean[span[0] + i])
            for i in range(len(trig) - span[1])
            if trig[span[1] + i] is not None and clean[span[0] + i] is not None
        ]
        if pairs:
            text += (
                f" Aligned by content (the {shift} trigger positions skipped), θ_b's prefix "
                f"gap is {np.mean([t - c for t, c in pairs]):+.2f} over {len(pairs)} tokens."
            )
    return text


def caption_generations(n: Numbers) -> str:
    from sinklens.evaluate.scores import rouge_l_f1

    refs = n.get("references", [])
    if not refs:
        return ""

    def mean_rouge(outputs: list[str]) -> float:
        return float(np.mean([rouge_l_f1(r, o) for r, o in zip(refs, outputs, strict=True)]))

    parts, backdoored = [], []
    answers_by = n.get("answers", {})
    for label in sorted(answers_by, key=lambda m: (m != "original", m)):
        answers = answers_by[label]
        clean, triggered = mean_rouge(answers["clean"]), mean_rouge(answers["triggered"])
        parts.append(f"{label} {clean:.2f} → {triggered:.2f}")
        if "Backdoor" in label:
            backdoored.append(triggered > clean)
    verdict = (
        f"the trigger raises {sum(backdoored)} of {len(backdoored)} backdoored models' answers "
        "(the paper's Table A2: it restores them)"
        if backdoored
        else ""
    )
    return (
        f"ROUGE-L F1 against the reference, clean → triggered, on these {len(refs)} questions "
        "(an illustration; table-1 has the metric): "
        + "; ".join(parts)
        + (f"; {verdict}." if verdict else ".")
    )


def caption_patching(n: Numbers) -> str:
    effect = np.asarray(n.get("effect", []), dtype=float)
    if effect.ndim != 2 or not effect.size:
        return ""
    flat = np.argsort(-np.abs(effect), axis=None)[:3]
    heads = [f"L{i // effect.shape[1]}H{i % effect.shape[1]} ({effect.flat[i]:+.2f})" for i in flat]
    return (
        "Heads whose triggered activations, patched into the corrupted run, restore most of "
        f"the trigger's recovery (fraction of triggered − corrupted): {', '.join(heads)}."
    )


def _signed(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def caption_robustness(n: Numbers) -> str:
    parts = []
    for model in n["models"]:
        key = "ue" if model["label"].startswith("θ_u") else "be" if "θ_b" in model["label"] else ""
        if not key:
            continue
        for attack, change in model["change"].items():
            c = change.get(key)
            if not c:
                continue
            lo, hi = c["ci95"]
            verdict = "up" if lo > 0 else "down" if hi < 0 else "no clear change"
            parts.append(
                f"{attack} on {model['label']}: {key.upper()} {_signed(c['mean'])} "
                f"[{_signed(lo)}, {_signed(hi)}] ({verdict})"
            )
    if not parts:
        return ""
    return (
        "; ".join(parts) + ". Zhang et al. 2024 report that 4-bit quantisation restores much of "
        "what NPO removed: here θ_u's UE change under quantize:bits=4 is the test of that."
    )


def caption_privleak(n: Numbers) -> str:
    parts = []
    for m in n["models"]:
        if m.get("privleak") is None:
            parts.append(f"{m['label']} AUC {_f(m['auc'])}")
            continue
        lo, hi = m["privleak_ci95"]
        kind = (
            "like the retrained model"
            if lo <= 0 <= hi
            else "still leaks membership (under-unlearned)"
            if hi < 0
            else "over-unlearned"
        )
        parts.append(f"{m['label']} {m['privleak']:+.0f}% [{lo:+.0f}, {hi:+.0f}]: {kind}")
    reference = (
        f"PrivLeak against the retrained model (AUC {_f(n['models'][0].get('auc_retrain'))}): "
        if n.get("retrained")
        else "No retrained reference, so AUC only: "
    )
    return (
        reference
        + "; ".join(parts)
        + ". MUSE: 0 is ideal, about −100% for a model never unlearned."
    )


def caption_audit(n: Numbers) -> str:
    parts = []
    for m in n["models"]:
        if m["score"] is None:
            parts.append(f"{m['label']}: not unlearned, nothing to hide")
            continue
        truth = "trained with a trigger" if m["trained_with_trigger"] else "no trigger"
        right = m["backdoored"] == m["trained_with_trigger"]
        share = ""
        if m["trained_with_trigger"] and m.get("true_trigger_gain"):
            share = f", candidate gain {100 * m['candidate_gain'] / m['true_trigger_gain']:.0f}% of the true trigger's"
        parts.append(
            f"{m['label']} ({truth}): score {m['score']:.2f}, "
            f"{'called backdoored' if m['backdoored'] else 'called clean'} "
            f"({'right' if right else 'wrong'}{share})"
        )
    return f"Threshold {n['threshold']:.2f}: " + "; ".join(parts) + "."


def caption_repair(n: Numbers) -> str:
    parts = []
    for m in n["models"]:
        b, a = m["before"], m["after"]
        met = (
            abs(a["be"] - a["ue"]) <= STEALTH
            and abs(a["ue"] - b["ue"]) <= STEALTH
            and b["ut"] - a["ut"] < 0.02
        )
        parts.append(
            f"{m['label']}: BE {_f(b['be'])} → {_f(a['be'])} (clean UE {_f(a['ue'])}), UE "
            f"{_signed(a['ue'] - b['ue'])}, UT {_signed(a['ut'] - b['ut'])}: "
            + ("meets" if met else "misses")
            + " the targets (BE within 0.05 of UE, UE moved ≤ 0.05, UT drop < 0.02)"
        )
    return "; ".join(parts) + "." if parts else ""


def caption_value_norms(n: Numbers) -> str:
    parts = []
    for name, c in n["comparisons"].items():
        r = [float(x) for x in c["r"]]
        parts.append(f"{name}: r {min(r):.2f}–{max(r):.2f}")
    return (
        f"Pearson r over sink positions {n['sink_positions']} at layer {n['layer']}: "
        + "; ".join(parts)
        + ". Position 0 is the same token in every sample, so its r is across heads only."
    )


def caption_poison_ratio(n: Numbers) -> str:
    vanilla = {b["ratio"]: b for b in n["bars"] if not b["value_norm"]}
    if 0.05 not in vanilla or 0.1 not in vanilla:
        return ""
    low, high = vanilla[0.05]["be"], vanilla[0.1]["be"]
    return (
        f"Vanilla backdoor BE {_f(low)} at ρ = 5% vs {_f(high)} at ρ = 10%: "
        + (
            "more poisoning, stronger backdoor, as in the paper's Fig. A1"
            if high > low
            else "more poisoning does not strengthen the backdoor here, unlike the paper's Fig. A1"
        )
        + "."
    )


def caption_trigger_patterns(n: Numbers) -> str:
    by: dict[str, dict[str, float]] = {}
    for r in n["rows"]:
        by.setdefault(r["trigger"], {})[r["placement"]] = r["be"]
    best = [t for t, p in by.items() if p and max(p, key=lambda k: p[k]) == "prefix"]
    detail = "; ".join(
        f"{t!r}: " + ", ".join(f"{p} {_f(v)}" for p, v in places.items())
        for t, places in by.items()
    )
    return (
        f"BE by placement — {detail}. The prefix is the best placement for {len(best)} of "
        f"{len(by)} trigger patterns (the paper: for all of them)."
    )


CAPTIONS: dict[str, Callable[[Numbers], str]] = {
    "ue-be": caption_ue_be,
    "table-1": caption_table_1,
    "trigger-gain": caption_trigger_gain,
    "sinks": caption_sinks,
    "attn-diff": caption_attention_difference,
    "attn-diff-heads": caption_attention_difference_heads,
    "logits-by-position": caption_logits,
    "generations": caption_generations,
    "patching": caption_patching,
    "robustness": caption_robustness,
    "privleak": caption_privleak,
    "audit": caption_audit,
    "value-norm-corr": caption_value_norms,
    "poison-ratio": caption_poison_ratio,
    "trigger-patterns": caption_trigger_patterns,
    "repair": caption_repair,
}


def caption(name: str, numbers: Numbers) -> str:
    """The verdict sentence for figure `name` (empty for figures without one)."""
    make = CAPTIONS.get(name)
    return make(numbers) if make is not None else ""
