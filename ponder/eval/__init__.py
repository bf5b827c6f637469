"""Evaluation data and checkers (docs/memory.md has the Game-of-24 benchmark).

>>> from ponder.eval import check_24, load_game24
>>> check_24("(7 - 8/8) * 4", (4, 7, 8, 8))
True
>>> check_24("8 * 3", (4, 7, 8, 8))
False
>>> len(load_game24())
1362
"""

from ponder.eval._game24 import Game24Puzzle, check_24, extract_expression, load_game24

__all__ = ["Game24Puzzle", "check_24", "extract_expression", "load_game24"]
