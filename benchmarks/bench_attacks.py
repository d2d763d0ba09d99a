"""How long a robustness attack takes, end to end (load, score before, attack, score after),
and what it does, on θ_u and the prefix θ_b of a study's zoo. Prints one JSON object: per
model and attack the seconds (whole run and the attack alone), the ratio to the ceiling
(issue 16: 60 s per attack on an organism model, 900 s on SmolLM2) and the KnowMem changes
with their paired 95% bootstrap intervals.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_attacks.py            # organism
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_attacks.py --model smollm2

With --model smollm2 the zoo comes from the cache of `sinklens reproduce --model smollm2`
(run it first, or point SINKLENS_CACHE at a cache that holds it, or pass --unlearned and
--backdoored).
"""

from __future__ import annotations

import argparse
import json
import time

from sinklens.attacks import parse_attack, run_attack
from sinklens.evaluate import TriggerSpec, evaluate_benchmark
from sinklens.reproduce import model_study_config, reproduce_config
from sinklens.study import Study

CEILING_S = {"organism": 60.0, "smollm2": 900.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="organism", choices=sorted(CEILING_S))
    parser.add_argument(
        "--attacks", default="quantize:bits=4;quantize:bits=8;relearn", help="';'-separated"
    )
    parser.add_argument("--unlearned", help="θ_u folder (default: the study's zoo member)")
    parser.add_argument("--backdoored", help="prefix θ_b folder (default: the zoo member)")
    args = parser.parse_args()
    given = {"unlearned": args.unlearned, "backdoored": args.backdoored}
    given = {k: v for k, v in given.items() if v}
    if args.model == "organism":
        config = reproduce_config(**given)
    else:
        config = model_study_config(args.model, **given)
    study = Study(config)
    spec = TriggerSpec(config.trigger, "prefix", join=config.trigger_join)

    def score(net: object, tok: object, name: str) -> object:
        return evaluate_benchmark(
            net, tok, study.benchmark, trigger=spec, model_name=name, max_items=config.eval_items
        )

    models = {"θ_u": study.unlearned_path(), "θ_b prefix": study.backdoored_path("prefix")}
    out: dict[str, object] = {"model": args.model, "ceiling_s": CEILING_S[args.model]}
    for label, path in models.items():
        for attack in (parse_attack(a) for a in args.attacks.split(";")):
            t0 = time.perf_counter()
            result = run_attack(attack, path, study.benchmark, evaluate=score)
            seconds = time.perf_counter() - t0
            out[f"{label} {attack.label}"] = {
                "seconds": round(seconds, 1),
                "attack_seconds": round(result.seconds, 1),
                "ratio_to_ceiling": round(seconds / CEILING_S[args.model], 3),
                "change": result.effect,
            }
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
