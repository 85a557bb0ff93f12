"""eval.py end to end, its metrics (pass@k, maj@k), behaviours, and the real-data loader."""
import json
import math
import os
import subprocess
import sys
from itertools import combinations

import pytest
import torch

from data import get_task
from helpers import one_error_line
from data.real import DataError, default_path, load_problems
from nanorlsp.behaviors import counts, detect, frequencies
from nanorlsp.checkpoint import save_checkpoint
from nanorlsp.evaluation import checked_answer, majority_vote, pass_at_k, prompt_lengths
from nanorlsp.verifier import grade
from nanorlsp.model import GPT, ModelConfig
from nanorlsp.tokenizer import build_tiny_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -----------------------------------------------------------------------------
# metrics

def test_pass_at_k_by_hand():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)      # 1 - C(3,2)/C(4,2)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)     # 1 - C(3,3)/C(5,3)
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(3, 2, 2) == 1.0                           # n - c < k
    # against the definition by enumeration: the chance a random k-subset holds a correct one
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(combinations(range(n), k))
                want = sum(any(i < c for i in s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(want)
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)


def test_majority_vote():
    same = lambda a, b: a.strip() == b.strip()  # noqa: E731
    assert majority_vote([("5", True), ("6", False), ("5", True)], same)
    assert not majority_vote([("6", False), ("5", True), ("6", False)], same)
    assert majority_vote([("5", True), ("6", False)], same)          # tie: first seen wins
    assert not majority_vote([("6", False), ("5", True)], same)
    assert majority_vote([(None, False), (None, False), ("5", True)], same)  # no-answer ignored
    assert not majority_vote([(None, False)], same)


@pytest.mark.parametrize("synthetic", [True, False])
def test_majority_votes_with_the_checkers_extraction(synthetic):
    """The votes read the answer the checker read: an unboxed reply that arith's check() calls
    unanswered must not vote with its last number (it did, and its False verdict became the
    class's: maj@4 False with 1234 boxed twice). grade() reads extract_answer, fallbacks too."""
    arith = get_task("arith")
    prob = {"answer": "1234"}
    texts = ["so the sum is 1234", "\\boxed{1234}", "\\boxed{1234}", "\\boxed{99}"]
    check = arith.check if synthetic else (lambda t, p: grade(t, p["answer"]))
    votes = [(checked_answer(t, synthetic), bool(check(t, prob))) for t in texts]
    assert votes[0] == ((None, False) if synthetic else ("1234", True))
    assert majority_vote(votes, lambda a, b: a.strip() == b.strip())
    texts = ["\\boxed{99}", "12 then 1234", "\\boxed{1234}", "ends at 1234"]
    votes = [(checked_answer(t, synthetic), bool(check(t, prob))) for t in texts]
    assert majority_vote(votes, lambda a, b: a.strip() == b.strip()) == (not synthetic)


def test_prompt_lengths_never_tokenizes_a_text_that_cannot_fit():
    """A problem of millions of characters is too long before it is tokenized (eval.py spent
    minutes encoding one to find it out)."""
    rows = get_task("arith").make_sft_examples(50, seed=0)
    tok = build_tiny_tokenizer((r["prompt"] + r["response"] for r in rows), n_merges=16)
    seen = []
    encode = tok.render_prompt
    tok.render_prompt = lambda msgs: seen.append(len(msgs[0]["content"])) or encode(msgs)
    probs = [{"prompt": "What is 1 + 1?"}, {"prompt": "1 + " * 2_000_000}]
    n = prompt_lengths(probs, tok, 64)
    assert n[0] == len(encode([{"role": "user", "content": "What is 1 + 1?"}])) < 64
    assert n[1] > 64 and seen == [len("What is 1 + 1?")]


# -----------------------------------------------------------------------------
# behaviours

def test_behaviours_exact_markers_on_synthetic_traces():
    arith = get_task("arith")
    for r in arith.make_sft_examples(400, seed=0):
        d = detect(r["response"], "arith")
        assert d["verification"] == (r["style"] == "check")
        assert d["backtracking"] == ("wait," in r["response"])
        assert not d["alternatives"]
    cd = get_task("countdown")
    rows = cd.make_sft_examples(300, seed=0)
    for r in rows:
        c = counts(r["response"], "countdown")
        assert c["backtracking"] == r["response"].count("backtrack")
        solved_search = r["style"] != "direct" and cd.check(r["response"], r)
        assert c["verification"] == (1 if solved_search else 0)
    f = frequencies([r["response"] for r in rows], "countdown")
    assert 0 < f["alternatives"] and 0 < f["backtracking"] < 1


@pytest.mark.parametrize("text,expect", [
    ("Wait, that's wrong. Let me redo it.", {"backtracking"}),
    ("Let me verify: 3*4 = 12. Yes.", {"verification"}),
    ("Alternatively, we can use symmetry.", {"alternatives"}),
    ("Let me check by substituting back x = 2. Another approach: factor.",
     {"verification", "alternatives"}),
    ("The answer is 12.", set()),
    ("He waited for the bus, then checked his watch.", set()),  # word-bounded: no false hit
])
def test_behaviour_keywords_on_natural_text(text, expect):
    assert {b for b, v in detect(text).items() if v} == expect


# -----------------------------------------------------------------------------
# real data

def test_load_problems_layouts_and_errors(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"question": "2+2?", "answer": "so\n#### 1,234"}) + "\n\n"
                 + json.dumps({"problem": "x?", "answer": 5, "level": "Level 3"}) + "\n")
    ps = load_problems("gsm8k", path=str(f))
    assert [p["answer"] for p in ps] == ["1,234", "5"] and ps[1]["level"] == 3
    assert "\\boxed{}" in ps[0]["prompt"] and ps[0]["prompt"].startswith("2+2?")
    assert len(load_problems("x", path=str(f), limit=1)) == 1
    f.write_text('{"question": "a", "answer": "1"}\n{not json\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2: not valid JSON"):
        load_problems("x", path=str(f))
    f.write_text('{"question": "a"}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:1: needs a 'problem' or 'question'"):
        load_problems("x", path=str(f))
    f.write_text("")
    with pytest.raises(DataError, match="no problems"):
        load_problems("x", path=str(f))
    with pytest.raises(DataError, match="no such data file"):
        load_problems("x", path=str(tmp_path / "missing.jsonl"))


@pytest.mark.parametrize("task,n", [("gsm8k", 1319), ("math500", 500), ("aime24", 30)])
def test_shared_sets_load(task, n):
    if not os.path.exists(default_path(task)):
        pytest.skip(f"{default_path(task)} not present")
    ps = load_problems(task)
    assert len(ps) == n and all(p["answer"] for p in ps)
    if task == "gsm8k":
        assert all("####" not in p["answer"] for p in ps)
    if task == "math500":
        assert {p["level"] for p in ps} == {1, 2, 3, 4, 5}


# -----------------------------------------------------------------------------
# eval.py end to end, on a tiny random checkpoint

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    rows = get_task("arith").make_sft_examples(300, seed=0)
    tok = build_tiny_tokenizer((r["prompt"] + r["response"] for r in rows), n_merges=32)
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=64 * math.ceil(tok.n_vocab / 64), n_layer=1, n_head=2,
                            n_kv_head=1, n_embd=32))
    save_checkpoint(str(d), model, tok, step=0, args={})
    return str(d)


