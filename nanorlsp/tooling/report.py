"""
One self-contained HTML page for a set of runs: the standard plots, and transcripts from early,
middle and late steps with the behaviours highlighted.

    python -m nanorlsp.tooling.report out/rl                              # -> out/rl/report.html
    python -m nanorlsp.tooling.report out/rl out/rl_none --out cmp.html   # runs overlaid, side by side
    python -m nanorlsp.tooling.report out/sft                             # an SFT run: its loss curves

    from nanorlsp.tooling.report import build, write_report
    html = build(["out/rl"])                        # the page as a string
    write_report(["out/rl"], "report.html")

Self-contained: the figures are base64 PNGs, the style sheet is inline, and there is no script
and no link to fetch, so the file can be mailed or opened offline and shows the same everywhere.
It reads each run's metrics.jsonl (the source of truth), samples.jsonl and config.json; what it
takes from each: docs/rl.md.
"""
import base64
import html
import io
import json
import os
import time

from matplotlib.figure import Figure

from nanorlsp.behaviors import BEHAVIORS, spans
from nanorlsp.common import ArgParser, positive_int
from nanorlsp.tooling.plot import figures

# highlight colours, one per behaviour (colour-blind safe: Okabe-Ito's orange, blue, green)
COLORS = {"backtracking": "#f5c28a", "verification": "#9cc9ee", "alternatives": "#9fe0c6"}
# the settings shown in the summary table, when the run's config.json has them
SETTINGS = ("task", "init_from", "algo", "explore_reward", "explore_coef", "kl_coef", "n_samples",
            "max_steps")
CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table.summary { border-collapse: collapse; font-size: 0.9em; }
table.summary td, table.summary th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; } figcaption { color: #555; }
.transcript { border: 1px solid #ccc; border-radius: 6px; margin: 0.8em 0; padding: 0.5em 0.8em; }
.transcript .meta { color: #555; font-size: 0.9em; }
.ok { color: #0a7a2f; font-weight: bold; } .wrong { color: #b00020; font-weight: bold; }
pre { white-space: pre-wrap; word-break: break-word; background: #f7f7f7; padding: 0.5em;
      margin: 0.3em 0; font-size: 0.88em; }
mark { border-radius: 3px; padding: 0 1px; }
.ctl { color: #999; }
""" + "".join(f"mark.{b} {{ background: {c}; }}\n" for b, c in COLORS.items())


# -----------------------------------------------------------------------------
# reading a run

def _jsonl(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    return [json.loads(line) for line in open(path) if line.strip()]


def load_run(run_dir: str) -> dict:
    """A run's logs: name, args (config.json), metrics rows, samples. FileNotFoundError when
    there is no metrics.jsonl (not a training run's directory)."""
    if not os.path.isfile(os.path.join(run_dir, "metrics.jsonl")):
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (not a train_sft.py / train_rl.py run)")
    cfg_path = os.path.join(run_dir, "config.json")
    args = json.load(open(cfg_path)).get("args", {}) if os.path.isfile(cfg_path) else {}
    rows = _jsonl(os.path.join(run_dir, "metrics.jsonl"))
    return {"name": os.path.basename(os.path.abspath(run_dir)), "dir": run_dir, "args": args,
            "rows": rows, "rl": any("reward" in r for r in rows),
            "samples": _jsonl(os.path.join(run_dir, "samples.jsonl"))}


def pick_steps(samples: list[dict]) -> list[int]:
    """The first, middle and last step that have transcripts (fewer when fewer were logged)."""
    steps = sorted({s["step"] for s in samples})
    if not steps:
        return []
    return sorted({steps[0], steps[len(steps) // 2], steps[-1]})


# -----------------------------------------------------------------------------
# pieces of the page

def _text(s: str) -> str:
    """HTML-escaped text; control characters (a random model's replies have them, and NUL is
    not allowed in HTML) shown as \\xNN."""
    out = []
    for ch in s:
        if ch in "\n\t" or ch >= " " and ch != "\x7f":
            out.append(html.escape(ch))
        else:
            out.append(f'<span class="ctl">\\x{ord(ch):02x}</span>')
    return "".join(out)


def highlight(text: str, task: str | None) -> str:
    """The reply as HTML with each behaviour span (behaviors.spans) in a <mark class=NAME>.
    Spans may overlap (two keyword patterns on the same words): the text is cut at every span
    edge and each piece is marked by the first behaviour covering it, titled with all of them."""
    sp = spans(text, task)
    cuts = sorted({0, len(text), *[s for s, _, _ in sp], *[e for _, e, _ in sp]})
    out = []
    for a, b in zip(cuts, cuts[1:]):
        cover = [name for s, e, name in sp if s <= a and b <= e]
        piece = _text(text[a:b])
        if cover:
            names = list(dict.fromkeys(cover))
            out.append(f'<mark class="{names[0]}" title="{", ".join(names)}">{piece}</mark>')
        else:
            out.append(piece)
    return "".join(out)


def _png(fig: Figure, dpi: int = 90) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(fig: Figure, caption: str) -> str:
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{_png(fig)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def sft_figure(runs: list[dict]) -> Figure:
    """SFT runs: training loss and held-out loss (left), held-out greedy accuracy (right)."""
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for run in runs:
        train = [r for r in run["rows"] if "loss" in r]
        val = [r for r in run["rows"] if "val_loss" in r]
        line, = ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train],
                             label=f"{run['name']}: train")
        ax_loss.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o--",
                     color=line.get_color(), label=f"{run['name']}: held-out")
        acc = [r for r in val if "val_acc" in r]
        ax_acc.plot([r["step"] for r in acc], [r["val_acc"] for r in acc], "o-", label=run["name"])
    ax_loss.set(title="SFT loss (assistant tokens)", xlabel="step", ylabel="nats per token")
    ax_acc.set(title="held-out accuracy (greedy)", xlabel="step", ylabel="fraction correct",
               ylim=(0, 1))
    ax_loss.legend()
    ax_acc.legend()
    return fig


FIGURE_CAPTIONS = {
    "reward": "Reward: the total and its parts (verifier outcome, exploration, repetition guard).",
    "accuracy": "Accuracy of the rollouts (temperature 1) and greedy held-out accuracy.",
    "length": "Response length: median and the 10-90 percentile band.",
    "behaviors": "Share of rollouts that backtrack, verify, explore alternatives.",
    "kl": "KL to the SFT reference and policy entropy.",
    "diagnostics": "Diagnostics for a reward that does not move.",
}


def _summary(runs: list[dict]) -> str:
    cols = [k for k in SETTINGS if any(k in r["args"] for r in runs)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["run", *cols, "steps", "last"])
    body = []
    for run in runs:
        steps = [r for r in run["rows"] if "reward" in r or "loss" in r]
        last = steps[-1] if steps else {}
        evals = [r for r in run["rows"] if "val_acc" in r]
        if run["rl"]:
            figs = [f"reward {last.get('reward', float('nan')):+.3f}",
                    f"acc {last.get('acc', float('nan')):.3f}",
                    f"len {last.get('len_mean', float('nan')):.0f}"]
        else:
            figs = [f"loss {last.get('loss', float('nan')):.4f}"] if last else []
        if evals:
            figs.append(f"held-out acc {evals[0]['val_acc']:.3f} (step {evals[0]['step']}) -> "
                        f"{evals[-1]['val_acc']:.3f} (step {evals[-1]['step']})")
        cells = [run["name"], *[run["args"].get(c, "") for c in cols],
                 last.get("step", 0), ", ".join(figs)]
        body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return f'<table class="summary"><tr>{head}</tr>{"".join(body)}</table>'


def _transcripts(run: dict, per_step: int) -> str:
    task = run["args"].get("task")
    out = []
    steps = pick_steps(run["samples"])
    for where, step in zip(("early", "middle", "late") if len(steps) == 3 else
                           ("early", "late") if len(steps) == 2 else ("",), steps):
        out.append(f"<h3>{html.escape(run['name'])}: step {step}"
                   f"{f' ({where})' if where else ''}</h3>")
        for s in [s for s in run["samples"] if s["step"] == step][:per_step]:
            mark = ('<span class="ok">correct</span>' if s.get("correct") else
                    '<span class="wrong">wrong</span>')
            reward = f" | reward {s['reward']:+.3f}" if isinstance(s.get("reward"), float) else ""
            out.append(f'<div class="transcript"><div class="meta">step {step} | {mark}{reward}'
                       f'</div><b>prompt</b><pre>{_text(str(s.get("prompt", "")))}</pre>'
                       f'<b>response</b><pre class="response">'
                       f'{highlight(str(s.get("response", "")), task)}</pre></div>')
    if not steps:
        out.append(f"<p>{html.escape(run['name'])}: no samples.jsonl (train_rl.py writes one; "
                   "--log_samples 0 turns it off)</p>")
    return "\n".join(out)


# -----------------------------------------------------------------------------
# the page

def build(run_dirs: list[str], labels: list[str] | None = None, per_step: int = 2) -> str:
    """The report for these runs as one HTML string."""
    runs = [load_run(d) for d in run_dirs]
    if labels:
        if len(labels) != len(runs):
            raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
        for run, name in zip(runs, labels):
            run["name"] = name
    rl, sft = [r for r in runs if r["rl"]], [r for r in runs if not r["rl"]]
    names = ", ".join(r["name"] for r in runs)
    parts = [f"<h1>nanorlsp report: {html.escape(names)}</h1>",
             f"<p>{html.escape(time.strftime('%Y-%m-%d %H:%M'))} | runs: "
             + ", ".join(f"<code>{html.escape(r['dir'])}</code>" for r in runs) + "</p>",
             "<h2>Summary</h2>", _summary(runs)]
    if rl:
        parts.append("<h2>RL curves</h2>")
        figs = figures([r["dir"] for r in rl], [r["name"] for r in rl])
        parts += [_img(fig, FIGURE_CAPTIONS.get(name, name)) for name, fig in figs.items()]
    if sft:
        parts += ["<h2>SFT curves</h2>", _img(sft_figure(sft), "SFT: loss and held-out accuracy.")]
    legend = " ".join(f'<mark class="{b}">{b}</mark>' for b in BEHAVIORS)
    parts += ["<h2>Transcripts</h2>",
              f"<p>Sampled replies (samples.jsonl) at the first, middle and last logged step. "
              f"Highlighted: {legend} (nanorlsp/behaviors.py; hover a mark for its name).</p>"]
    parts += [_transcripts(r, per_step) for r in rl or runs]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>nanorlsp report: {html.escape(names)}</title><style>{CSS}</style></head>"
            "<body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_report(run_dirs: list[str], out: str | None = None, labels: list[str] | None = None,
                 per_step: int = 2) -> str:
    """Write the report (default FIRST_RUN/report.html); returns its path."""
    out = out or os.path.join(run_dirs[0], "report.html")
    page = build(run_dirs, labels, per_step)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(page)
    return out


if __name__ == "__main__":
    ap = ArgParser(description="One self-contained HTML report for training runs.")
    ap.add_argument("runs", nargs="+", help="run directories (out/rl ...)")
    ap.add_argument("--out", default=None, help="the HTML file (default: FIRST_RUN/report.html)")
    ap.add_argument("--per_step", type=positive_int, default=2, help="transcripts per chosen step")
    a = ap.parse_args()
    try:
        print(write_report(a.runs, a.out, per_step=a.per_step))
    except (FileNotFoundError, ValueError, KeyError) as e:
        ap.exit(1, f"error: {e}\n")
