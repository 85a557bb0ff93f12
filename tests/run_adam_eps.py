"""
Run a training script with AdamW's eps set to $ADAM_EPS (tests only: tests/test_dist.py).

    ADAM_EPS=1e-3 python tests/run_adam_eps.py train_sft.py --out_dir /tmp/one ...
    ADAM_EPS=1e-3 torchrun --standalone --nproc_per_node=2 tests/run_adam_eps.py train_sft.py ...

Why: "2 ranks == 1 process" holds only up to the order in which the sums are taken (one process
sums a micro-batch's rows, each rank half of them, then the all-reduce adds the halves), and
Adam amplifies that noise. Its update lr * m / (sqrt(v) + eps) has slope up to lr / eps in the
gradient, reached where the gradient entry is near zero: 1e6 at the scripts' lr 1e-2, eps 1e-8,
so float32 noise of ~1e-11 on such an entry becomes ~1e-5 in its weight after a few steps, more
or less depending on the CPU's kernels and on the data (an AMX Xeon failed atol 1e-5 at 1.7e-5).
With eps 1e-3 the slope is at most 10. Measured over the 6-step SFT test (max |diff| in the
weights), 1 process vs 2 ranks: 4e-8; with noise of 1e-7 x the tensor's rms gradient added to
every nonzero gradient entry (another CPU's summation order, emulated): 0.7-1.2e-7, where eps
1e-8 gives 5e-6 to 4e-5 (the AMX failure, reproduced on any CPU). It is still Adam for the
bulk of the weights (the tiny test model's rms gradient entry is ~5e-3 > eps, so v still
normalises), and the script, its sharding, float32 and the optimizer state are untouched. A
gradient off by a constant factor now moves the weights too (with eps 1e-8 Adam all but cancels
it: only grad_norm would show it).

FAULT=drop | double | sum (tests only) breaks train_sft.py on purpose, to show the equivalence
test sees it: rank 1's share of the gradient dropped, rank 0's counted twice, or every rank's
doubled (summed over ranks instead of averaged). Only the gradient: the loss value, and so the
logged loss, stays right, the way a sharding bug in backward would look.
"""
import os
import runpy
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the script imports `nanorlsp` and `data` from the repository root
EPS = float(os.environ["ADAM_EPS"])


class AdamW(torch.optim.AdamW):
    """torch.optim.AdamW whatever eps the script passes (the scripts pass 1e-8)."""

    def __init__(self, params, **kw):
        super().__init__(params, **{**kw, "eps": EPS})


torch.optim.AdamW = AdamW  # the script looks it up as torch.optim.AdamW, after this

fault = os.environ.get("FAULT")
if fault:
    import nanorlsp.sft
    rank = int(os.environ.get("RANK", "0"))
    k = {"drop": {1: 0.0}, "double": {0: 2.0}, "sum": {0: 2.0, 1: 2.0}}[fault].get(rank, 1.0)
    loss_sum = nanorlsp.sft.sft_loss_sum

    def faulty_loss_sum(*a):
        s = loss_sum(*a)
        return s + (k - 1) * (s - s.detach())  # the same value, k x the gradient

    # train_sft.py's `from nanorlsp.sft import sft_loss_sum` runs after this, so it gets the fault
    nanorlsp.sft.sft_loss_sum = faulty_loss_sum

sys.argv = sys.argv[1:]
runpy.run_path(os.path.join(ROOT, sys.argv[0]), run_name="__main__")
