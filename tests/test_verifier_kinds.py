r"""The verifier, kind by kind: one table of (response, gold, expected grade) per kind
of answer that real models write. The cases are written for nanorlsp (shapes from MATH-500, GSM8K,
AIME and SmolLM2-style replies); no other project's test cases are copied here: those are the
outside measure (docs/verifier.md).

    python -m pytest tests/test_verifier_kinds.py -q
"""
import pytest

from nanorlsp.verifier import answer_start, extract_answer, find_answer, grade, is_equiv

# Free text without \boxed: labelled answers, math spans, the last number.
FREE_TEXT = [
    ("The total is 3 + 4 = 7.\nThe final answer is $7$. I hope it is correct.", "7", True),
    ("Final Answer: The final answer is $\\frac{3}{5}$. I hope it is correct.", "\\frac35", True),
    ("**Final Answer:** $x = 12$", "12", True),
    ("**Answer:** 15 marbles", "15", True),
    ("Answer:\n$$\\sqrt{13}$$", "\\sqrt{13}", True),
    ("So the answer is $(2, -1)$.", "(2,-1)", True),
    ("<think>3 times 4 is 12</think>\n<answer>12</answer>", "12", True),
    ("<answer>The perimeter is $24$ cm.</answer>", "24", True),
    ("<answer>\\boxed{9}</answer>", "9", True),
    ("Natalia sold 48 clips in April and 24 in May.\n48 + 24 = 72\n#### 72", "72", True),
    ("We need $\\binom{6}{3} = 20$", "20", True),
    ("Choosing 3 of 6 people gives $\\binom{6}{3} = 20$ committees.", "20", True),
    ("The slope is \\(\\frac{1}{2}\\).", "\\frac12", True),
    ("Therefore\n\\[ \\frac{\\pi}{4} \\]", "\\frac{\\pi}{4}", True),
    ("Hence $$x^2 + 2x + 1$$", "(x+1)^2", True),
    ("She has 18 apples left.", "18", True),
    ("Janet eats 3 and bakes 4, so she sells 16 - 7 = 9 eggs for $2 each: $18 a day.", "18", True),
    ("It costs $5 and $6 total.", "6", True),
    ("Let $x$ be the number of pens. Then 2x = 14, so there are 7 pens.", "7", True),
    ("The area is $25\\pi$ square units.", "25\\pi", True),
    ("so x = \\frac{1}{2}", "\\frac12", True),
    ("The probability is 1/2.", "0.5", True),
    ("The answer is that he needs 4 more boxes.", "4", True),
    ("The answer is 12 because 3 * 4 = 12.", "12", True),
    ("42", "42", True),
    ("x = 3", "3", True),
    ("\\frac{1}{2}", "0.5", True),
    ("Evelyn", "\\text{Evelyn}", True),
    # ... and wrong ones
    ("The final answer is $8$. I hope it is correct.", "7", False),
    ("She has 18 apples left.", "17", False),
    ("Let $x$ be the number of pens. Then 2x = 14, so there are 7 pens.", "14", False),
    ("I think it is 42 but maybe 43", "42", False),
    ("I do not know.", "0", False),
]

# Several answers in one reply.
SEVERAL = [
    ("\\boxed{4}, \\boxed{7}", "4, 7", True),
    ("\\boxed{4} and \\boxed{7}", "\\{4, 7\\}", True),
    ("$\\boxed{7}$ and $\\boxed{4}$", "{4, 7}", True),
    ("\\boxed{-3} \\quad \\boxed{5}", "5, -3", True),
    ("The roots are $x = 2$ and $x = -5$.", "-5, 2", True),
    ("\\boxed{2 \\text{ or } 3}", "3, 2", True),
    ("\\boxed{1 \\quad 6}", "1, 6", True),
    ("\\boxed{(1, 2), (3, 4)}", "\\{(3,4), (1,2)\\}", True),
    ("\\boxed{\\{(0, 1), (2, -1)\\}}", "(2,-1), (0,1)", True),
    ("\\boxed{3 \\pm \\sqrt{2}}", "3 + \\sqrt2, 3 - \\sqrt2", True),
    ("\\boxed{\\pm 4}", "4, -4", True),
    ("\\boxed{4}, \\boxed{7}", "4", False),
    ("\\boxed{4} ... no wait, that is wrong: \\boxed{7}", "4, 7", False),
    ("\\boxed{(1, 2), (3, 4)}", "(1,2), (3,5)", False),
    ("\\boxed{3 \\pm \\sqrt{2}}", "3 + \\sqrt2", False),
]

