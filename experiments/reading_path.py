"""
How many lines a reader follows in one default RLSP step: the README's count, measured.

    python experiments/reading_path.py            # a tiny SFT checkpoint, then one traced step
    python experiments/reading_path.py --algo ppo   # any train_rl.py flag: that step's path

It runs one default `train_rl.py` step in-process (tiny sizes: the path does not depend on them)
under sys.settrace and records every function the loop body calls, directly or not. A function
counts whole (def to last line: docstring and comments included) if it lives in a core module
below; a nested function counts once, inside its parent. Read as black boxes, not counted: the
model, sampler, tokenizer, verifier, repetition guard, packing, dist and the task. Counted apart:
the logging (log_step, step_record); not counted: save and evaluate (on schedule, not per step).
"""
import argparse
import ast
import contextlib
import io
import os
import runpy
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = ["nanorlsp/rlsp.py", "nanorlsp/rl.py", "nanorlsp/objectives.py", "nanorlsp/rewards.py",
        "nanorlsp/policy.py", "nanorlsp/economy.py", "nanorlsp/ppo.py", "train_rl.py"]
LOGGING = {"log_step", "step_record", "log", "say"}
SCHEDULED = {"save", "evaluate"}
TINY_SFT = ["--n_train", "300", "--n_val", "40", "--n_merges", "32", "--batch_size", "2",
            "--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--n_kv_head", "1",
            "--eval_problems", "0", "--warmup_steps", "2", "--max_steps", "4"]
TINY_RL = ["--prompts_per_step", "4", "--n_samples", "4", "--max_new_tokens", "16",
           "--max_steps", "1", "--eval_problems", "0"]


def loop_lines(script: str) -> tuple[int, int]:
    """First and last line of the body of train_rl.py's `for step in ...` loop."""
    tree = ast.parse(open(script).read())
    loop = next(n for n in ast.walk(tree)
                if isinstance(n, ast.For) and getattr(n.target, "id", "") == "step")
    return loop.body[0].lineno, loop.end_lineno


def trace_step(init_from: str, out_dir: str, extra: list[str]) -> set:
    """{(file, function first line)} of every call made from the loop body of one step."""
    script = os.path.join(ROOT, "train_rl.py")
    lo, hi = loop_lines(script)
    called = set()

    def tracer(frame, event, arg):
        if event == "call":
            f = frame.f_back
            while f is not None and not (f.f_code.co_filename == script and
                                         f.f_code.co_name == "<module>"):
                f = f.f_back
            if f is not None and lo <= f.f_lineno <= hi:
                called.add((os.path.relpath(frame.f_code.co_filename, ROOT),
                            frame.f_code.co_firstlineno))
        return None

    argv, path = sys.argv, list(sys.path)
    sys.argv = [script, "--init_from", init_from, "--out_dir", out_dir, *TINY_RL, *extra]
    sys.path.insert(0, ROOT)
    said = io.StringIO()     # the run's own output: shown only if it fails
    sys.settrace(tracer)
    try:
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code not in (0, None):
            sys.settrace(None)
            sys.exit(f"error: the traced train_rl.py step failed: {said.getvalue()[-500:]}")
    finally:
        sys.settrace(None)
        sys.argv, sys.path[:] = argv, path
    return called


def count(called: set) -> dict:
    """{file: {function: lines}} for the core files; nested functions inside their parent."""
    out = {}
    for rel in CORE:
        tree = ast.parse(open(os.path.join(ROOT, rel)).read())
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef,
                                                             ast.AsyncFunctionDef))]
        firsts = {ln for f, ln in called if f == rel}
        hit = [n for n in defs if n.lineno in firsts or
               any(d.lineno in firsts for d in n.decorator_list)]
        spans = {n.name: (min([n.lineno] + [d.lineno for d in n.decorator_list]), n.end_lineno)
                 for n in hit}
        # drop a function nested inside another counted one (its lines are the parent's)
        top = {k: (a, b) for k, (a, b) in spans.items()
               if not any(a2 <= a and b <= b2 and (a2, b2) != (a, b)
                          for a2, b2 in spans.values())}
        if rel == "train_rl.py":
            top = {k: v for k, v in top.items() if k in LOGGING}
        top = {k: v for k, v in top.items() if k not in SCHEDULED}
        if top:
            out[rel] = {k: b - a + 1 for k, (a, b) in top.items()}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--init_from", default=None,
                    help="an SFT checkpoint (default: a tiny one trained here in seconds)")
    # any other flag is train_rl.py's (e.g. --algo ppo): that step's path is counted instead
    a, rl_flags = ap.parse_known_args()
    tmp = tempfile.mkdtemp(prefix="reading_path_")
    try:
        init = a.init_from
        if init is None:
            init = os.path.join(tmp, "sft")
            r = subprocess.run([sys.executable, "train_sft.py", *TINY_SFT, "--out_dir", init],
                               cwd=ROOT, capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"error: the tiny SFT run failed: {r.stderr.strip().splitlines()[-1]}")
        per = count(trace_step(init, os.path.join(tmp, "rl"), rl_flags))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lo, hi = loop_lines(os.path.join(ROOT, "train_rl.py"))
    loop = hi - lo + 1
    logging = sum(n for k, n in per.pop("train_rl.py", {}).items())
    logging += sum(per.get("nanorlsp/rlsp.py", {}).pop(k, 0) for k in LOGGING)
    print(f"{'where':26s} lines  functions")
    print(f"{'train_rl.py (the loop)':26s} {loop:5d}")
    for rel, fns in per.items():
        if fns:
            print(f"{rel:26s} {sum(fns.values()):5d}  " +
                  ", ".join(f"{k} {n}" for k, n in sorted(fns.items(), key=lambda x: -x[1])))
    path = loop + sum(sum(f.values()) for f in per.values())
    print(f"reading path: {path} lines; logging (log_step, step_record) {logging} more: "
          f"{path + logging} with it")


if __name__ == "__main__":
    main()
