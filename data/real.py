"""
Real math sets read from JSONL: GSM8K, MATH-500, AIME 2024, or any file with a problem and answer.

    from data.real import load_problems
    problems = load_problems("math500")                  # ../shared/data/math500.jsonl
    problems = load_problems("gsm8k", path="my.jsonl", limit=100)

Layouts (those of the files in ../shared/data, see its SOURCES.md):
    gsm8k     {"question", "answer": "... rationale ...\\n#### 1,234"}   gold = the text after ####
    math500   {"problem", "answer", "level": 1-5, "subject", ...}       gold = answer
    aime24    {"problem", "answer": "025", ...}                         gold = answer
    any file  a "problem" or "question" field, and an "answer" field (a GSM8K-style "#### n"
              answer is reduced to n)

The prompt asks for the final answer in \\boxed{}, as the paper's evaluation does, so one
verifier (nanorlsp.verifier.grade) checks every set. Problems keep their order in the file;
--limit takes the first N.
"""
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")
DEFAULT_FILES = {"gsm8k": "gsm8k_test.jsonl", "math500": "math500.jsonl", "aime24": "aime24.jsonl"}
REAL_TASKS = tuple(DEFAULT_FILES)
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


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


def load_problems(task: str, path: str | None = None, limit: int | None = None) -> list[dict]:
    """Problems {"key", "prompt", "question", "answer", "level"} from a JSONL file."""
    path = path or default_path(task)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such data file" + (
            "" if task not in DEFAULT_FILES else f" (the {task} set is expected in ../shared/data "
                                                  "beside the repo, or pass --data FILE.jsonl)"))
    problems = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and len(problems) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
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
            problems.append({"key": f"{os.path.basename(path)}:{lineno}", "question": q,
                             "prompt": f"{q}\n{INSTRUCTION}", "answer": gold_of(row["answer"]),
                             "level": level})
    if not problems:
        raise DataError(f"{path}: no problems in the file" if limit != 0 else "--limit 0: nothing to evaluate")
    return problems
