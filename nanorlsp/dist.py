"""
torchrun support in one place: the same scripts run under `python` (one process) and
`torchrun --standalone --nproc_per_node=N` (N processes, one per GPU or N on a CPU).

    from nanorlsp import dist
    d = dist.setup("auto")          # reads RANK / LOCAL_RANK / WORLD_SIZE set by torchrun
    train_model = dist.wrap(model, model.layers, d, fsdp=False)   # DDP under torchrun
    mine = items[d.rank::d.world]   # shard the global batch
    total = dist.all_sum(torch.tensor([x, n]))
    everything = dist.gather_shards(mine, d)   # back in the global order, on every rank
    dist.shutdown()

Data parallelism (DDP): every rank builds the same global batch (a pure function of seed and
step), keeps its shard and normalises its loss by the *global* count (all-reduced) times world,
so DDP's gradient average equals the one-process update on the whole batch; metrics are
all-reduced or gathered, rank 0 alone writes. gloo on CPU, nccl on CUDA (cuda:LOCAL_RANK).
Footgun: a failing rank exits non-zero; torchrun stops the others (blocked in a collective, they
never see the error) and names it above the rank's own one-line error. More: docs/rl.md.
"""
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from nanorlsp.common import UserError, resolve_device
from nanorlsp.model import is_lora_key, lora_merged


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


def setup(device_arg: str = "auto", fsdp: bool = False) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else one process.
    fsdp: the script was asked to shard, which needs torchrun (a UserError if not). Under
    torchrun --nproc_per_node=1 it joins a process group of one rank: FSDP2 then runs its whole
    code path (DTensor shards, gathers, the sharded optimizer checkpoint) over one rank, a smoke
    run of the sharded path on a machine with one GPU (experiments/gpu_check.sh). Two ranks cannot
    share one GPU instead: NCCL refuses two ranks on the same device, and gloo has no FSDP
    collectives (reduce-scatter) for CUDA tensors."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_arg)
    if fsdp and "LOCAL_RANK" not in os.environ:
        raise UserError("--fsdp shards over torchrun ranks: run it under torchrun "
                        "--nproc_per_node=N (N = 1 runs the sharded path on one device)")
    if world == 1 and not fsdp:
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
        gloo = tdist.get_backend() == "gloo"
        tdist.barrier()  # no rank tears its end down while another still talks to it
        tdist.destroy_process_group()
        if gloo:
            # A gloo worker thread drops its reference to a finished collective after the caller
            # has moved on; when that reference is the last, the drop takes the GIL. If the
            # interpreter is already finalizing, the thread cannot and the process aborts
            # ("terminate called without an active exception", exit -6) after a finished run.
            # Releasing the GIL a moment lets those threads finish first (5 of 60 exits aborted
            # without it on a loaded 2-core CPU, 0 of 60 with it).
            time.sleep(0.5)


# -----------------------------------------------------------------------------
# FSDP2 and the state of sharded models

def wrap(model: torch.nn.Module, blocks, d: Dist, fsdp: bool, fp32=()) -> torch.nn.Module:
    """The module the training step runs: FSDP2-sharded in place (`fsdp`; fp32: see shard), DDP
    around it under torchrun, or the module itself in one process."""
    if fsdp:
        return shard(model, blocks, d.device, fp32)
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(
            model, device_ids=[d.local_rank] if d.device.startswith("cuda") else None)
    return model


