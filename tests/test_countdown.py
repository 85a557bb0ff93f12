"""
Tests for the Countdown task: problems, traces, and the hostile-input checker.

    python -m pytest tests/test_countdown.py -q
"""
import random
import time

import pytest

from data import countdown as cd
from data.common import split_of

SEARCH_STYLES = ["short", "medium", "long"]  # in increasing budget


def _solvable(numbers, target):
    """Brute force over every pair/op order, independent of the module's search."""
    def go(vals):
        if len(vals) == 1:
            return vals[0] == target
        for i in range(len(vals)):
            for j in range(len(vals)):
                if i != j:
                    a, b = vals[i], vals[j]
                    rest = [v for k, v in enumerate(vals) if k not in (i, j)]
                    outs = [a + b, a - b, a * b] + ([a // b] if b and a % b == 0 else [])
                    if any(go(rest + [o]) for o in outs):
                        return True
        return False
    return go(list(numbers))


def test_problems_deterministic_and_seeded():
    a = cd.make_problems("train", 200, seed=0)
    assert a == cd.make_problems("train", 200, seed=0)
    b = cd.make_problems("train", 200, seed=1)
    assert [p["key"] for p in a] != [p["key"] for p in b]
    assert len({p["key"] for p in a}) == 200  # distinct within a draw


def test_train_test_disjoint():
    train = {p["key"] for p in cd.make_problems("train", 2000, seed=0)}
    test = cd.make_problems("test", 300, seed=0)
    assert not train & {p["key"] for p in test}
    assert all(split_of(p["key"]) == "test" for p in test)


def test_problem_fields_and_answers():
    for p in cd.make_problems("train", 300, seed=3):
        assert set(p) >= {"key", "prompt", "answer", "numbers", "target", "level"}
        assert p["level"] == len(p["numbers"]) in (3, 4)
        assert 10 <= p["target"] <= 100 and all(1 <= n <= 25 for n in p["numbers"])
        assert str(p["target"]) in p["prompt"]
        assert cd.check(f"\\boxed{{{p['answer']}}}", p), p
    for p in cd.make_problems("test", 40, seed=0):
        assert _solvable(p["numbers"], p["target"])


def test_traces():
    problems = cd.make_problems("train", 300, seed=0)
    acc = {}
    for style in ["direct"] + SEARCH_STYLES:
        ok = 0
        for i, p in enumerate(problems):
            t = cd.make_trace(p, style, random.Random(i))  # same rng per problem: nested DFS
            good = cd.check(t, p)
            ok += good
            if style == "direct":
                assert good
                continue
            lines = t.splitlines()
            assert lines[-1].startswith("\\boxed{")
            if "out of budget" in t:  # failure: no verification line, closest expression boxed
                assert not good and "check:" not in t and lines[-2].startswith("best: ")
            else:  # success: the check line verifies, and the boxed answer passes the checker
                assert good and lines[-2] == f"check: {lines[-1][7:-1]} = {p['target']}"
            # markers are exact: one per line, on lines of their own kind
            assert t.count("backtrack") == sum(ln.strip() == "backtrack" for ln in lines)
        acc[style] = ok / len(problems)
    assert acc["short"] <= acc["medium"] <= acc["long"] <= 1.0
    assert acc["short"] < acc["long"]  # the budgets actually matter


def test_long_enough_budget_always_solves(monkeypatch):
    monkeypatch.setitem(cd.BUDGETS, "exhaustive", 10**9)
    for i, p in enumerate(cd.make_problems("test", 30, seed=0)):
        assert cd.check(cd.make_trace(p, "exhaustive", random.Random(i)), p)


def test_sft_examples():
    rows = cd.make_sft_examples(400, seed=0)
    assert rows == cd.make_sft_examples(400, seed=0)
    assert {r["style"] for r in rows} == set(cd.STYLE_MIX)
    assert all(r["response"] and r["style"] in cd.STYLE_MIX for r in rows)


P = {"numbers": [3, 7, 25, 50], "target": 82}


@pytest.mark.parametrize("resp", [
    "\\boxed{(50-25)*3+7}",
    "\\boxed{ 7 + 3 * ( 50 - 25 ) }",     # spaces, any order
    "\\boxed{((50-25)*3)+(7)}",           # redundant parentheses
    "so \\boxed{1} then \\boxed{7+3*(50-25)}",  # the last box counts
])
def test_check_accepts(resp):
    assert cd.check(resp, P)


def test_check_allows_fractional_intermediates():
    # standard Countdown forbids them; we only ask that the final value is exactly the target
    assert cd.check("\\boxed{(5-1/5)*5}", {"numbers": [1, 5, 5, 5], "target": 24})


@pytest.mark.parametrize("resp", [
    "\\boxed{50+25+7*3}",          # wrong value
    "\\boxed{50+25+7+3}",          # wrong value (85)
    "\\boxed{50+25+7*3/3}",        # right value, but 3 used twice
    "\\boxed{50+25+7+7-7+3-3}",    # right value, numbers used twice
    "\\boxed{50+25+7}",            # 3 missing
    "\\boxed{50+25+4+3}",          # 4 not given, 7 missing
    "\\boxed{50+25+7+3/(7-7)}",    # division by zero
    "\\boxed{82}",                 # the target itself
    "\\boxed{50+25+7*3/3=82}",     # trailing junk
    "\\boxed{-3+50+25+7+3}",       # unary minus
    "\\boxed{50+25+7*3//3}",
    "\\boxed{(50+25+7*3/3}",       # unbalanced paren
    "\\boxed{50+25+7*3/3)}",
    "\\boxed{50+25+7*3/3",         # box never closed
    "50+25+7*3/3",                 # no box
    "\\boxed{}",
    "\\boxed{()}",
    "\\boxed{__import__('os').system('echo hi')}",
    "\\boxed{9**9**9**9}",
    "\\boxed{9999999999*99999999999}",
    "\\boxed{50+25+7*3/3e0}",
    "\\boxed{５0+25+7*3/3}",       # non-ASCII digit
    "\\boxed{" + "(" * 99 + "82" + ")" * 99 + "}",  # deep but under the length cap
    "\\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
    "\\boxed{" + "1+" * 100000 + "1}",
    "x" * 1_000_000,
])
def test_check_rejects(resp):
    t0 = time.perf_counter()
    assert not cd.check(resp, P)
    assert time.perf_counter() - t0 < 0.5


def test_classify_style_never_exceeds_the_budget():
    order = ["direct", "short", "medium", "long"]
    for r in cd.make_sft_examples(300, seed=5):
        got = cd.classify_style(r["response"])
        assert order.index(got) <= order.index(r["style"]), (got, r["style"])
        assert (got == "direct") == (r["style"] == "direct")


def test_step_errors_count_the_searchs_wrong_arithmetic():
    n_steps = 0
    for r in cd.make_sft_examples(200, seed=5):
        n, bad = cd.step_errors(r["response"])
        assert bad == 0, r["response"]        # the demonstrations' searches are exact
        assert n == len(cd._NODE.findall(r["response"]))   # every node is a step
        n_steps += n
    assert n_steps > 0
    reply = "goal 35 from [4, 18, 21]\ntry 21*18=388 -> [4, 388]\n 388/4=97 no\nbacktrack\n" \
            "try 21-4=17 -> [17, 18]\n 18+17=35 yes\ncheck: 21-4+18 = 35\n\\boxed{21-4+18}"
    assert cd.step_errors(reply) == (4, 1)   # 21*18 is 378; the check line is no step


def test_path_style_is_one_true_line_of_moves():
    """'path' (not in the default mix): the winning line only, every move's arithmetic right, no
    dead end, backtrack or check line, and the functional detector finds no behaviour in it."""
    from nanorlsp.behaviors import functional
    for i, p in enumerate(cd.make_problems("train", 60, seed=3)):
        t = cd.make_trace(p, "path", random.Random(i))
        assert t == cd.make_trace(p, "path", random.Random(i))
        assert cd.check(t, p), t
        assert not any(w in t for w in ("backtrack", "check:", "no\n", "out of budget"))
        n, bad = cd.step_errors(t)
        assert (n, bad) == (len(p["numbers"]) - 1, 0), t      # one move per merged number
        assert cd.classify_style(t) == "path"
        assert not any(functional(t, "countdown", p["numbers"]).values()), t
    with pytest.raises(ValueError, match="unknown countdown style"):
        cd.make_trace(P, "breadth", random.Random(0))


def test_styles_direct_and_path():
    from data.common import parse_styles
    with pytest.raises(ValueError, match="give its weight, path=W"):
        cd.make_sft_examples(10, seed=0, styles=parse_styles("direct,path"))
    rows = cd.make_sft_examples(1000, seed=0, styles=parse_styles("direct,path=0.8"))
    assert {r["style"] for r in rows} == {"direct", "path"}
    assert abs(sum(r["style"] == "path" for r in rows) / len(rows) - 0.8) < 0.05
    assert all(cd.check(r["response"], r) for r in rows)


# -----------------------------------------------------------------------------
# countdown_small: the same task on 1..9 with every intermediate at most 99


def test_countdown_small_numbers_targets_and_every_step_stay_small():
    from data import countdown_small as cs, get_task
    assert get_task("countdown_small") is cs
    probs = cs.make_problems("test", 300, seed=0)
    assert len({p["key"] for p in probs}) == 300
    for p in probs:
        assert 3 <= len(p["numbers"]) <= 4 and len(set(p["numbers"])) == len(p["numbers"])
        assert all(1 <= n <= cs.TOP for n in p["numbers"]), p
        assert 10 <= p["target"] <= cs.MAX_VALUE and p["max_value"] == cs.MAX_VALUE
        assert cd.check(f"\\boxed{{{p['answer']}}}", p) and _solvable(p["numbers"], p["target"])
        assert split_of(p["key"]) == "test"
    rng = random.Random(0)
    for p in probs[:100]:
        for style in [*SEARCH_STYLES, "path"]:
            trace = cs.make_trace(p, style, rng)
            steps = cd._STEP.findall(trace)
            assert steps and all(int(v) <= cs.MAX_VALUE for *_, v in steps), trace
            assert cd.step_errors(trace)[1] == 0
    # the same search on countdown's own problems still reaches results above 99
    big = [v for p in cd.make_problems("test", 50, seed=0)
           for *_, v in cd._STEP.findall(cd.make_trace(p, "long", rng))]
    assert max(map(int, big)) > cs.MAX_VALUE
    assert "max_value" not in cd.make_problems("test", 1, seed=0)[0]  # countdown's dicts unchanged


def test_countdown_small_sft_examples_and_behaviours_read_as_countdown():
    from data import countdown_small as cs
    from nanorlsp import behaviors
    rows = cs.make_sft_examples(200, seed=1)
    assert {r["style"] for r in rows} == set(cs.STYLE_MIX)
    assert all(1 <= n <= cs.TOP for r in rows for n in r["numbers"])
    solved = [r for r in rows if r["style"] == "long" and cs.check(r["response"], r)]
    assert solved
    r = next(r for r in solved if "backtrack" in r["response"])
    for task in ("countdown", "countdown_small"):
        c = behaviors.counts(r["response"], task)
        assert c["backtracking"] == r["response"].count("backtrack") and c["verification"] == 1
    assert (behaviors.functional(r["response"], "countdown_small", r["numbers"])
            == behaviors.functional(r["response"], "countdown", r["numbers"]))
    assert (behaviors.spans(r["response"], "countdown_small")
            == behaviors.spans(r["response"], "countdown"))
