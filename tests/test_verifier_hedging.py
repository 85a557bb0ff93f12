r"""One reply must never be right for two golds that differ: a hedged answer ('12 \approx 13',
'\boxed{12} or \boxed{13}', '1 = 2 = 3') is a reward a policy could farm under RL. The property:
over a set of distinct golds and replies built from them, the golds a reply grades right for are
all equivalent to each other.

    python -m pytest tests/test_verifier_hedging.py -q
"""
import itertools

import pytest

from nanorlsp.verifier import grade, is_equiv

# distinct golds: integers, a fraction, a surd, an expression, tuples, an interval, a negative
GOLDS = ["12", "13", "5", "0", "-2", "\\frac34", "\\sqrt2", "x^2+1", "2x", "(1, 4)", "(4, 1)",
         "[2, 5)", "7.5"]


def _hedges(a, b, c):
    """Replies that name two or three golds at once, in the ways a policy could write them."""
    yield f"\\boxed{{{a} \\approx {b}}}"
    yield f"\\boxed{{{a} \\approx {b} \\approx {c}}}"
    yield f"\\boxed{{{a} = {b}}}"
    yield f"\\boxed{{{a} = {b} = {c}}}"
    yield f"\\boxed{{{a} \\approx {b} = {c}}}"
    yield f"\\boxed{{x = {a} \\approx {b}}}"
    yield f"\\boxed{{k \\approx {a} \\approx {b}}}"
    yield f"\\boxed{{{a} \\ne {b}}}"
    yield f"\\boxed{{{a} \\text{{ or }} {b}}}"
    yield f"\\boxed{{{a}}} or \\boxed{{{b}}}"
    yield f"\\boxed{{{a}}}, \\boxed{{{b}}}"
    yield f"\\boxed{{{a}}} and \\boxed{{{b}}}"
    yield f"\\boxed{{{a}, {b}}}"
    yield f"The answer is {a} or {b}."
    yield f"The answer is ${a}$ or ${b}$."
    yield f"\\boxed{{{a} \\pm {b}}}"
    yield f"\\boxed{{[{a}, {b}]}}"
    yield f"\\boxed{{x = {a}, x = {b}}}"


def _replies():
    for a, b, c in itertools.permutations(GOLDS, 3):
        if (a, b) < (b, a) or len(GOLDS) < 3:  # each unordered pair once, every third gold
            yield from _hedges(a, b, c)


def test_golds_are_distinct():
    for g, h in itertools.combinations(GOLDS, 2):
        assert not is_equiv(g, h), (g, h)


@pytest.mark.parametrize("chunk", range(4))
def test_no_reply_is_right_for_two_distinct_golds(chunk):
    replies = sorted(set(_replies()))[chunk::4]
    bad = []
    for reply in replies:
        right = [g for g in GOLDS if grade(reply, g)]
        if len(right) > 1:
            bad.append((reply, right))
    assert not bad, bad[:10]


@pytest.mark.parametrize("reply,gold,expected", [
    # an approximation counts only when its sides agree (then its exact side), else its last side
    ("\\boxed{12 \\approx 13}", "12", False),
    ("\\boxed{12 \\approx 13}", "13", True),
    ("\\boxed{1 \\approx 2 \\approx 3 \\approx 4}", "2", False),
    ("\\boxed{1 \\approx 2 \\approx 3 \\approx 4}", "4", True),
    ("\\boxed{5 \\approx \\frac34 = x^2+1}", "5", False),
    ("\\boxed{5 \\approx \\frac34 = x^2+1}", "3/4", False),
    ("\\boxed{5 \\approx \\frac34 = x^2+1}", "x^2+1", True),
    ("\\boxed{\\frac{2}{3} \\approx 0.67}", "\\frac23", True),
    ("\\boxed{\\sqrt{2} \\approx 1.414}", "\\sqrt2", True),
    ("\\boxed{k \\approx 7}", "7", True),
    ("\\boxed{x \\approx 7.07}", "7.07", True),
    ("\\boxed{\\pi \\approx 3.14}", "\\pi", True),
    ("\\boxed{\\pi \\approx 3.14}", "3.15", False),
])
def test_approximation_chains(reply, gold, expected):
    assert grade(reply, gold) is expected
