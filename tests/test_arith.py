"""The arith task: deterministic, disjoint splits, traces that verify, an exact checker."""
import random
import re

import pytest

from data import get_task
from data.common import split_of, style_report
from nanorlsp.verifier import last_boxed

arith = get_task("arith")


def test_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task 'nope'.*arith"):
        get_task("nope")


def test_problems_deterministic_per_seed():
    a = arith.make_problems("train", 200, seed=3)
    b = arith.make_problems("train", 200, seed=3)
    c = arith.make_problems("train", 200, seed=4)
    assert a == b
    assert [p["key"] for p in a] != [p["key"] for p in c]
    assert arith.make_sft_examples(100, seed=1) == arith.make_sft_examples(100, seed=1)


def test_train_test_disjoint():
    train = {p["key"] for p in arith.make_problems("train", 5000, seed=0)}
    for seed in (0, 1):
        test = {p["key"] for p in arith.make_problems("test", 500, seed=seed)}
        assert not train & test
        assert all(split_of(k) == "test" for k in test)


def test_commuted_problems_fall_on_one_side_of_the_split():
    """The key was the problem as written, so 3+4 could be trained on and 4+3
    held out (the same fact). The key is canonical for + and *, not for -."""
    def problems(split):
        return {(p["a"], p["op"], p["b"]) for lv in arith.LEVELS
                for p in arith.make_problems(split, 300, seed=lv, level=lv, distinct=False)}
    train, test = problems("train"), problems("test")
    assert not {(b, op, a) for a, op, b in test if op in "+*"} & train
    assert any(op == "-" for _, op, _ in test)
    sums = arith.make_problems("train", 2000, seed=0)
    for p in sums:
        if p["op"] in "+*" and p["a"] != p["b"]:
            assert p["key"] == f"{min(p['a'], p['b'])}{p['op']}{max(p['a'], p['b'])}"
    assert any(p["op"] == "-" and p["a"] < p["b"] and p["key"] == f"{p['a']}-{p['b']}"
               for p in sums)


def test_answers_are_right_and_levels_cover():
    ps = arith.make_problems("train", 1000, seed=0)
    for p in ps:
        assert int(p["answer"]) == eval(f"{p['a']}{p['op']}{p['b']}")  # our own ints only
    assert {p["level"] for p in ps} == set(arith.LEVELS)
    one = arith.make_problems("test", 50, seed=0, level=5)
    assert all(p["level"] == 5 and p["op"] == "*" and 2 <= p["b"] <= 9 and p["a"] >= 10 for p in one)


@pytest.mark.parametrize("style", list(arith.STYLE_MIX))
def test_every_trace_verifies(style):
    rng = random.Random(0)
    for p in arith.make_problems("train", 400, seed=7):
        t = arith.make_trace(p, style, rng)
        assert arith.check(t, p), (p, t)
        assert t.endswith(f"\\boxed{{{p['answer']}}}")


def test_trace_lines_are_correct_arithmetic():
    """Every 'x+y=z' / 'x-y=z' / 'x*y+c=z' step in steps/check traces is true; in backtrack
    traces exactly one step is false and the next line says 'wait,' with the true value."""
    rng = random.Random(1)
    step = re.compile(r"^([\d+\-*]+)=(-?\d+)")
    for p in arith.make_problems("train", 300, seed=2):
        for style in ("steps", "check", "backtrack"):
            lines = arith.make_trace(p, style, rng).split("\n")
            wrong = []
            for i, ln in enumerate(lines):
                m = step.match(ln)
                if m and eval(m.group(1)) != int(m.group(2)):
                    wrong.append(i)
            if style == "backtrack" and any(ln.startswith("wait,") for ln in lines):
                assert len(wrong) == 1 and lines[wrong[0] + 1].startswith("wait,")
            else:
                assert wrong == [], lines


def test_markers_only_in_their_styles():
    rows = arith.make_sft_examples(600, seed=0)
    for r in rows:
        t = r["response"]
        assert ("check:" in t) == (r["style"] == "check")
        if r["style"] != "backtrack":
            assert "wait," not in t
    # almost every backtrack trace has a caught mistake (a few tiny problems have no spot for one)
    bt = [r for r in rows if r["style"] == "backtrack"]
    assert sum("wait," in r["response"] for r in bt) >= 0.9 * len(bt)


