r"""One reply must never be right for two golds that differ: a hedged answer ('12 \approx 13',
'\boxed{12} or \boxed{13}', '1 = 2 = 3') is a reward a policy could farm under RL. The property:
over a set of distinct golds and replies built from them, the golds a reply grades right for are
all equivalent to each other.

    python -m pytest tests/test_verifier_hedging.py -q
"""
import itertools

import pytest

from nanorlsp.verifier import grade, is_equiv

# distinct golds: integers, decimals, a fraction, a surd, expressions, a bare list, tuples, an
# interval, a relation, a choice letter, a word, matrices, a set of solutions. Left out by design:
# golds that differ only by a unit (a bare 12 equals 12 cm and 12 m: the reply names no unit),
# a percent against its two readings (25% = 25 = 0.25), and a bare list against a tuple of the
# same values in order, which a list of assignments equals both of ('x = 2, y = 5').
GOLDS = ["12", "13", "5", "0", "-2", "2.5", "0.25", "\\frac34", "\\sqrt2", "x^2+1", "2x", "2, 5",
         "(1, 4)", "(4, 1)", "[2, 5)", "x > 2", "B", "\\text{Evelyn}",
         "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "x=2,y=5;x=5,y=2"]


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
    yield f"\\boxed{{{a} \\;\\text{{or}}\\; {b}}}"
    yield f"\\boxed{{{a}}} or \\boxed{{{b}}}"
    yield f"\\boxed{{{a}}}, \\boxed{{{b}}}"
    yield f"\\boxed{{{a}}}\n\\boxed{{{b}}}"
    yield f"\\boxed{{{a}, {b}}}"
    yield f"\\boxed{{{a},{b}}}"
    yield f"\\boxed{{{a}; {b}}}"
    yield f"\\boxed{{{a} \\quad {b}}}"
    yield f"The answer is {a} or {b}."
    yield f"The answer is ${a}$ or ${b}$."
    yield f"Answer: {a}\nAnswer: {b}"
    yield f"\\boxed{{{a} \\pm {b}}}"
    yield f"\\boxed{{[{a}, {b}]}}"
    yield f"\\boxed{{x = {a}, x = {b}}}"
    yield f"\\boxed{{{a} \\in \\{{{a}, {b}\\}}}}"


def _replies():
    for i, j in itertools.permutations(range(len(GOLDS)), 2):
        k = next(k % len(GOLDS) for k in range(i + j, i + j + 3) if k % len(GOLDS) not in (i, j))
        yield from _hedges(GOLDS[i], GOLDS[j], GOLDS[k])  # every ordered pair, and a third gold


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


@pytest.mark.parametrize("reply,gold,expected", [
    # a comma between digits is read one way, from the reply alone: a list unless a unit, a
    # currency or a percent says it is a decimal comma (it once read as whichever the gold was)
    ("\\boxed{1,2}", "1, 2", True),
    ("\\boxed{1,2}", "1.2", False),
    ("\\boxed{1.2}", "1,2", False),
    ("\\boxed{12 \\text{ or } 0}", "12", False),
    ("\\boxed{2,5 \\text{ cm}}", "2.5", True),
    ("\\boxed{2,5 \\text{ cm}}", "2, 5", False),
    # values given to distinct names are read in the order written, not as a set
    ("\\boxed{x = 2, y = 5}", "2, 5", True),
    ("\\boxed{x = 2, y = 5}", "5, 2", False),
    ("\\boxed{40, 7}", "b_2 = 7, b_9 = 40", False),
    ("\\boxed{x = 5, x = 2}", "2, 5", True),  # the same name twice: solutions, a set
])
def test_one_reading_per_reply(reply, gold, expected):
    assert grade(reply, gold) is expected