# Relations: inequalities, intervals, unions, equations, approximations, \neq.
RELATIONS = [
    ("\\boxed{t \\geq 2}", "[2, \\infty)", True),
    ("\\boxed{2 \\leq t}", "t \\ge 2", True),
    ("\\boxed{-t > -4}", "t < 4", True),
    ("\\boxed{3x + 1 \\le 7}", "x \\le 2", True),
    ("\\boxed{x >= 5}", "x \\geq 5", True),
    ("\\boxed{2 < g(x) \\le 5}", "(2, 5]", True),
    ("\\boxed{(2, 5]}", "2 < y \\le 5", True),
    ("\\boxed{-1 \\le x < 3}", "[-1, 3)", True),
    ("\\boxed{x < 2 \\text{ or } x > 3}", "(-\\infty, 2) \\cup (3, \\infty)", True),
    ("\\boxed{(-\\infty, 0) \\cup (0, 1]}", "(0, 1] \\cup (-\\infty, 0)", True),
    ("\\boxed{(-\\infty, 1) \\cup [1, 4)}", "(-\\infty, 4)", True),
    ("\\boxed{x \\neq 3}", "(-\\infty, 3) \\cup (3, \\infty)", True),
    ("\\boxed{x \\ne -1}", "x != -1", True),
    ("\\boxed{3x - 6y + 2 = 0}", "y = x/2 + 1/3", True),
    ("\\boxed{y = 2x - 4}", "2x - y - 4 = 0", True),
    ("\\boxed{k \\approx 7}", "7", True),
    ("\\boxed{\\frac{2}{3} \\approx 0.67}", "\\frac23", True),
    ("\\boxed{x \\in [1, 4]}", "1 \\le x \\le 4", True),
    ("\\boxed{t > 2}", "t \\geq 2", False),
    ("\\boxed{-t > -4}", "t > 4", False),
    ("\\boxed{(2, 5]}", "2 \\le x \\le 5", False),
    ("\\boxed{x < 2 \\text{ or } x > 3}", "(-\\infty, 3) \\cup (2, \\infty)", False),
    ("\\boxed{x \\neq 3}", "(-\\infty, 3)", False),
    ("\\boxed{x^2 < 4}", "x < 4", False),
    ("\\boxed{3x - 6y + 2 = 0}", "y = x/2 - 1/3", False),
    ("\\boxed{x + 1 = 4}", "4", False),
    ("\\boxed{x = 3}", "y = 3", False),
]

# Labels on either side of the answer.
LABELS = [
    ("\\boxed{(a, b) = (4, 1)}", "(4, 1)", True),
    ("\\boxed{g(t) = 5t - 1}", "5t - 1", True),
    ("\\boxed{|PQ| = 6}", "6", True),
    ("\\boxed{S_1 : S_2 = 3 : 8}", "3:8", True),
    ("\\boxed{PQ = 2, RS = 9}", "2, 9", True),
    ("\\boxed{f(2) = 11}", "11", True),
    ("\\boxed{m\\angle ABC = 40^\\circ}", "40", True),
    ("\\boxed{x + y = 10}", "10", True),
    ("The answer is 7.", "The answer is $7$.", True),
    ("\\boxed{12}", "She has 12 stamps left, so the answer is \\boxed{12}.", True),
    ("\\boxed{12}", "Adding the two groups gives 5 + 7 = 12.\n#### 12", True),
    ("\\boxed{3:8}", "6:16", True),
    ("\\boxed{(a, b) = (4, 1)}", "(1, 4)", False),
    ("\\boxed{g(t) = 5t - 1}", "5t + 1", False),
    ("\\boxed{PQ = 2, RS = 9}", "2, 8", False),
    ("\\boxed{13}", "She has 12 stamps left, so the answer is \\boxed{12}.", False),
]

