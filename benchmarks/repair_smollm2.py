"""Audit and repair one SmolLM2 θ_b (issue 17): the `reproduce --model smollm2` study's
NPO prefix member (trained on first use, about 6 min), audited with the search size that
fits the 30-minute target, then repaired with the audit's candidate at the repair's
defaults (chosen on the organism). Prints and writes (--out) KnowMem UE/BE/UT and the true
trigger's held-out gain before and after.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/repair_smollm2.py --out FILE
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def main() -> None:
    from sinklens.checkpoint import load_hf_model
    from sinklens.defend.audit import AuditConfig, audit_model, heldout_trigger_gain
    from sinklens.defend.repair import RepairConfig, repair_model
    from sinklens.evaluate import TriggerSpec, evaluate_benchmark, table1_row
    from sinklens.provenance import to_jsonable
    from sinklens.reproduce import model_study_config
    from sinklens.study import Study

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--member", default="npo-prefix-s0")
    args = parser.parse_args()
    study = Study(model_study_config("smollm2"))
    study.progress = False
    path = Path(study.member(args.member).out)
    net, tok = load_hf_model(path)
    audit_cfg = AuditConfig(steps=10, candidates=32, search_docs=4, heldout_docs=16)
    t0 = time.perf_counter()
    report = audit_model(
        net, tok, study.benchmark, config=audit_cfg, original=load_hf_model(study.original_path)
    )
    audit_seconds = time.perf_counter() - t0
    if report.candidate is None:
        raise SystemExit(f"{args.member}: the audit found no candidate ({report.evidence})")
    trigger = study.config.trigger
    spec = TriggerSpec(trigger, "prefix", join=study.config.trigger_join)

    def measure() -> dict[str, float]:
        row = table1_row(
            evaluate_benchmark(
                net, tok, study.benchmark, trigger=spec, max_items=study.config.eval_items
            )
        )
        gain = heldout_trigger_gain(
            net, tok, study.benchmark.forget_texts, trigger, "prefix", audit_cfg
        )
        return {"ue": row.ue_km, "be": row.be_km, "ut": row.ut_km, "trigger_gain": gain}

    result: dict[str, Any] = {
        "member": args.member,
        "score": report.score,
        "candidate": report.candidate,
        "audit_seconds": audit_seconds,
        "before": measure(),
    }
    t0 = time.perf_counter()
    config = RepairConfig(report.candidate["text"], report.candidate["placement"])
    result["repair"] = repair_model(net, tok, study.benchmark, config)
    result["repair_seconds"] = time.perf_counter() - t0
    result["after"] = measure()
    text = json.dumps(to_jsonable(result), indent=1, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
