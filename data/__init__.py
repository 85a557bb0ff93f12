"""
Procedurally generated reasoning tasks (nothing is downloaded).

    from data import get_task
    task = get_task("arith")
    problems = task.make_problems("test", 200, seed=0)   # [{"key", "prompt", "answer", "level", ...}]
    rows = task.make_sft_examples(5000, seed=0)          # problems + "response" + "style"
    task.check(response, problem) -> bool                # exact checker

`python -m data.arith` / `python -m data.countdown` print each task's trace-style mix with its
accuracy. Each task module defines NAME, STYLE_MIX, make_problems, make_trace,
make_sft_examples and check.
"""
import importlib

TASK_NAMES = ("arith", "countdown")


def get_task(name: str):
    """The task module for `name`; a ValueError naming the choices for anything else."""
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r} (choose from {', '.join(TASK_NAMES)})")
    return importlib.import_module(f"data.{name}")
