"""
Real math sets read from JSONL: GSM8K, MATH-500, AIME 2024, or any file with a problem and answer.

    from data.real import load_problems, training_task
    problems = load_problems("math500")                  # ../shared/data/math500.jsonl
    problems = load_problems("gsm8k", path="my.jsonl", limit=100)
    task = training_task("gsm8k")     # train_sft.py / train_rl.py --task gsm8k|math [--data FILE]

A file needs a "problem" or "question" field and an "answer" (GSM8K's "... #### 1,234" is
reduced to the text after ####). The prompt asks for the final answer in \\boxed{}, as the
paper's evaluation does, so one verifier (nanorlsp.verifier.grade) checks every set. Problems
keep their file order; --limit takes the first N. training_task is a task with the synthetic
tasks' interface: train problems from the set's train file (or --data), held-out ones from its
test file. The layouts, files and sizes: docs/tasks.md.
Footguns: math's train file has answers only (RL, not SFT); a row with an empty answer is
skipped, and the task's NOTES say which lines.
"""
import json
import os
import random
import re
from types import SimpleNamespace

from nanorlsp.evaluation import INSTRUCTION  # one prompt for every set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")
DEFAULT_FILES = {"gsm8k": "gsm8k_test.jsonl", "math500": "math500.jsonl", "aime24": "aime24.jsonl"}
REAL_TASKS = tuple(DEFAULT_FILES)


class DataError(ValueError):
    """A data file that cannot be used: one line naming the file (and line)."""


def default_path(task: str) -> str:
    return os.path.normpath(os.path.join(SHARED, DEFAULT_FILES[task]))


def gold_of(answer) -> str:
    """The gold answer string; GSM8K rationales end in '#### n' and only n is gold."""
    answer = str(answer)
    if "####" in answer:
        answer = answer.rsplit("####", 1)[1]
    return answer.strip()


def load_problems(task: str, path: str | None = None, limit: int | None = None,
                  skipped: list | None = None) -> list[dict]:
    """Problems {"key", "prompt", "question", "answer", "level"} from a JSONL file. A row with an
    empty answer is a DataError, or with a `skipped` list, left out and its line number added
    (MATH train has two: RL has nothing to grade them by)."""
    path = path or default_path(task)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such data file" + (
            "" if task not in DEFAULT_FILES else f" (the {task} set is expected in ../shared/data "
                                                  "beside the repo, or pass --data FILE.jsonl)"))
    problems = []
    with open(path, "rb") as f:   # bytes: a line that is not UTF-8 is named, not a traceback
        for lineno, line in enumerate(f, 1):
            if limit is not None and len(problems) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (re-save the file as UTF-8)") from None
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object")
            q = row.get("problem", row.get("question"))
            if not isinstance(q, str) or "answer" not in row or row["answer"] is None:
                raise DataError(f"{path}:{lineno}: needs a 'problem' or 'question' string and an "
                                "'answer' field")
            level = row.get("level")
            if isinstance(level, str) and level.startswith("Level "):  # MATH train: "Level 3"
                level = level[6:]
            level = int(level) if isinstance(level, (int, str)) and str(level).isdigit() else None
            gold = gold_of(row["answer"])
            if not gold and skipped is not None:
                skipped.append(lineno)
                continue
            if not gold:   # every reply would be graded against nothing, and counted
                raise DataError(f"{path}:{lineno}: empty 'answer'")
            problems.append({"key": f"{os.path.basename(path)}:{lineno}", "question": q,
                             "prompt": f"{q}\n{INSTRUCTION}", "answer": gold, "level": level})
    if not problems:
        raise DataError(f"{path}: no problems in the file" if limit != 0 else "--limit 0: nothing to evaluate")
    return problems


# -----------------------------------------------------------------------------
# real sets as training tasks

TRAIN_FILES = {"gsm8k": ("gsm8k_train.jsonl", "gsm8k_test.jsonl"),
               "math": ("math_train.jsonl", "math500.jsonl")}
_CALC = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations, "48/2=<<48/2=24>>24"


def _demonstration(row: dict) -> str | None:
    """A GSM8K rationale as a reply: calculator annotations dropped, '#### n' -> \\boxed{n}."""
    if "####" not in row["rationale"]:
        return None
    body, ans = row["rationale"].rsplit("####", 1)
    return f"{_CALC.sub('', body).strip()}\nThe answer is \\boxed{{{ans.strip()}}}."


def training_task(name: str, data: str | None = None):
    """A real set as a training task (see the module docstring); DataError for bad files."""
    from nanorlsp.verifier import answer_start, grade
    train_file, test_file = TRAIN_FILES[name]
    train_path = data or os.path.normpath(os.path.join(SHARED, train_file))
    test_path = os.path.normpath(os.path.join(SHARED, test_file))
    skipped = {"train": [], "test": []}
    splits = {split: load_problems(name, path=path, skipped=skipped[split])
              for split, path in (("train", train_path), ("test", test_path))}
    notes = [f"{path}: skipped {len(v)} problems with an empty 'answer' (lines "
             f"{', '.join(map(str, v[:5]))}{', ...' if len(v) > 5 else ''})"
             for path, v in ((train_path, skipped["train"]), (test_path, skipped["test"])) if v]
    # the raw rationale is kept for SFT (load_problems keeps only the gold answer); the test
    # file's rationales give the held-out SFT loss. A problem's key ends in its line number
    if name == "gsm8k":
        for split, path in (("train", train_path), ("test", test_path)):
            with open(path, encoding="utf-8") as f:
                rows = {k: x for k, x in enumerate(f, 1)}
            for p in splits[split]:
                p["rationale"] = str(json.loads(rows[int(p["key"].rsplit(":", 1)[1])])["answer"])

    def make_problems(split: str, n: int, seed: int, **_):
        """n problems of the split: all of them in file order when n >= the split's size (the
        held-out set is then the whole test file), else a seeded sample."""
        pool = splits[split]
        return list(pool) if n >= len(pool) else random.Random(seed).sample(pool, n)

    def make_sft_examples(n: int, seed: int, split: str = "train", styles=None):
        if styles:
            raise DataError(f"--task {name}: --styles is for the synthetic tasks (a real set's "
                            "demonstrations are its rationales)")
        if name != "gsm8k":
            raise DataError(f"--task {name}: no demonstrations to fine-tune on (GSM8K has "
                            "rationales; MATH train here has answers only: use train_rl.py)")
        rows = [dict(p, response=_demonstration(p), style="rationale")
                for p in make_problems(split, n, seed)]
        rows = [r for r in rows if r["response"]]
        if not rows:
            raise DataError(f"{train_path if split == 'train' else test_path}: no GSM8K "
                            "rationales ('... #### n' answers) to fine-tune on")
        return rows

    return SimpleNamespace(NAME=name, NOTES=notes, make_problems=make_problems,
                           make_sft_examples=make_sft_examples,
                           check=lambda text, p: grade(text, p["answer"]),
                           answer_start=answer_start,
                           classify_style=lambda text: "free")
