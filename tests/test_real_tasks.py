"""Real sets as training tasks (data/real.py training_task) and the boxed instruction for real
chat formats. Uses ../shared/data; skipped when it is absent."""
import json
import os

import pytest

from data import get_task
from data.real import SHARED, DataError
from nanorlsp.evaluation import INSTRUCTION, user_prompt
from nanorlsp.tokenizer import build_tiny_tokenizer

needs_data = pytest.mark.skipif(not os.path.isfile(os.path.join(SHARED, "gsm8k_train.jsonl")),
                                reason="../shared/data absent")


@needs_data
def test_gsm8k_demonstrations_are_graded_correct():
    task = get_task("gsm8k")
    rows = task.make_sft_examples(200, seed=0)
    assert len(rows) == 200
    for r in rows:
        assert "<<" not in r["response"] and r["response"].endswith("}.")
        assert task.check(r["response"], r)            # the demonstration's own box is gold
        assert r["prompt"].endswith(INSTRUCTION)
    assert not task.check("The answer is \\boxed{-1}.", rows[0])
    assert len(task.make_problems("test", 10 ** 9, seed=0)) == 1319   # the whole test file
    assert task.make_problems("train", 5, seed=1) == task.make_problems("train", 5, seed=1)


@needs_data
def test_math_trains_rl_only_and_bad_data_is_one_line(tmp_path):
    task = get_task("math")
    assert len(task.make_problems("test", 10 ** 9, seed=0)) == 500       # MATH-500
    p = task.make_problems("train", 3, seed=0)[0]
    assert task.check(f"so \\boxed{{{p['answer']}}}", p)
    with pytest.raises(DataError, match="no demonstrations"):
        task.make_sft_examples(10, seed=0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n{oops\n")
    with pytest.raises(DataError, match="bad.jsonl:2: not valid JSON"):
        get_task("gsm8k", str(bad))
    with pytest.raises(ValueError, match="--data is for the real sets"):
        get_task("arith", str(bad))


def test_bad_data_files_are_one_line_naming_the_line(tmp_path):
    """A line that is not UTF-8 (was a UnicodeDecodeError without the file's name) and an empty
    gold answer (was accepted, every reply graded against nothing) name the file and line."""
    from data.real import load_problems
    ok = json.dumps({"question": "1+1?", "answer": "2"}).encode() + b"\n"
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(ok + b'{"question": "caf\xe9?", "answer": "3"}\n')
    with pytest.raises(DataError, match="latin1.jsonl:2: not UTF-8"):
        load_problems("gsm8k", path=str(latin1))
    for empty in ("", "  ", "rationale\n####  "):
        f = tmp_path / "empty.jsonl"
        f.write_bytes(ok + json.dumps({"problem": "x?", "answer": empty}).encode() + b"\n")
        with pytest.raises(DataError, match="empty.jsonl:2: empty 'answer'"):
            load_problems("math500", path=str(f))


@needs_data
def test_gsm8k_data_without_rationales_is_one_line(tmp_path):
    """train_sft.py --task gsm8k --data FILE with no '#### n' rationales divided by zero."""
    f = tmp_path / "answers.jsonl"
    f.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    with pytest.raises(DataError, match="answers.jsonl: no GSM8K rationales"):
        get_task("gsm8k", str(f)).make_sft_examples(10, seed=0)


def test_user_prompt_adds_the_instruction_for_real_chat_formats_only():
    tok = build_tiny_tokenizer()
    p = {"prompt": "What is 2 + 3?"}
    assert user_prompt(p, tok) == p["prompt"]            # the tiny model learned its format
    tok.chat_format = "chatml"
    assert user_prompt(p, tok) == p["prompt"] + "\n" + INSTRUCTION
    boxed = {"prompt": "Q\n" + INSTRUCTION}
    assert user_prompt(boxed, tok) == boxed["prompt"]    # never twice


@needs_data
def test_answer_start_is_the_graders_extraction():
    """The RL reward's no-answer test used last_boxed while the real tasks'
    grader also reads 'Answer:' / 'The answer is' / '####' forms, so a wrong free-text answer
    was "no answer" (-0.5) and L ran past the answer. answer_start is the grader's own extraction;
    the reasoning length L is the text before it."""
    from nanorlsp.verifier import last_boxed
    task = get_task("gsm8k")
    p = task.make_problems("test", 1, seed=0)[0]
    for text in (f"work...\nThe answer is {p['answer']}.", f"so\n#### {p['answer']}",
                 f"Answer: ${p['answer']}$", f"hence \\boxed{{{p['answer']}}} done"):
        start = task.answer_start(text)
        assert task.check(text, p) and start is not None, text
        assert text[:start].rstrip() in ("work...\nThe", "so", "hence", ""), text
    wrong = "work...\nThe answer is 123456789."
    assert last_boxed(wrong) is None and task.answer_start(wrong) == len("work...\nThe ")
    assert task.answer_start("I do not know") is None
    for name in ("arith", "countdown"):
        t = get_task(name)
        for r in t.make_sft_examples(50, seed=0):
            start = t.answer_start(r["response"])
            assert start is not None and r["response"][start:].startswith("\\boxed")
        assert t.answer_start("no box") is None and t.answer_start("\\boxed{12") is None