def run_eval(*args, check=True):
    r = subprocess.run([sys.executable, "eval.py", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr[-2000:]
    return r


REQUIRED = {"task", "n_problems", "n_samples", "pass@1", "mean_response_tokens", "behaviors"}


def test_eval_arith_writes_json_and_transcripts(ckpt, tmp_path):
    out = tmp_path / "res.json"
    run_eval("--init_from", ckpt, "--limit", "6", "--n_samples", "4", "--temperature", "1.0",
             "--max_new_tokens", "16", "--out", str(out))
    res = json.loads(out.read_text())
    assert REQUIRED <= set(res) and res["n_problems"] == 6 and res["n_samples"] == 4
    assert {"pass@2", "pass@4", "maj@4", "truncation_rate", "accuracy_by_level"} <= set(res)
    assert 0 <= res["pass@1"] <= res["pass@2"] <= res["pass@4"] <= 1
    assert set(res["behaviors"]) == {"backtracking", "verification", "alternatives"}
    assert "search_steps" not in res   # countdown's tasks only
    lines = [json.loads(x) for x in open(tmp_path / "res.transcripts.jsonl")]
    assert len(lines) == 24 and {"problem", "response", "answer", "correct", "gold"} <= set(lines[0])
    # the pass@1 in the JSON is the mean verdict of the transcripts
    assert res["pass@1"] == pytest.approx(sum(x["correct"] for x in lines) / 24)


def test_eval_on_a_jsonl_file(ckpt, tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text("".join(json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                         for i in range(3)))
    out = tmp_path / "r.json"
    run_eval("--init_from", ckpt, "--data", str(f), "--max_new_tokens", "8", "--out", str(out))
    res = json.loads(out.read_text())
    assert res["n_problems"] == 3 and res["task"] == str(f)


def test_eval_bad_inputs(ckpt, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "a", "answer": "1"}\nnot json at all\n')
    cases = [
        (["--init_from", ckpt, "--data", str(bad)], "bad.jsonl:2: not valid JSON"),
        (["--init_from", ckpt, "--limit", "0"], "--limit 0"),
        (["--init_from", str(tmp_path / "nope")], "no checkpoint or model"),
        (["--init_from", ckpt, "--n_samples", "2", "--k", "3"], "between 1 and --n_samples"),
        (["--init_from", ckpt, "--task", "mmlu"], "invalid choice: 'mmlu'"),
        (["--init_from", ckpt, "--data", str(tmp_path / "missing.jsonl")], "no such data file"),
    ]
    for argv, pattern in cases:
        assert pattern in one_error_line(run_eval(*argv, check=False)), argv


def test_eval_countdown_small_reports_wrong_search_steps(tmp_path):
    cs = get_task("countdown_small")
    rows = cs.make_sft_examples(200, seed=0)
    tok = build_tiny_tokenizer((r["prompt"] + r["response"] for r in rows), n_merges=16)
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=64 * math.ceil(tok.n_vocab / 64), n_layer=1, n_head=2,
                            n_kv_head=1, n_embd=32))
    save_checkpoint(str(tmp_path / "ck"), model, tok, step=0, args={})
    out = tmp_path / "cd.json"
    run_eval("--init_from", str(tmp_path / "ck"), "--task", "countdown_small", "--limit", "4",
             "--n_samples", "2", "--temperature", "1.0", "--max_new_tokens", "48", "--out", str(out))
    res = json.loads(out.read_text())
    lines = [json.loads(x) for x in open(tmp_path / "cd.transcripts.jsonl")]
    steps = [cs.step_errors(x["response"]) for x in lines]
    assert res["search_steps"] == sum(n for n, _ in steps)
    wrong = sum(b for _, b in steps)
    assert res["wrong_step_share"] == pytest.approx(wrong / max(1, res["search_steps"]))
    assert all(p["numbers"] and max(p["numbers"]) <= cs.TOP for p in cs.make_problems("test", 4, 0))


def test_eval_offset_skips_the_first_problems(ckpt, tmp_path):
    """--offset N evaluates problems N+1.. of the same stream (synthetic: the held-out arith
    stream; a file: its rows), so a recipe can be chosen past the test set; past the end of a
    file it is one error line."""
    out = tmp_path / "o.json"
    run_eval("--init_from", ckpt, "--limit", "3", "--offset", "4", "--max_new_tokens", "4",
             "--out", str(out))
    res = json.loads(out.read_text())
    assert res["n_problems"] == 3 and res["offset"] == 4
    want = [p["prompt"] for p in get_task("arith").make_problems("test", 7, seed=0)[4:]]
    got = [json.loads(x)["problem"] for x in open(tmp_path / "o.transcripts.jsonl")]
    assert got == want
    f = tmp_path / "mine.jsonl"
    f.write_text("".join(json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                         for i in range(5)))
    run_eval("--init_from", ckpt, "--data", str(f), "--offset", "3", "--max_new_tokens", "4",
             "--out", str(out))
    assert [json.loads(x)["gold"] for x in open(tmp_path / "o.transcripts.jsonl")] == ["4", "5"]
    r = run_eval("--init_from", ckpt, "--data", str(f), "--offset", "5", check=False)
    assert "--offset 5: the set has no problems past it" in one_error_line(r)
