"""
Plot RL runs from their metrics.jsonl: the curves in which RLSP's emergence shows.

    python -m nanorlsp.tooling.plot out/rl                       # PNGs into out/rl/plots
    python -m nanorlsp.tooling.plot out/rl out/rl_none --out plots/   # runs overlaid, with a legend

    from nanorlsp.tooling.plot import figures, plot_runs
    figs = figures(["out/rl", "out/rl_none"])   # {"reward": Figure, ...}: what the notebooks show
    plot_runs(["out/rl"], "plots/")             # the same figures, saved as PNG (the CLI)
    # also overview_figure, levels_figure, strength_figure, passk_figure (docs/rl.md)

Figures: reward, accuracy, length, behaviors, kl, diagnostics (what each draws: docs/rl.md).
They are built with matplotlib's object API (matplotlib.figure.Figure), never pyplot: no backend
is selected and no global figure state is touched, so this works headless (CI, servers) and
inside a notebook without switching its inline backend.
"""
import argparse
import json
import os

from matplotlib.figure import Figure

NAMES = ("reward", "accuracy", "length", "behaviors", "kl", "diagnostics")
# (metrics.jsonl key, panel title, y label) of the diagnostics figure
DIAGNOSTICS = (("flat_groups", "groups with all-equal rewards", "share of groups"),
               ("no_answer", "replies with no answer", "share of rollouts"),
               ("truncated", "replies cut at max_new_tokens", "share of rollouts"),
               ("logp_diff", "|sampler - training log-prob|", "nats per token"),
               ("grad_norm", "gradient norm (before clipping)", "L2 norm"),
               ("clip_frac", "PPO clip fraction", "share of tokens"))