def shard(model: torch.nn.Module, blocks, device: str, fp32=(),
          param_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Shard `model` with FSDP2 (fully_shard): each transformer block is its own unit (gathered
    just before its forward / backward, freed after), the root holds the rest (embeddings, final
    norm, head). param_dtype (default bf16 on CUDA, none elsewhere): the compute copies of the
    params, with fp32 gradient reduction and fp32 sharded master weights (Adam sees fp32). The
    modules in fp32 (PPO's value head, which reads the hidden state in float32) are units of
    their own computed in float32: under the root's bf16 policy its bf16 weight met the float32
    input and the forward failed. Modifies model in place."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    if param_dtype is None and device.startswith("cuda"):
        param_dtype = torch.bfloat16
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) \
        if param_dtype is not None else MixedPrecisionPolicy()
    for block in blocks:
        fully_shard(block, mp_policy=mp)
    for module in fp32:
        fully_shard(module, mp_policy=MixedPrecisionPolicy(param_dtype=torch.float32,
                                                           reduce_dtype=torch.float32))
    fully_shard(model, mp_policy=mp)
    return model


def full_state(model: torch.nn.Module, keep=None) -> dict:
    """model.state_dict() with every FSDP shard gathered into the whole tensor (a collective:
    every rank calls it, in the same order); a plain or DDP model's own state otherwise.
    keep(name) -> bool: only those tensors (a LoRA checkpoint gathers its adapters alone)."""
    from torch.distributed.tensor import DTensor
    return {k: v.full_tensor() if isinstance(v, DTensor) else v
            for k, v in model.state_dict().items() if keep is None or keep(k)}


def optimizer_state(model, optimizer, sharded: bool) -> dict:
    """The optimizer state to checkpoint. Sharded (FSDP): gathered to whole tensors keyed by
    parameter name, on rank 0 only (torch.distributed.checkpoint's full_state_dict)."""
    if not sharded:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    sd = get_optimizer_state_dict(model, optimizer,
                                  options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {"fsdp_full": True, **sd}


def load_optimizer(model, optimizer, sd: dict, sharded: bool):
    """Inverse of optimizer_state; a checkpoint saved with the other layout is a UserError."""
    if bool(sd.get("fsdp_full")) != sharded:
        raise UserError("the checkpoint's optimizer state was saved "
                        f"{'with' if sd.get('fsdp_full') else 'without'} --fsdp; resume it the same way")
    if not sharded:
        optimizer.load_state_dict(sd)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    sd = {k: v for k, v in sd.items() if k != "fsdp_full"}
    set_optimizer_state_dict(model, optimizer, optim_state_dict=sd,
                             options=StateDictOptions(full_state_dict=True))


def grad_sync(model, enabled: bool):
    """Gradient accumulation: a context in which backward syncs gradients across ranks only if
    `enabled` (the last micro-batch). DDP: no_sync(); FSDP2: set_requires_gradient_sync."""
    import contextlib
    from torch.nn.parallel import DistributedDataParallel
    if isinstance(model, DistributedDataParallel) and not enabled:
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


@torch.no_grad()
def copy_full_state(src: torch.nn.Module, dst: torch.nn.Module):
    """dst's parameters and buffers <- src's, gathering FSDP shards one tensor at a time (peak
    extra memory: the largest single tensor, not a second full state dict). Buffers outside the
    state dict (GPT's rotary inv_freq) stay dst's own: GPT keeps them float32 whatever dtype dst
    was cast to (GPT._apply), so a bf16 copy has the same rotary angles as src.
    A LoRA src and a plain dst: each adapter is merged into its weight as it is copied
    (lora_merged: W + alpha/r B A in float32, rounded once to dst's dtype), so the copy (a
    rollout or eval model) decodes at the plain model's cost."""
    from torch.distributed.tensor import DTensor
    full = lambda v: v.full_tensor() if isinstance(v, DTensor) else v  # noqa: E731
    src_state, dst_state = src.state_dict(), dst.state_dict()
    lora = getattr(src, "lora", None)
    for k, v in src_state.items():
        if is_lora_key(k):
            continue                    # merged into its weight below
        p = k.removesuffix(".weight")
        if p + ".lora_A" in src_state and p + ".lora_A" not in dst_state:
            v = lora_merged(full(v), full(src_state[p + ".lora_A"]),
                            full(src_state[p + ".lora_B"]), lora["alpha"] / lora["rank"],
                            dtype=dst_state[k].dtype)
        dst_state[k].copy_(full(v))
