"""nanorlsp.tooling.plot draws every standard figure, overlaying several runs."""
import json
import subprocess
import sys

import pytest

from nanorlsp.tooling.plot import plot_runs


def fake_run(d, n=6):
    d.mkdir()
    with open(d / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"step": 0, "val_acc": 0.5}) + "\n")
        for s in range(1, n + 1):
            f.write(json.dumps({"step": s, "reward": s / n, "outcome": 0.5, "explore": -0.1,
                                "repetition": 0.0, "acc": s / n, "len_p10": 10, "len_p50": 20 + s,
                                "len_p90": 40, "kl": 0.01 * s, "entropy": 0.2,
                                "flat_groups": 0.5, "no_answer": 0.1, "truncated": 0.0,
                                "logp_diff": 1e-3, "grad_norm": 1.5, "clip_frac": 0.0,
                                "behaviors": {"backtracking": 0.1, "verification": 0.2,
                                              "alternatives": 0.0}}) + "\n")
        f.write(json.dumps({"step": n, "val_acc": 0.8}) + "\n")
    return str(d)


def test_plot_runs_overlay(tmp_path):
    a, b = fake_run(tmp_path / "rlsp"), fake_run(tmp_path / "none")
    paths = plot_runs([a, b], str(tmp_path / "plots"))
    names = sorted(p.rsplit("/", 1)[1] for p in paths)
    assert names == ["accuracy.png", "behaviors.png", "diagnostics.png", "kl.png", "length.png",
                     "reward.png"]
    for p in paths:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_cli_missing_run(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nanorlsp.tooling.plot", str(tmp_path / "nope")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "no metrics.jsonl" in r.stderr
    with pytest.raises(FileNotFoundError):
        plot_runs([str(tmp_path / "nope")])


def test_levels_figure(tmp_path):
    from nanorlsp.tooling.plot import levels_figure
    fig = levels_figure({"rlsp": ([1, 2, 3], [1.0, 0.9, 0.7], [24, 40, 60]),
                         "budget": ([1, 2, 3], [1.0, 0.9, 0.7], [6, 20, 60])}, "arith")
    assert len(fig.axes) == 3 and len(fig.axes[2].lines) == 2
    fig.savefig(tmp_path / "levels.png")
    assert (tmp_path / "levels.png").read_bytes()[:4] == b"\x89PNG"


def test_strength_figure(tmp_path):
    """The sweep's figure: points sorted by strength (given out of order here), S = 0 kept on a
    symlog axis starting at 0, raw and effective lengths as two lines."""
    from nanorlsp.tooling.plot import strength_figure
    def pt(S, acc, raw, eff):
        return dict(S=S, acc=acc, raw=raw, effective=eff, truncated=0.0, no_answer=0.0,
                    behaviors={"verification": acc / 2})
    fig = strength_figure([pt(1, 0.7, 90, 60), pt(0, 0.8, 20, 20), pt(0.1, 0.85, 40, 39)], "arith")
    acc, length, bad, beh = fig.axes
    assert list(acc.lines[0].get_xdata()) == [0, 0.1, 1]
    assert list(acc.lines[0].get_ydata()) == [0.8, 0.85, 0.7]
    assert [list(x.get_ydata()) for x in length.lines] == [[20, 40, 90], [20, 39, 60]]
    assert acc.get_xscale() == "symlog" and acc.get_xlim()[0] == 0
    fig.savefig(tmp_path / "strength.png")
    assert (tmp_path / "strength.png").read_bytes()[:4] == b"\x89PNG"


def test_overview_figure(tmp_path):
    from nanorlsp.tooling.plot import overview_figure
    fig = overview_figure(fake_run(tmp_path / "run"), "a run")
    assert len(fig.axes) == 3 and len(fig.axes[2].lines) == 3