def test_direct_share_falls_with_difficulty():
    rows = arith.make_sft_examples(6000, seed=0)
    for level, share in arith.DIRECT_SHARE.items():
        rs = [r for r in rows if r["level"] == level]
        got = sum(r["style"] == "direct" for r in rs) / len(rs)
        assert abs(got - share) < 0.05, (level, got)
    assert abs(sum(arith.DIRECT_SHARE.values()) / 5 - arith.STYLE_MIX["direct"]) < 1e-9


def test_style_mix_matches_documentation():
    rep = style_report(arith, n=3000, seed=0)
    for style, share in arith.STYLE_MIX.items():
        assert abs(rep[style]["frac"] - share) < 0.03
        assert rep[style]["acc"] == 1.0
    assert rep["direct"]["mean_chars"] < 20 < rep["steps"]["mean_chars"]


@pytest.mark.parametrize("resp,ok", [
    ("\\boxed{7694}", True),
    ("work...\n\\boxed{ 7694 }", True),
    ("\\boxed{7000} wait \\boxed{7694}", True),   # the LAST box counts
    ("\\boxed{7694} no, \\boxed{7000}", False),
    ("\\boxed{7694.0}", False),                  # exact: integers only
    ("\\boxed{7,694}", False),
    ("\\boxed{+7694}", False),
    ("7694", False),                             # no box, no answer
    ("\\boxed{7694", False),                     # unbalanced
    ("\\boxed{}", False),
    ("\\boxed{" + "9" * 5000 + "}", False),
])
def test_checker_is_exact(resp, ok):
    assert arith.check(resp, {"answer": "7694"}) is ok


def test_negative_answers():
    p = {"a": 12, "b": 305, "op": "-", "answer": "-293", "key": "12-305"}
    t = arith.make_trace(p, "steps", random.Random(0))
    assert "negate" in t and arith.check(t, p)
    assert arith.check("\\boxed{-293}", p) and not arith.check("\\boxed{293}", p)


def test_last_boxed():
    assert last_boxed("a \\boxed{\\frac{1}{2}} b") == "\\frac{1}{2}"
    assert last_boxed("\\boxed 5$") == "5"
    assert last_boxed("\\boxed{1}\\boxed{2}") == "2"
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{{}") is None


def test_classify_style_recovers_the_demonstration_style():
    for r in arith.make_sft_examples(800, seed=3):
        assert arith.classify_style(r["response"]) == r["style"]


def test_styles_restrict_the_mix_per_level():
    """--styles direct,steps (the study's emergence test): only those styles, each level's
    direct share renormalised over them (0.85 / (0.85 + 0.075) at level 1), no marker anywhere."""
    from data.common import parse_styles
    rows = arith.make_sft_examples(4000, seed=0, styles=parse_styles("direct,steps"))
    assert {r["style"] for r in rows} == {"direct", "steps"}
    assert not any("check:" in r["response"] or "wait," in r["response"] for r in rows)
    for level, d in arith.DIRECT_SHARE.items():
        rs = [r for r in rows if r["level"] == level]
        got = sum(r["style"] == "direct" for r in rs) / len(rs)
        assert abs(got - d / (d + (1 - d) / 2)) < 0.05, (level, got)
    # explicit weights override the shares; the default mix is untouched without --styles
    rows = arith.make_sft_examples(2000, seed=0, styles=parse_styles("steps=1,check=1"))
    assert abs(sum(r["style"] == "steps" for r in rows) / len(rows) - 0.5) < 0.05
    assert arith.make_sft_examples(300, seed=0) == arith.make_sft_examples(300, seed=0, styles=None)


@pytest.mark.parametrize("spec,msg", [
    ("direct,direct", "a repeated style"), ("direct,", "an empty style"),
    ("steps=x", "is not a number"), ("steps=0", "must be > 0"), ("steps=nan", "must be > 0"),
])
def test_parse_styles_rejects(spec, msg):
    from data.common import parse_styles
    with pytest.raises(ValueError, match=msg):
        parse_styles(spec)


def test_styles_unknown_is_a_clear_error():
    from data.common import parse_styles
    with pytest.raises(ValueError, match="arith has no style 'path'"):
        arith.make_sft_examples(10, seed=0, styles=parse_styles("direct,path"))