# Numbers: separators, decimal commas, percent, currency, units, rounding, juxtaposition.
NUMBERS = [
    ("\\boxed{4,250,000}", "4250000", True),
    ("So the total comes to 250,75", "250.75", True),
    ("Answer: 0,25 €", "0.25", True),
    ("Answer: 3,40 $", "3.4", True),
    ("\\boxed{2,5 \\text{ cm}}", "2.5", True),
    ("\\boxed{1,234.5}", "1234.5", True),
    ("\\boxed{35 \\text{ percent}}", "35\\%", True),
    ("The answer is 35 percent.", "35", True),
    ("\\boxed{35 pct}", "35", True),
    ("\\boxed{25\\%}", "0.25", True),
    ("\\boxed{0.25}", "25\\%", True),
    ("\\boxed{2,500.50€}", "2500.5", True),
    ("The answer is €2,500.50.", "2500.50", True),
    ("\\boxed{36 \\text{ cm}^2}", "36", True),
    ("\\boxed{36 cm²}", "36", True),
    ("\\boxed{12 m/s}", "12", True),
    ("\\boxed{9 months}", "9", True),
    ("\\boxed{5 centimeters}", "5 \\text{ cm}", True),
    ("\\boxed{0.142857142857143}", "\\frac17", True),
    ("\\boxed{0.6667}", "\\frac23", True),
    ("\\boxed{3.1416}", "\\pi", True),
    ("\\boxed{2^3 5^2}", "200", True),
    ("\\boxed{2^3 \\cdot 3^2}", "72", True),
    ("\\boxed{025}", "25", True),
    ("\\boxed{45, 678}", "45678", False),
    ("\\boxed{1,2}", "1.2", False),    # a bare '1,2' is MATH's list of two solutions
    ("\\boxed{2.5}", "2,5", False),
    ("\\boxed{0,1}", "0.1", False),
    ("\\boxed{25\\%}", "2.5", False),
    ("\\boxed{0.67}", "\\frac23", False),
    ("\\boxed{0.6666}", "\\frac23", False),
    ("\\boxed{3.14}", "\\pi", False),
    ("\\boxed{5 \\text{ m}}", "5 \\text{ cm}", False),
    ("\\boxed{15 \\text{ cm}}", "15 \\text{ cm}^2", False),
    ("\\boxed{\\$36}", "36 \\text{ cents}", False),
    ("\\boxed{2^3 5^2}", "2^{35}", False),
]

# Structures: matrices, trig in degrees, trailing LaTeX noise.
STRUCTURES = [
    ("\\boxed{\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}}",
     "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", True),
    ("\\boxed{\\left[\\begin{array}{cc} 1 & 0 \\\\ 0 & 1 \\end{array}\\right]}",
     "\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}", True),
    ("The matrix is $$\\begin{pmatrix} 2 \\\\ -1 \\end{pmatrix}$$",
     "\\begin{pmatrix} 2 \\\\ -1 \\end{pmatrix}", True),
    ("\\boxed{\\cos(90^\\circ - x)}", "\\sin x", True),
    ("\\boxed{\\sin 30^\\circ}", "\\frac12", True),
    ("\\boxed{\\tan 45^{\\circ}}", "1", True),
    ("\\boxed{7\\,}", "7", True),
    ("\\boxed{7\\!}", "7", True),
    ("\\boxed{\\displaystyle\\frac{1}{2}}", "0.5", True),
    ("\\boxed{12\\\\}", "12", True),
    ("\\boxed{\\frac{3}{4}\\,\\text{ }}", "0.75", True),
    ("\\boxed{\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}}",
     "\\begin{pmatrix} 1 & 3 \\\\ 2 & 4 \\end{pmatrix}", False),
    ("\\boxed{\\cos(90^\\circ - x)}", "\\cos x", False),
    ("\\boxed{30^\\circ}", "\\frac{\\pi}{6}", False),
]

# Things that must stay unequal.
UNEQUAL = [
    ("\\boxed{(7, 3, -1)}", "(3, 7, -1)", False),
    ("\\boxed{[7, 3, -1]}", "[3, 7, -1]", False),
    ("\\boxed{(1, 2)}", "\\{1, 2\\}", False),
    ("\\boxed{\\{1, 2\\}}", "(1, 2)", False),
    ("\\boxed{(1, 2)}", "1, 2", False),
    ("\\boxed{5 \\text{ inches}}", "5 \\text{ cm}", False),
    ("\\boxed{20 \\text{ dollars}}", "20 \\text{ cents}", False),
]

