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


def test_user_prompt_adds_the_instruction_for_real_chat_formats_only():
    tok = build_tiny_tokenizer()
    p = {"prompt": "What is 2 + 3?"}
    assert user_prompt(p, tok) == p["prompt"]            # the tiny model learned its format
    tok.chat_format = "chatml"
    assert user_prompt(p, tok) == p["prompt"] + "\n" + INSTRUCTION
    boxed = {"prompt": "Q\n" + INSTRUCTION}
    assert user_prompt(boxed, tok) == boxed["prompt"]    # never twice
