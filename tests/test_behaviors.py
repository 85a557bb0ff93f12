"""behaviors.spans: where each behaviour is, consistent with the counts eval.py and RL report."""
from collections import Counter

from data import get_task
from nanorlsp.behaviors import BEHAVIORS, counts, spans


def check_consistent(text, task):
    got = spans(text, task)
    assert got == sorted(got)
    n = Counter(b for _, _, b in got)
    assert {b: n[b] for b in BEHAVIORS} == counts(text, task)
    for s, e, _ in got:
        assert 0 <= s < e <= len(text)
    return got


def test_spans_match_counts_on_demonstrations():
    for name in ("arith", "countdown"):
        for r in get_task(name).make_sft_examples(300, seed=0):
            check_consistent(r["response"], name)


def test_spans_cover_the_marker_line():
    text = "3+8=11 write 1 carry 1\nwait, 7+9=16 not 15. redo:\n7+9=16\ncheck: 6 ok\n\\boxed{161}"
    got = check_consistent(text, "arith")
    assert [(text[s:e], b) for s, e, b in got] == [("wait, 7+9=16 not 15. redo:", "backtracking"),
                                                   ("check: 6 ok", "verification")]
    cd = "try 3+5=8\n  8*2=16\n  backtrack\n\ntry 5*2=10\ncheck: 10+3=13\n\\boxed{5*2+3}"
    got = check_consistent(cd, "countdown")
    assert [(cd[s:e], b) for s, e, b in got] == [("  backtrack", "backtracking"),
                                                 ("try 5*2=10", "alternatives"),
                                                 ("check: 10+3=13", "verification")]


def test_spans_keywords_on_natural_text():
    text = ("So x = 4. Wait, that is wrong. Let me check: 2*4 = 8. Alternatively, "
            "another approach gives 4. Let me verify again.")
    got = check_consistent(text, "gsm8k")
    assert [text[s:e].lower() for s, e, b in got if b == "verification"] == ["let me check",
                                                                              "let me verify"]
    assert {b for _, _, b in got} == set(BEHAVIORS)
    assert spans("no behaviour here", None) == []
