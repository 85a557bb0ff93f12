"""
Countdown on small numbers: 3 or 4 distinct numbers in 1..9, every intermediate result at most 99.

    python -m data.countdown_small --n 1000 --seed 0    # style mix, per-style accuracy, traces

The same task, trace styles, search budgets and checker as data/countdown.py (read its
docstring); only the numbers are smaller. Why it exists: a 2-layer, 128-wide
model trained on countdown's 1..25 numbers and results up to 999 writes 44% of its own search
steps with wrong arithmetic (2-digit products such as 17*23 are most of the errors), so a longer
search there is a walk through false states. Here every step is a one- or two-digit fact, which
a small model can learn, so whether exploring longer pays can be asked of a search through
true states. Targets are 10..99 (countdown's 10..100, capped by the smaller MAX_VALUE).

Same prompt text as countdown, so a prompt does not say which range it comes from; the task is
a separate name (`--task countdown_small`) because its problems, and so its held-out set and
its model, are not countdown's.
"""
import sys

from data import countdown
from data.common import sample_problems, sft_examples
from data.countdown import (BUDGETS, MARKERS, STYLE_MIX, STYLES, answer_start, check,  # noqa: F401
                            classify_style, make_trace, step_error_totals, step_errors)

NAME = "countdown_small"
TOP = 9                # numbers in 1..TOP
MAX_VALUE = 99         # no intermediate (and so no target) above this
# ~7,600 distinct problems in all (~6,800 train, ~800 test): train_rl.py's prompt pool is 5,000 of
# them, not its default 20,000; held-out sets up to ~800
RL_POOL = 5000


def _draw(rng):
    return countdown._draw(rng, top=TOP, max_value=MAX_VALUE)


def make_problems(split: str, n: int, seed: int, distinct: bool = True) -> list[dict]:
    return sample_problems(_draw, split, n, seed, distinct=distinct)


def make_sft_examples(n: int, seed: int, split: str = "train",
                      styles: dict | None = None) -> list[dict]:
    """n problems of `split`, each with a demonstration in a style drawn from STYLE_MIX (or only
    from `styles`)."""
    return sft_examples(sys.modules[__name__], n, seed, split, styles)


if __name__ == "__main__":
    countdown.main(sys.modules[__name__])
