"""
Experiment tracking: what a run already writes to metrics.jsonl and samples.jsonl, mirrored to
Weights & Biases (the convention of nanochat, TRL, OpenRLHF, veRL and nano-aha-moment).

    python train_rl.py --wandb nanorlsp                       # online, after `wandb login`
    WANDB_MODE=offline python train_sft.py --wandb nanorlsp   # no network: the run's files go to
    wandb sync out/sft/wandb/offline-run-*                    # OUT_DIR/wandb/, uploaded later

metrics.jsonl stays the source of truth: the scripts call log() where they append a record to
it and log_samples() with the transcripts of samples.jsonl, so W&B sees the same numbers and
nothing more, each at the record's own `step`; nested dicts are flattened with "/" ("behaviors/
backtracking"); transcripts are one wandb.Table per logging step under "samples".
Footguns: wandb is imported only with --wandb (an optional dependency); without it every function
here is a no-op on run=None. --resume continues the same W&B run (its id: OUT_DIR/wandb_run_id);
the steps logged again after the checkpoint are dropped by W&B with a warning per record.
"""
import os

from nanorlsp.common import UserError, atomic_write

SAMPLE_COLUMNS = ("step", "prompt", "response", "correct", "reward")
ID_FILE = "wandb_run_id"


def flatten(rec: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}, "c": 2} -> {"a/b": 1, "c": 2}; keys become strings (val_level's ints)."""
    out = {}
    for k, v in rec.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def start(project: str | None, out_dir: str, config: dict, resume: bool):
    """A W&B run writing into out_dir/wandb (None when project is None: no tracking). Called on
    the main rank only. UserError (one line) when wandb is missing or cannot start."""
    if not project:
        return None
    try:
        import wandb
    except ImportError:
        raise UserError("--wandb needs the wandb package: pip install wandb") from None
    id_path = os.path.join(out_dir, ID_FILE)
    run_id = open(id_path).read().strip() if resume and os.path.isfile(id_path) else None
    try:
        run = wandb.init(project=project, name=os.path.basename(os.path.abspath(out_dir)),
                         dir=out_dir, config=config, id=run_id,
                         resume="allow" if run_id else None)
    except Exception as e:  # no API key, no network in online mode, a bad project name...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--wandb {project}: wandb could not start ({msg}); run `wandb login`, "
                        "or set WANDB_MODE=offline") from None
    atomic_write(id_path, run.id + "\n")
    return run


def log(run, rec: dict) -> None:
    """One metrics.jsonl record, at its own step."""
    if run is None:
        return
    run.log({k: v for k, v in flatten(rec).items() if k != "step"}, step=rec["step"])


def log_samples(run, step: int, samples: list[dict]) -> None:
    """The step's samples.jsonl records as one table (columns SAMPLE_COLUMNS)."""
    if run is None or not samples:
        return
    import wandb
    table = wandb.Table(columns=list(SAMPLE_COLUMNS),
                        data=[[s.get(c) for c in SAMPLE_COLUMNS] for s in samples])
    run.log({"samples": table}, step=step)


def finish(run) -> None:
    if run is not None:
        run.finish()