# Other writings of the same answer that graders meet.
SPELLINGS = [
    ("\\boxed{(-\\infty, 1)}", "(-inf, 1)", True),
    ("\\boxed{\\sin^{-1}(1/2)}", "\\frac{\\pi}{6}", True),
    ("The answer is twelve.", "12", True),
    ("\\boxed{1.5e-3}", "0.0015", True),
    ("\\boxed{0.1\\overline{6}}", "\\frac16", True),
    ("\\boxed{0.3333...}", "\\frac13", True),
    ("\\boxed{\\varnothing}", "\\emptyset", True),
    ("\\boxed{\\{x \\mid x > 2\\}}", "(2, \\infty)", True),
    ("The answer is ½", "0.5", True),
    ("Therefore $x=5$ and $y=6$.", "(5, 6)", True),
    ("\\boxed{5} \\boxed{5}", "5", True),
    ("Answer: x = 4 or x = -1", "-1, 4", True),
    ("7 is the answer.", "7", True),
    ("\\boxed{\\sqrt{3}}", "1.732", True),
    ("Therefore $x=5$ and $y=6$.", "(6, 5)", False),
    ("\\boxed{0.3...}", "\\frac13", False),
    ("\\boxed{\\{x \\mid x > 2\\}}", "[2, \\infty)", False),
]

KINDS = {"free text": FREE_TEXT, "several answers": SEVERAL, "relations": RELATIONS,
         "labels": LABELS, "numbers": NUMBERS, "structures": STRUCTURES, "unequal": UNEQUAL,
         "spellings": SPELLINGS}
CASES = [(kind, r, g, eq) for kind, rows in KINDS.items() for r, g, eq in rows]


def test_every_kind_has_right_and_wrong_cases():
    for kind, rows in KINDS.items():
        assert len(rows) >= 7, kind
        assert any(eq for *_, eq in rows) or kind == "unequal", kind
        assert any(not eq for *_, eq in rows), kind
    assert len({(r, g) for _, r, g, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("kind,response,gold,expected", CASES,
                         ids=[f"{k}-{i}" for i, (k, *_) in enumerate(CASES)])
def test_grade_by_kind(kind, response, gold, expected):
    assert grade(response, gold) is expected


def test_extraction_order_and_start():
    # box first, then labels, then the whole reply, then the last span, then the last number
    text = "Let $x = 2$. The answer is 5. Check: \\boxed{6}"
    assert find_answer(text) == ("6", text.index("\\boxed"))
    text = "Let $x = 2$. So 4 apples.\nAnswer: 5"
    assert find_answer(text) == ("5", text.index("Answer"))
    text = "We get $y = 3$ and then 5 + 2 = 7"
    assert find_answer(text) == ("7", text.index("7"))  # a number after the last span wins
    text = "We get $y = 3$ and then $5 + 2 = 7$"
    assert find_answer(text) == ("7", text.rindex("$5"))  # a number inside it is the span's
    text = "Let $x$ be the cost. Then 4 + x = 10, so the cost is 6"
    assert find_answer(text) == ("6", len(text) - 1)
    text = "Thus $\\binom{6}{3} = 20$."
    assert find_answer(text) == ("20", text.index("$"))
    text = "<answer>7</answer>"
    assert answer_start(text) == 0 and extract_answer(text) == "7"
    text = "stuff\n\\boxed{4}, \\boxed{7}"
    assert find_answer(text) == ("4, 7", text.index("\\boxed"))
    assert extract_answer("The roots are $2$ and $3$.") == "2, 3"
    assert find_answer("no number here") is None
    assert find_answer("\\boxed{") is None


def test_extract_answer_is_find_answer():
    for _, response, _, _ in CASES:
        found = find_answer(response)
        assert extract_answer(response) == (found and found[0])
        assert answer_start(response) == (found and found[1])
        if found:
            assert 0 <= found[1] < len(response)


def test_is_equiv_symmetric_on_the_kind_tables():
    # the answers the tables extract compare the same in both directions
    for _, response, gold, _ in CASES:
        ans = extract_answer(response)
        if ans is not None and "answer" not in gold:
            assert is_equiv(ans, gold) is is_equiv(gold, ans), (ans, gold)


def test_bare_lists_are_sets_brackets_are_ordered():
    # A decision (docs/verifier.md, "Lists"): a bare list is MATH's "enter all the solutions,
    # separated by commas", whose answer keys list roots in no fixed order ('8,1,-1,-8'), so it
    # is order-free; an ordered answer is written in brackets. "7, 3, -1" != "3, 7, -1"
    # holds for (7, 3, -1) and [7, 3, -1], not for the bare list.
    assert grade("\\boxed{7, 3, -1}", "3, 7, -1")
    assert grade("\\boxed{-8, -1, 1, 8}", "8,1,-1,-8")
    assert not grade("\\boxed{(7, 3, -1)}", "(3, 7, -1)")
    assert not grade("\\boxed{7, 3, -1}", "(3, 7, -1)")
    assert not grade("\\boxed{7, 3}", "7, 3, -1")
