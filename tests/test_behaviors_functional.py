"""nanorlsp.behaviors.functional: behaviours read from what a reply does, without the markers the
demonstrations use (the emergence test of the study: a model never shown 'wait,' or 'check:')."""
import random
import re

import pytest

from data import get_task
from nanorlsp.behaviors import detect, functional

NONE = {"backtracking": 0, "verification": 0, "alternatives": 0}


def shown(counts):
    return {b for b, n in counts.items() if n}


def test_arith_demonstrations_read_as_their_style():
    # every demonstration's behaviour is found from its arithmetic alone, and nothing else
    task = get_task("arith")
    want = {"direct": set(), "steps": set(), "check": {"verification"},
            "backtrack": {"backtracking"}}
    for s in range(200):
        p = task.make_problems("train", 1, seed=s)[0]
        for style, expect in want.items():
            assert shown(functional(task.make_trace(p, style, random.Random(s)), "arith")) == expect


def test_arith_without_markers():
    plain = "5+2=7: 7\n9+7=16: 67 carry 1\ncarry 1: 167\n\\boxed{167}"
    assert functional(plain, "arith") == NONE
    # a digit revised with no "wait,": the same column, the same sum, another result
    revised = "5+2=7: 7\n9+7=15: 57\n9+7=16: 67 carry 1\ncarry 1: 167\n\\boxed{167}"
    assert shown(functional(revised, "arith")) == {"backtracking"}
    assert not detect(revised, "arith")["backtracking"]
    # a result recomputed in free text, no "check:"
    again = plain.replace("\\boxed", "so the last digit is 5+2=7 again\n\\boxed")
    assert shown(functional(again, "arith")) == {"verification"}
    assert not detect(again, "arith")["verification"]
    # a second route: the columns started over with another first step (the sum commuted)
    other = plain.replace("\\boxed", "2+5=7: 7\n7+9=16: 67 carry 1\n\\boxed")
    assert "alternatives" in shown(functional(other, "arith"))
    # the markers alone, with nothing recomputed or revised, are not the behaviour
    assert functional("wait, let me see.\ncheck: fine\n\\boxed{167}", "arith") == NONE


def test_countdown_without_markers():
    nums = [3, 5, 17]
    path = "17+5=22 -> [3, 22]\n22*3=66 yes\n\\boxed{(17+5)*3}"
    assert functional(path, "countdown", nums) == NONE
    # a failed move, then another from the starting numbers: back to an earlier state, and a
    # second first move
    search = "17*5=85 -> [3, 85]\n85-3=82 no\n17+5=22 -> [3, 22]\n22*3=66 yes"
    f = functional(search, "countdown", nums)
    assert f["backtracking"] >= 1 and f["alternatives"] == 1 and f["verification"] == 0
    # the whole expression evaluated again to the value the search reached
    assert functional(path + "\n(17+5)*3 = 66", "countdown", nums)["verification"] == 1
    # arithmetic on numbers not in play is not a move
    assert functional("2*2=4\n7-1=6", "countdown", nums) == NONE


def test_countdown_markers_imply_functional():
    # every marked backtrack / check / second top-level try in the demonstrations is also found
    # functionally (functional counts more: a retried final move without a 'backtrack' line, and
    # a 'best: ... = N' line recomputing a value, count too)
    task = get_task("countdown")
    for r in task.make_sft_examples(300, seed=0):
        nums = [int(x) for x in re.search(r"numbers ([\d, ]+), reach", r["prompt"]).group(1)
                .split(", ")]
        f, d = functional(r["response"], "countdown", nums), detect(r["response"], "countdown")
        assert all(f[b] > 0 for b in d if d[b]), (d, f, r["response"][-300:])


def test_functional_needs_what_it_reads():
    with pytest.raises(ValueError, match="numbers"):
        functional("1+2=3", "countdown")
    with pytest.raises(ValueError, match="arith and countdown"):
        functional("1+2=3", "gsm8k")
