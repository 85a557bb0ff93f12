"""python -m nanorlsp.tooling.report: one self-contained HTML page per set of runs (nanorlsp/tooling/report.py).

- the pieces: which steps' transcripts are shown, behaviour highlighting (escaping, overlaps,
  control characters), a page with no outside reference
- a real train_rl.py run and a train_sft.py run through the CLI
- the page in a real headless browser (Chromium, where installed; skipped otherwise): every
  embedded figure decodes, the highlights and transcripts are in the rendered DOM, and a
  screenshot is not blank

    python -m pytest tests/test_report.py -q     # ~30 s on 2 busy cores
"""
import html
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from helpers import one_error_line
from nanorlsp.tooling import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
N_RL_FIGURES = 6   # plot.NAMES

# arith's markers: a line starting "wait," is backtracking, "check:" verification
REPLY = "12+7=18\nwait, 12+7=19\ncheck: 19-7=12\n\\boxed{19}"


def write_jsonl(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def fake_rl_run(d, task="arith", steps=9, per_step=3):
    """A run directory as train_rl.py leaves it, with replies whose behaviours are known."""
    os.makedirs(d, exist_ok=True)
    json.dump({"args": {"task": task, "algo": "reinforce", "explore_reward": "rlsp"}},
              open(os.path.join(d, "config.json"), "w"))
    rows = [{"step": 0, "val_acc": 0.2}]
    for s in range(1, steps + 1):
        rows.append({"step": s, "reward": 0.1 * s, "outcome": 0.1 * s, "explore": 0.0,
                     "repetition": 0.0, "acc": 0.1 * s, "len_mean": 40.0 + s, "len_p10": 30.0,
                     "len_p50": 40.0, "len_p90": 50.0, "kl": 0.01 * s, "entropy": 1.0,
                     "behaviors": {"backtracking": 0.1, "verification": 0.2, "alternatives": 0.0}})
    rows.append({"step": steps, "val_acc": 0.6})
    write_jsonl(os.path.join(d, "metrics.jsonl"), rows)
    samples = [{"step": s, "prompt": f"What is 12 + 7? <b>#{s}.{j}</b>",
                "response": REPLY if j == 0 else f"plain reply {s}.{j}\x00\n\\boxed{{19}}",
                "correct": j == 0, "reward": 1.0 if j == 0 else -0.5}
               for s in range(1, steps + 1) for j in range(per_step)]
    write_jsonl(os.path.join(d, "samples.jsonl"), samples)
    return str(d)


def strip_tags(s):
    return html.unescape(re.sub(r"<[^>]+>", "", s))


def test_pick_steps():
    assert report.pick_steps([{"step": s} for s in range(1, 10) for _ in range(2)]) == [1, 5, 9]
    assert report.pick_steps([{"step": 3}, {"step": 7}]) == [3, 7]
    assert report.pick_steps([{"step": 4}]) == [4] and report.pick_steps([]) == []


def test_highlight_marks_each_behaviour_and_keeps_the_text():
    out = report.highlight(REPLY, "arith")
    assert '<mark class="backtracking" title="backtracking">wait, 12+7=19</mark>' in out
    assert '<mark class="verification" title="verification">check: 19-7=12</mark>' in out
    assert strip_tags(out) == REPLY
    # natural text: keyword spans, overlapping ones ("let me double-check" and "double-check")
    text = "Wait, that is wrong. Let me double-check: <x> & y. Alternatively, add first."
    out = report.highlight(text, "gsm8k")
    assert strip_tags(out) == text and "&lt;x&gt; &amp; y" in out
    assert {m for m in re.findall(r'<mark class="(\w+)"', out)} == set(report.BEHAVIORS)
    # control characters are shown, not written into the page (NUL is not allowed in HTML)
    out = report.highlight("a\x00b\x1bc\nd", None)
    assert "\x00" not in out and "\x1b" not in out and "\\x00" in out and "\\x1b" in out


def test_page_is_self_contained(tmp_path):
    d = fake_rl_run(tmp_path / "rl")
    page = report.build([d], per_step=2)
    imgs = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == N_RL_FIGURES and all(len(b) > 1000 for b in imgs)
    # nothing to fetch: no remote or relative resource, no script, no stylesheet link
    assert not re.search(r'(src|href)="(?!data:)', page) and "<script" not in page
    assert "<link" not in page
    # early / middle / late transcripts, per_step of each, highlighted, prompts escaped
    for where, step in (("early", 1), ("middle", 5), ("late", 9)):
        assert f"step {step} ({where})</h3>" in page
        assert f"&lt;b&gt;#{step}.1&lt;/b&gt;" in page and f"#{step}.2" not in page
    assert page.count('<mark class="backtracking" title') == 3
    assert page.count('<span class="ok">correct</span>') == 3
    assert "held-out acc 0.200 (step 0) -&gt; 0.600 (step 9)" in page


def test_two_runs_overlaid_and_labels(tmp_path):
    a, b = fake_rl_run(tmp_path / "a"), fake_rl_run(tmp_path / "b", task="countdown", steps=2)
    page = report.build([a, b], labels=["rlsp", "none"])
    assert "nanorlsp report: rlsp, none" in page
    assert "rlsp: step 5 (middle)" in page and "none: step 2 (late)" in page
    assert page.count("<img ") == N_RL_FIGURES       # the runs share the figures
    with pytest.raises(ValueError, match="labels"):
        report.build([a, b], labels=["one"])


def run_report(*args):
    return subprocess.run([sys.executable, "-m", "nanorlsp.tooling.report", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """A 3-step train_rl.py run and a 4-step train_sft.py run with their own logs."""
    from test_tracking import RL, SFT, run, tiny_sft_checkpoint
    root = tmp_path_factory.mktemp("report_runs")
    init = tiny_sft_checkpoint(root / "init")
    rl, sft = str(root / "rl"), str(root / "sft")
    run("train_rl.py", *RL, "--init_from", init, "--out_dir", rl)
    run("train_sft.py", *SFT, "--out_dir", sft)
    return rl, sft


@pytest.mark.slow
def test_cli_on_real_runs(real_runs, tmp_path):
    rl, sft = real_runs
    r = run_report(rl)
    assert r.returncode == 0, r.stderr
    path = os.path.join(rl, "report.html")
    assert r.stdout.strip() == path
    page = open(path, encoding="utf-8").read()
    assert page.count("<img ") == N_RL_FIGURES
    assert "step 1 (early)" in page and "step 2 (middle)" in page and "step 3 (late)" in page
    # an SFT run beside it: its loss figure, its settings in the summary
    out = str(tmp_path / "both.html")
    r = run_report(rl, sft, "--out", out, "--per_step", "1")
    assert r.returncode == 0, r.stderr
    page = open(out, encoding="utf-8").read()
    assert page.count("<img ") == N_RL_FIGURES + 1 and "SFT curves" in page
    assert "<td>sft</td><td>arith</td>" in page
    # mistakes: one line each
    assert "no metrics.jsonl" in one_error_line(run_report(str(tmp_path / "nowhere")))
    assert "--per_step" in one_error_line(run_report(rl, "--per_step", "0"))


# -----------------------------------------------------------------------------
# a real browser

def browser():
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


# appended to a copy of the page for the test only (the report itself has no script): after
# load, how many images decoded, as an attribute the dumped DOM shows
PROBE = """<script>window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images", ok + "/" + imgs.length);
  document.body.setAttribute("data-marks", document.querySelectorAll("pre mark").length);
});</script>"""


def headless(exe, *args):
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-dev-shm-usage", *args],
                          capture_output=True, text=True, timeout=120)


def test_report_renders_in_a_headless_browser(tmp_path):
    exe = browser()
    if exe is None:
        pytest.skip(f"no headless browser ({', '.join(BROWSERS)}) installed")
    d = fake_rl_run(tmp_path / "rl")
    path = report.write_report([d], str(tmp_path / "report.html"))
    probe = tmp_path / "probe.html"
    probe.write_text(open(path, encoding="utf-8").read().replace("</body>", PROBE + "</body>"),
                     encoding="utf-8")
    r = headless(exe, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert r.returncode == 0 and "<body" in r.stdout, r.stderr[-2000:]
    dom = r.stdout
    assert f'data-images="{N_RL_FIGURES}/{N_RL_FIGURES}"' in dom, re.findall(r"data-\w+=\"[^\"]*\"", dom)
    assert 'data-marks="6"' in dom           # 3 steps x (backtracking + verification)
    assert "wait, 12+7=19</mark>" in dom and "step 9 (late)" in dom
    # and drawn: a screenshot of the page's top is not one flat colour
    shot = tmp_path / "shot.png"
    r = headless(exe, "--window-size=1200,2400", f"--screenshot={shot}", probe.as_uri())
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    from matplotlib.image import imread
    img = imread(str(shot))
    assert img.shape[0] == 2400 and img.shape[1] == 1200 and img[..., :3].std() > 0.05
