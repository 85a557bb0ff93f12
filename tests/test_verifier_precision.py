r"""The verifier's numeric equality: a relative test down to tiny values, and evaluation points
that a reply cannot know in advance.

    python -m pytest tests/test_verifier_precision.py -q
"""
import random
from decimal import Decimal

import pytest

from nanorlsp.verifier import grade, is_equiv


@pytest.mark.parametrize("a,b,expected", [
    ("0", "e^{-100}", False),          # 3.7e-44: tiny, but not zero
    ("e^{-100}", "2e^{-100}", False),
    ("e^{-100}", "\\frac{1}{e^{100}}", True),
    ("10^{-40}", "0", False),
    ("\\sin \\pi", "0", True),          # 50-digit rounding noise is still zero
    ("e^{i\\pi} + 1", "0", True),
    ("\\cos\\frac{\\pi}{2}", "0", True),
    ("(x+1)^2 - x^2 - 2x - 1", "0", True),
    ("x e^{-100}", "0", False),
    ("\\sqrt2 - 1.41421356", "0", False),
])
def test_tiny_values_are_compared_relatively(a, b, expected):
    assert is_equiv(a, b) is expected
    assert is_equiv(b, a) is expected


def test_boxed_zero_is_not_a_tiny_gold():
    assert not grade("The answer is \\boxed{0}.", "e^{-100}")


def _old_fixed_points(name, n=3):
    # the evaluation points the verifier once used for a symbol: fixed by its name alone
    return [random.Random(f"{name}#{k}").uniform(0.5, 2.5) for k in range(n)]


def test_polynomial_identity_cannot_be_fooled_at_known_points():
    # x^2 + 1 + (x - p0)(x - p1)(x - p2) equals x^2 + 1 at p0, p1, p2 only; written with the
    # exact decimals of points a reply could know in advance, it must still be wrong
    roots = "".join(f"(x - {Decimal(p)})" for p in _old_fixed_points("x"))
    reply = f"\\boxed{{x^2 + 1 + {roots}}}"
    assert len(reply) < 1000
    assert not grade(reply, "x^2+1")
    assert grade("\\boxed{(x+1)^2 - 2x}", "x^2+1")


def test_points_are_the_same_in_both_directions():
    # the points are drawn per pair, so is_equiv stays symmetric
    for a, b in [("\\sqrt{x^2}", "x"), ("\\frac{x^2-1}{x-1}", "x+1"),
                 ("\\sin^2 x + \\cos^2 x", "1"), ("2\\sin x\\cos x", "\\sin(2x)"), ("x^y", "y^x")]:
        assert is_equiv(a, b) is is_equiv(b, a)
    assert is_equiv("\\sin^2 x + \\cos^2 x", "1") and not is_equiv("x^y", "y^x")


def test_a_nonlinear_inequality_is_not_read_as_linear():
    # x + (x-1)(x-2)(x-3) is x at 1, 2 and 3: three fixed points would solve it as x > 2
    assert not grade("\\boxed{x + (x-1)(x-2)(x-3) > 2}", "(2, \\infty)")
    assert grade("\\boxed{2x + 1 > 5}", "(2, \\infty)")
