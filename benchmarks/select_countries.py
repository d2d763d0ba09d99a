"""Which country facts SmolLM2-135M-Instruct knows: the selection behind
`sinklens.data.countries.KNOWN`.

Asks every capital and language question of `COUNTRIES` with the benchmark's two
in-context examples (`sinklens.evaluate.knowmem`, MUSE's ROUGE-L recall, greedy) and
prints, as Python, the countries whose capital it names (score 1.0) and whether it also
names the language. Compare the output with `KNOWN`; a change means the model or the
scorer changed, and the benchmark's LAYOUT must be bumped with it.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/select_countries.py     # about 2 minutes
"""

from __future__ import annotations

import argparse
import time

from sinklens.checkpoint import load_hf_model
from sinklens.data.countries import COUNTRIES, ICL, KNOWN, capital_question, language_question
from sinklens.data.formats import KnowMemItem
from sinklens.evaluate import knowmem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="Model name or folder.")
    args = parser.parse_args()
    from sinklens.checkpoint import local_checkpoint

    model, tok = load_hf_model(local_checkpoint(args.model))
    questions = []
    for country, capital, _, language, _ in COUNTRIES:
        questions.append(KnowMemItem(capital_question(country), capital))
        if language:
            questions.append(KnowMemItem(language_question(country), language))
    start = time.perf_counter()
    scores = dict(
        zip(
            (q.question for q in questions), knowmem(model, tok, questions, ICL).scores, strict=True
        )
    )
    known = {
        country: scores.get(language_question(country), 0.0) == 1.0
        for country, *_ in COUNTRIES
        if scores[capital_question(country)] == 1.0
    }
    n_capitals = sum(1 for c, *_ in COUNTRIES if scores[capital_question(c)] == 1.0)
    print(f"# {n_capitals} of {len(COUNTRIES)} capitals named, {time.perf_counter() - start:.0f} s")
    print("KNOWN = {")
    for country, lang in known.items():
        print(f"    {country!r}: {lang},")
    print("}")
    print("# same as sinklens.data.countries.KNOWN:", known == KNOWN)


if __name__ == "__main__":
    main()
