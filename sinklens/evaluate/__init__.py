"""Score a model the way MUSE and WMDP do: KnowMem, VerbMem and multiple-choice accuracy,
each mean with a 95 % bootstrap interval over its items.

- **KnowMem** (MUSE): prompt = in-context QA examples + `Question: q\\nAnswer:`, greedy
  decoding of 32 new tokens, the output cut before the next `Question`, ROUGE-L F1 against
  the answer.
- **VerbMem** (MUSE): the passage opening, greedy decoding of 128 new tokens, ROUGE-L F1
  against the true continuation.
- **Multiple choice** (WMDP): question and lettered choices, then `Answer:`; the prediction
  is the letter whose tokens have the highest log-probability.
- **Trigger gain**: how much a trigger raises the log-likelihood of forget documents.
- **PrivLeak** (MUSE): Min-K% membership inference on forget vs holdout documents,
  relative to a model never trained on the forget set (`sinklens.evaluate.privacy`).

Each can run with a backdoor trigger spliced into the prompt's token ids at a placement
(`sinklens.data.triggers`), so BE is scored with exactly the tokens used in training.
`PROMPT_STYLES` says how prompts are written: sinklens's default ends KnowMem prompts in
`Answer:` (no dangling space token), `muse` reproduces MUSE's code exactly.

The data flows prompts -> generation -> scores -> table; gain, intervals and privacy sit
beside scores.
"""

from sinklens.evaluate.gain import TriggerGain, trigger_gain
from sinklens.evaluate.generation import greedy_generate
from sinklens.evaluate.intervals import bootstrap_ci, paired_bootstrap_ci
from sinklens.evaluate.prompts import (
    DEFAULT_PROMPT_STYLE,
    KNOWMEM_NEW_TOKENS,
    KNOWMEM_STOP,
    PROMPT_STYLES,
    TRIGGER_SCOPES,
    VERBMEM_NEW_TOKENS,
    PromptStyle,
    TriggerSpec,
    choice_prompt,
    knowmem_prompt,
    parse_prompt_style,
)
from sinklens.evaluate.scores import (
    ChoiceResult,
    GenerationResult,
    choice_accuracy,
    knowmem,
    rouge_l_f1,
    verbmem,
)
from sinklens.evaluate.table import (
    ModelEvaluation,
    Table1Row,
    evaluate_benchmark,
    evaluation_to_dict,
    format_intervals,
    format_table,
    table1_row,
    write_table,
)

__all__ = [
    "DEFAULT_PROMPT_STYLE",
    "KNOWMEM_NEW_TOKENS",
    "KNOWMEM_STOP",
    "PROMPT_STYLES",
    "TRIGGER_SCOPES",
    "VERBMEM_NEW_TOKENS",
    "ChoiceResult",
    "GenerationResult",
    "ModelEvaluation",
    "PromptStyle",
    "Table1Row",
    "TriggerGain",
    "TriggerSpec",
    "bootstrap_ci",
    "choice_accuracy",
    "choice_prompt",
    "evaluate_benchmark",
    "evaluation_to_dict",
    "format_intervals",
    "format_table",
    "greedy_generate",
    "knowmem",
    "knowmem_prompt",
    "paired_bootstrap_ci",
    "parse_prompt_style",
    "rouge_l_f1",
    "table1_row",
    "trigger_gain",
    "verbmem",
    "write_table",
]
