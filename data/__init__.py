"""
Procedurally generated reasoning tasks (nothing is downloaded).

    from data import get_task
    task = get_task("arith")
    problems = task.make_problems("test", 200, seed=0)   # [{"key", "prompt", "answer", "level", ...}]
    rows = task.make_sft_examples(5000, seed=0)          # problems + "response" + "style"
    task.check(response, problem) -> bool                # exact checker
    task.answer_start(response) -> int | None            # where the answer check reads begins

`python -m data.arith` / `python -m data.countdown` print each task's trace-style mix with its
accuracy. Each task module defines NAME, STYLE_MIX, make_problems, make_trace,
make_sft_examples, check and answer_start (the RL reward's no-answer test and
reasoning length use it, so they agree with the checker).
"""
import importlib

TASK_NAMES = ("arith", "countdown", "countdown_small")
REAL_TRAIN_TASKS = ("gsm8k", "math")   # data/real.py: files from ../shared/data or --data


def get_task(name: str, data: str | None = None):
    """The task for `name` (a module, or for a real set an object with the same functions);
    a ValueError naming the choices for anything else. `data`: a real set's train file."""
    if name in REAL_TRAIN_TASKS:
        from data.real import training_task
        return training_task(name, data)
    if data is not None:
        raise ValueError(f"--data is for the real sets ({', '.join(REAL_TRAIN_TASKS)}), not {name}")
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r} (choose from "
                         f"{', '.join(TASK_NAMES + REAL_TRAIN_TASKS)})")
    return importlib.import_module(f"data.{name}")
