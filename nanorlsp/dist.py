"""
torchrun support in one place: the same scripts run under `python` (one process) and
`torchrun --standalone --nproc_per_node=N` (N processes, one per GPU or N on a CPU).

    from nanorlsp import dist
    d = dist.setup("auto")          # reads RANK / LOCAL_RANK / WORLD_SIZE set by torchrun
    mine = items[d.rank::d.world]   # shard the global batch
    total = dist.all_sum(torch.tensor([x, n]))
    everything = dist.gather_shards(mine, d)   # back in the global order, on every rank
    dist.shutdown()

How the scripts use it (data parallelism, DDP):
- every rank builds the same global batch (a pure function of seed and step), keeps its shard
  (`items[rank::world]`), and computes its part of the loss normalised by the *global* count
  (all-reduced), times world: DDP averages gradients over ranks, so the update equals the
  single-process update on the whole global batch (the torchrun test checks this).
- metrics are all-reduced (sums and counts) or gathered, so every rank logs the same numbers;
  rank 0 alone writes files and checkpoints, the others wait at a barrier.
- a failing rank exits non-zero; torchrun's agent then stops the other ranks (they may be
  blocked in a collective and never see the error themselves) and reports which rank failed,
  above the failing rank's own one-line error.

Backend: gloo on CPU, nccl on CUDA (rank i uses cuda:LOCAL_RANK).
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from nanorlsp.common import UserError, resolve_device


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def env_rank() -> int:
    """This process's rank from torchrun's environment (0 when not under torchrun)."""
    return int(os.environ.get("RANK", "0"))


def setup(device_arg: str = "auto") -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_arg)
    if world == 1:
        return Dist(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs")
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
        tdist.init_process_group("nccl", device_id=torch.device(device))
    else:
        tdist.init_process_group("gloo")
    return Dist(rank, local_rank, world, device)


def active() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (a new tensor on t's device; a copy in one process). nccl only
    reduces CUDA tensors, so CPU tensors make a round trip through this rank's GPU."""
    if not active():
        return t.clone()
    on = torch.device("cuda", torch.cuda.current_device()) if tdist.get_backend() == "nccl" \
        else t.device
    r = t.detach().to(on, copy=True)
    tdist.all_reduce(r, op=tdist.ReduceOp.SUM)
    return r.to(t.device)


def any_rank(flag: bool, device) -> bool:
    """True on every rank when the flag is True on any rank (collective decisions such as
    skipping a non-finite step must be taken by all ranks together, or DDP deadlocks)."""
    return bool(all_sum(torch.tensor([float(flag)], device=device)).item() > 0)


def gather_shards(local: list, d: Dist) -> list:
    """Inverse of `items[rank::world]`: every rank's shard, interleaved back into the global
    order, on every rank."""
    if d.world == 1:
        return list(local)
    shards = [None] * d.world
    tdist.all_gather_object(shards, local)
    out = []
    for i in range(max(len(s) for s in shards)):
        out.extend(s[i] for s in shards if i < len(s))
    return out


def barrier():
    if active():
        tdist.barrier()


def shutdown():
    """Leave the process group (every rank, at the end; avoids the 'process group was not
    destroyed' warning and lets nccl flush)."""
    if active():
        tdist.barrier()  # no rank tears its end down while another still talks to it
        tdist.destroy_process_group()
