"""Evaluation: offline datasets, scorers and the ``ponder eval`` harness (docs/eval.md).

>>> from ponder.eval import check_24, load_game24
>>> check_24("(7 - 8/8) * 4", (4, 7, 8, 8))
True
>>> check_24("8 * 3", (4, 7, 8, 8))
False
>>> len(load_game24())
1362
"""

from ponder.eval._calibrate import Calibration, CalibrationPoint, calibrate_cascade
from ponder.eval._datasets import (
    AsyncScorer,
    ChampScorer,
    Dataset,
    Item,
    Scorer,
    load_dataset,
    load_jsonl,
)
from ponder.eval._game24 import Game24Puzzle, check_24, extract_expression, load_game24
from ponder.eval._harness import (
    EvalSummary,
    admission,
    coverage_curve,
    evaluate,
    evaluate_ray,
    pass_at_k,
    plot_accuracy_vs_cost,
    read_results,
    summarize,
    wilson,
)
from ponder.eval._judge import JudgeStats, LLMJudge

__all__ = [
    "AsyncScorer",
    "Calibration",
    "CalibrationPoint",
    "ChampScorer",
    "Dataset",
    "EvalSummary",
    "Game24Puzzle",
    "Item",
    "JudgeStats",
    "LLMJudge",
    "Scorer",
    "admission",
    "calibrate_cascade",
    "check_24",
    "coverage_curve",
    "evaluate",
    "evaluate_ray",
    "extract_expression",
    "load_dataset",
    "load_game24",
    "load_jsonl",
    "pass_at_k",
    "plot_accuracy_vs_cost",
    "read_results",
    "summarize",
    "wilson",
]