def load_metrics(run_dir: str) -> tuple[list[dict], list[dict]]:
    """(per-step records, eval records) of a run's metrics.jsonl."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no metrics.jsonl (is {run_dir} a train_rl.py run?)")
    rows = [json.loads(line) for line in open(path) if line.strip()]
    return [r for r in rows if "reward" in r], [r for r in rows if "val_acc" in r]


def _series(rows, key):
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def figures(run_dirs: list[str], labels: list[str] | None = None) -> dict[str, Figure]:
    """The standard figures for one or more runs, overlaid: {name: Figure} in NAMES order.
    labels: legend names (default: each run directory's base name)."""
    labels = labels or [os.path.basename(os.path.normpath(d)) or d for d in run_dirs]
    if len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs")
    runs = {name: load_metrics(d) for name, d in zip(labels, run_dirs)}
    figs = {}

    fig = Figure(figsize=(16, 3.4), layout="constrained")
    axes = fig.subplots(1, 4)
    for ax, key, title in zip(axes, ("reward", "outcome", "explore", "repetition"),
                              ("total reward", "outcome (verifier)", "exploration", "repetition")):
        for name, (steps, _) in runs.items():
            ax.plot(*_series(steps, key), label=name)
        ax.set(title=title, xlabel="RL step", ylabel="mean over rollouts")
    axes[0].legend()
    figs["reward"] = fig

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for name, (steps, evals) in runs.items():
        line, = ax.plot(*_series(steps, "acc"), alpha=0.5, label=f"{name}: rollouts (T=1)")
        ax.plot(*_series(evals, "val_acc"), "o-", color=line.get_color(),
                label=f"{name}: held-out (greedy)")
    ax.set(title="accuracy", xlabel="RL step", ylabel="fraction correct", ylim=(0, 1))
    ax.legend()
    figs["accuracy"] = fig

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for name, (steps, _) in runs.items():
        x, p50 = _series(steps, "len_p50")
        line, = ax.plot(x, p50, label=f"{name}: median")
        ax.fill_between(x, _series(steps, "len_p10")[1], _series(steps, "len_p90")[1],
                        color=line.get_color(), alpha=0.2, label=f"{name}: 10-90%")
    ax.set(title="response length", xlabel="RL step", ylabel="tokens")
    ax.legend()
    figs["length"] = fig

    fig = Figure(figsize=(14, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, b in zip(axes, ("backtracking", "verification", "alternatives")):
        for name, (steps, _) in runs.items():
            ax.plot([r["step"] for r in steps], [r["behaviors"][b] for r in steps], label=name)
        ax.set(title=b, xlabel="RL step", ylabel="share of rollouts", ylim=(0, 1))
    axes[0].legend()
    figs["behaviors"] = fig

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, title in zip(axes, ("kl", "entropy"), ("KL to the SFT reference", "entropy")):
        for name, (steps, _) in runs.items():
            ax.plot(*_series(steps, key), label=name)
        ax.set(title=title, xlabel="RL step", ylabel="nats per token")
    axes[0].legend()
    figs["kl"] = fig

    fig = Figure(figsize=(16, 6.4), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    for ax, (key, title, ylabel) in zip(axes, DIAGNOSTICS):
        for name, (steps, _) in runs.items():
            ax.plot(*_series(steps, key), label=name)
        ax.set(title=title, xlabel="RL step", ylabel=ylabel)
        if key == "logp_diff":
            ax.set_yscale("symlog", linthresh=1e-6)
    axes[0].legend()
    figs["diagnostics"] = fig
    return figs


def overview_figure(run_dir: str, title: str | None = None) -> Figure:
    """One figure of a run for a front page: accuracy (rollouts at T = 1 and greedy held-out),
    reply length (median and 10-90% band) and the behaviour shares of the rollouts over RL steps."""
    steps, evals = load_metrics(run_dir)
    fig = Figure(figsize=(15, 3.6), layout="constrained")
    ax_acc, ax_len, ax_beh = fig.subplots(1, 3)
    ax_acc.plot(*_series(steps, "acc"), alpha=0.6, label="rollouts (T = 1)")
    ax_acc.plot(*_series(evals, "val_acc"), "o-", label="held-out (greedy)")
    ax_acc.set(title="accuracy", xlabel="RL step", ylabel="fraction correct", ylim=(0, 1))
    ax_acc.legend()
    x, p50 = _series(steps, "len_p50")
    ax_len.plot(x, p50, label="median")
    ax_len.fill_between(x, _series(steps, "len_p10")[1], _series(steps, "len_p90")[1], alpha=0.25,
                        label="10-90%")
    ax_len.set(title="reply length (rollouts)", xlabel="RL step", ylabel="tokens")
    ax_len.legend()
    for b in ("backtracking", "verification", "alternatives"):
        ax_beh.plot([r["step"] for r in steps], [r["behaviors"][b] for r in steps], label=b)
    ax_beh.set(title="behaviours (share of rollouts)", xlabel="RL step", ylabel="share",
               ylim=(0, 1))
    ax_beh.legend()
    if title:
        fig.suptitle(title)
    return fig


def levels_figure(per_config: dict, title: str, level_name: str = "level") -> Figure:
    """Tokens vs accuracy by difficulty (adaptive thinking: fewer tokens where easy, as many as
    needed where hard). per_config: {label: (levels, accuracy per level, reply tokens per
    level)}. Three panels: accuracy by level, tokens by level, and accuracy against tokens with
    one marker per (config, level), levels joined by a line and labelled."""
    fig = Figure(figsize=(16, 4), layout="constrained")
    ax_acc, ax_tok, ax_xy = fig.subplots(1, 3)
    for label, (levels, acc, tok) in per_config.items():
        line, = ax_acc.plot(levels, acc, "o-", label=label)
        ax_tok.plot(levels, tok, "o-", color=line.get_color(), label=label)
        ax_xy.plot(tok, acc, "o-", color=line.get_color(), label=label, alpha=0.8)
        for lv, x, y in zip(levels, tok, acc):
            ax_xy.annotate(str(lv), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ticks = sorted({lv for levels, _, _ in per_config.values() for lv in levels})
    ax_acc.set_xticks(ticks)
    ax_tok.set_xticks(ticks)
    ax_acc.set(title="accuracy", xlabel=level_name, ylabel="fraction correct", ylim=(0, 1.02))
    ax_tok.set(title="reply tokens", xlabel=level_name, ylabel="tokens")
    ax_tok.set_yscale("log")
    ax_xy.set(title=f"accuracy vs tokens (markers: {level_name})", xlabel="reply tokens",
              ylabel="fraction correct", xscale="log", ylim=(0, 1.02))
    ax_acc.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def strength_figure(points: list[dict], title: str) -> Figure:
    """Everything against the exploration strength S (coef / L_typical; RLSP study v2). points:
    one per config, mean over its seeds, {"S", "acc", "raw", "effective", "truncated",
    "no_answer", "behaviors": {name: share}}, S = 0 for the verifier-only run. Four panels:
    greedy accuracy; reasoning tokens raw and effective (a gap is padding the guard did not pay
    for); truncated and no-answer shares (replies that stop answering); behaviour shares. The x
    axis is symlog, linear below 0.01, so S = 0 has a place."""
    pts = sorted(points, key=lambda p: p["S"])
    xs = [p["S"] for p in pts]
    fig = Figure(figsize=(16, 3.6), layout="constrained")
    ax_acc, ax_len, ax_bad, ax_beh = fig.subplots(1, 4)
    ax_acc.plot(xs, [p["acc"] for p in pts], "o-")
    ax_acc.set(title="greedy pass@1", ylabel="fraction correct", ylim=(0, 1.02))
    ax_len.plot(xs, [p["raw"] for p in pts], "o-", label="raw")
    ax_len.plot(xs, [p["effective"] for p in pts], "s--", label="effective (not repeated)")
    ax_len.set(title="reasoning tokens (greedy)", ylabel="tokens")
    ax_len.legend(fontsize=7)
    ax_bad.plot(xs, [p["truncated"] for p in pts], "o-", label="truncated")
    ax_bad.plot(xs, [p["no_answer"] for p in pts], "s--", label="no answer")
    ax_bad.set(title="replies that stop answering (greedy)", ylabel="share", ylim=(0, 1.02))
    ax_bad.legend(fontsize=7)
    for b in sorted({b for p in pts for b in p["behaviors"]}):
        ax_beh.plot(xs, [p["behaviors"].get(b, float("nan")) for p in pts], "o-", label=b)
    ax_beh.set(title="behaviours (T = 1 samples)", ylabel="share", ylim=(0, 1.02))
    ax_beh.legend(fontsize=7)
    for ax in fig.axes:
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlim(left=0)
        ax.set_xlabel("strength S = coef / L_typical")
    fig.suptitle(title)
    return fig


def passk_figure(curves: dict, title: str) -> Figure:
    """pass@k against k (log axis) for each model: {label: (ks, pass@k values)}. Where an RL
    curve starts above the base model's and ends below it, RL sharpened what the base model
    could already sample rather than widened it (Yue et al. 2025)."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for label, (ks, ys) in curves.items():
        ax.plot(ks, ys, "-", label=label)
    ax.set(title=title, xlabel="k (samples per problem)", ylabel="pass@k", xscale="log",
           ylim=(0, 1.02))
    ax.legend(fontsize=7)
    return fig


def plot_runs(run_dirs: list[str], out_dir: str | None = None, labels: list[str] | None = None,
              dpi: int = 110) -> list[str]:
    """Draw the standard figures for one or more runs to out_dir/NAME.png; returns the paths."""
    out_dir = out_dir or os.path.join(run_dirs[0], "plots")
    figs = figures(run_dirs, labels)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, fig in figs.items():
        p = os.path.join(out_dir, f"{name}.png")
        fig.savefig(p, dpi=dpi)
        paths.append(p)
    return paths


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Plot train_rl.py runs from their metrics.jsonl.")
    ap.add_argument("runs", nargs="+", help="run directories (out/rl ...)")
    ap.add_argument("--out", default=None, help="folder for the PNGs (default: FIRST_RUN/plots)")
    a = ap.parse_args()
    try:
        for p in plot_runs(a.runs, a.out):
            print(p)
    except FileNotFoundError as e:
        ap.exit(1, f"error: {e}\n")
