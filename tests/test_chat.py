"""chat.py, driven through a pipe: the conversation, --no_history, --prompt, --mark, EOF and
Ctrl-C, bad input."""
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import one_error_line
from test_train_rl import ROOT, tiny_ckpt


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_ckpt(tmp_path_factory.mktemp("chat"))


def chat(*args, stdin="", timeout=120):
    return subprocess.run([sys.executable, "chat.py", "--max_new_tokens", "8", "--temperature",
                           "0", *args], cwd=ROOT, input=stdin, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def infos(stderr):
    return [ln for ln in stderr.splitlines() if ln.startswith("[prompt ")]


def prompt_len(info):
    return int(info.split()[1])


def test_piped_conversation_keeps_history(ckpt):
    r = chat("--init_from", ckpt, stdin="What is 2 + 3?\nWhat is 2 + 3?\n")
    assert r.returncode == 0, r.stderr
    a, b = infos(r.stderr)
    # the second turn's prompt holds the first question and reply too
    assert prompt_len(b) > prompt_len(a) + 8


def test_no_history_asks_each_line_alone(ckpt):
    r = chat("--init_from", ckpt, "--no_history", stdin="What is 2 + 3?\n\nWhat is 2 + 3?\n")
    assert r.returncode == 0, r.stderr
    a, b = infos(r.stderr)                    # the blank line is skipped
    assert prompt_len(a) == prompt_len(b)
    replies = r.stdout.splitlines()
    assert len(replies) >= 2 and replies[0] == replies[len(replies) // 2]   # greedy: the same


def test_one_shot_prompt_with_marks(ckpt):
    r = chat("--init_from", ckpt, "--prompt", "What is 7 * 8?", "--mark", stdin="ignored\n")
    assert r.returncode == 0, r.stderr
    (info,) = infos(r.stderr)
    assert "behaviours:" in info and "answer:" in info


def test_eof_and_ctrl_c_leave_cleanly(ckpt):
    r = chat("--init_from", ckpt, stdin="")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    p = subprocess.Popen([sys.executable, "chat.py", "--init_from", ckpt, "--max_new_tokens", "8"],
                         cwd=ROOT,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    p.stdin.write("What is 2 + 3?\n")
    p.stdin.flush()
    info = p.stderr.readline()                # one reply done: now waiting for the next line
    assert info.startswith("[prompt "), info
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and "Traceback" not in err, err


def test_bad_input_is_one_line(tmp_path, ckpt):
    assert "no checkpoint or model" in one_error_line(chat("--init_from", str(tmp_path / "x")))
    assert "--top_p" in one_error_line(chat("--init_from", ckpt, "--top_p", "0"))
    assert "context" in one_error_line(chat("--init_from", ckpt, "--prompt", "1 + " * 400))
