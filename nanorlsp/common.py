"""
Small shared pieces of the scripts and the library: one-line CLI and checkpoint errors, device
and dtype choice, autocast, atomic writes, run logs, unwrapping DDP / FSDP / compile wrappers.

Nothing here imports another nanorlsp module, so every module may import it: checkpoint.py and
hf.py both take CheckpointError and unwrap from here (checkpoint.py imports hf.py, never the
other way round; tests/test_imports.py keeps the package's imports acyclic).
"""
import argparse
import contextlib
import json
import math
import os
import sys
import tempfile

import torch


class UserError(Exception):
    """A mistake in the user's input (flag, file, checkpoint): printed as one line, no traceback."""


class CheckpointError(Exception):
    """A checkpoint that is missing, corrupt, truncated or does not fit: one clear line.
    (Defined here, re-exported by nanorlsp.checkpoint, where users import it from.)"""


class ArgParser(argparse.ArgumentParser):
    """argparse whose errors are one line ("script.py: error: ...") and exit 2. Abbreviated
    flags are refused: on --resume a typed --max_step 300 is not a name explicit_flags knows,
    so the run's saved value silently replaced it."""

    def __init__(self, *a, **kw):
        kw.setdefault("allow_abbrev", False)
        super().__init__(*a, **kw)

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def explicit_flags(argv: list[str]) -> set[str]:
    """Names of the --flags given on the command line (so --resume can tell a flag the user
    typed from an argparse default)."""
    return {a[2:].split("=")[0] for a in argv if a.startswith("--")}


def die(msg: str, code: int = 1):
    """Print one clear error line and exit non-zero (for user mistakes, not bugs)."""
    sys.stderr.write(f"error: {msg}\n")
    sys.exit(code)


def positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s}")
    return v


def nonneg_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {s}")
    return v


def finite_float(s: str) -> float:
    """A float flag's type: nan and inf are refused when parsed (a nan --explore_coef made every
    step's reward non-finite, every update was skipped, and the run still reported success)."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {s}")
    return v


def comma_list(choices):
    """A flag's type: a comma list of names from `choices`, each at most once, as a tuple
    (--lora_targets q_proj,v_proj)."""
    def parse(s: str) -> tuple:
        names = tuple(x.strip() for x in s.split(",") if x.strip())
        if not names or set(names) - set(choices) or len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(f"a comma list of {', '.join(choices)} (each at "
                                             f"most once), got {s!r}")
        return names
    return parse


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is available")
    return name


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices at a useful rate: bf16 units (AVX512-BF16, AMX
    on x86; the bf16 extension on Arm) or AVX-512, where oneDNN converts to float32 on the fly.
    An AVX2-only x86 has neither: torch falls back to a scalar bf16 GEMM, measured at 0.3 GFLOP/s
    against 171 for float32 on a 2-core EPYC. Unknown (no /proc/cpuinfo): True, nothing to say."""
    if torch.backends.cpu.get_cpu_capability() == "AVX512":
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return True
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """The compute dtype for autocast. auto: bfloat16 on a GPU that supports it, else float32.

    On CPU, auto means float32: even with bf16 matmul units (AVX512-BF16) the tiny model's
    matmuls are too small to gain much (measured +5-10% tokens/s, see the README), and float32
    keeps resume bit-exact; pass --dtype bfloat16 to use bf16 autocast on CPU anyway (on a CPU
    without fast bf16 this says, in one line on stderr, that it is hundreds of times slower).
    """
    if name == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]
    # rank 0 only: under torchrun every rank resolves its dtype
    if (dtype == torch.bfloat16 and device.startswith("cpu") and os.environ.get("RANK", "0") == "0"
            and not cpu_has_fast_bf16()):
        sys.stderr.write("warning: --dtype bfloat16 on a CPU without bf16 units (no AVX512-BF16, "
                         "AMX or AVX-512): each bf16 matmul runs ~500x slower than float32 here; "
                         "--dtype float32 (what auto picks on CPU) is the fast choice\n")
    return dtype


def autocast(device: str, dtype: torch.dtype):
    """bf16 autocast for matmuls (weights stay float32 masters), or nothing for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def atomic_write(path: str, data) -> None:
    """Write `data` to `path` atomically: a temp file in the same directory, then os.replace
    (atomic on POSIX), so a crash or kill mid-write leaves the old file intact, never half of
    the new one. data: str, bytes, or a function that writes to the temp path it is given."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    # "<name>.tmp.XXXX": torch.save derives its archive name from the file name and refuses a
    # leading dot
    fd, tmp = tempfile.mkstemp(dir=d, prefix=os.path.basename(path) + ".tmp.")
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w", encoding=None
                           if isinstance(data, bytes) else "utf-8") as f:
                f.write(data)
        # mkstemp creates 0600; give the file the permissions a plain open() would (umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def append_jsonl(path: str, rec: dict) -> None:
    """One JSON record as a line of a run log (metrics.jsonl, samples.jsonl)."""
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def reset_logs(out_dir: str, names: tuple[str, ...], upto_step: int | None) -> None:
    """Make a run's logs match its checkpoint: on --resume (upto_step = the checkpoint's step)
    drop the records logged after it, which belong to the lost tail of the run; on a fresh run
    (upto_step None: a new directory or --overwrite) start the logs empty."""
    for name in names:
        path = os.path.join(out_dir, name)
        if not os.path.exists(path):
            continue
        keep, torn = [], 0
        for ln in open(path, errors="replace") if upto_step is not None else ():
            step = _log_step(ln)
            if step is None:
                torn += ln.strip() != ""
            elif step <= upto_step:
                keep.append(ln if ln.endswith("\n") else ln + "\n")
        if torn:
            print(f"note: {path}: dropped {torn} unreadable line(s) (a run killed mid-write)")
        atomic_write(path, "".join(keep))


def _log_step(line: str) -> int | None:
    """The step of one run-log line, or None for a torn or foreign one."""
    try:
        step = json.loads(line)["step"]
    except (ValueError, TypeError, KeyError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain GPT under DDP / FSDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def float_range(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                hi_open: bool = False):
    """A float flag's type with its valid range (finite, as finite_float): float_range(0, 1)
    is [0, 1], float_range(0, lo_open=True) is > 0. A value outside is refused when parsed, one
    line (a negative --grad_clip reversed every update; a zero one froze the weights)."""
    def parse(s: str) -> float:
        v = finite_float(s)
        if ((lo is not None and (v <= lo if lo_open else v < lo))
                or (hi is not None and (v >= hi if hi_open else v > hi))):
            want = " and ".join(w for w in (
                lo is not None and f"{'>' if lo_open else '>='} {lo:g}",
                hi is not None and f"{'<' if hi_open else '<='} {hi:g}") if w)
            raise argparse.ArgumentTypeError(f"must be {want}, got {s}")
        return v
    return parse
