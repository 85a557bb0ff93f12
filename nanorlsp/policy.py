"""
The model of an RL run under one name: the policy, its reference, the sampler's copy, PPO's
value head, LoRA, DDP / FSDP and --resume, set up by one call.

    policy, tok, optimizer, start_step = setup_policy(args, d, state, dtype, argv)
    ro = sample(policy.sampler(), ...)          # the rollout model, refreshed from the policy
    ref_logp = policy.logprobs(batch, T, chunks, reference=True)   # (B, Tn), no grad
    logits, values = policy.forward(batch, rows)                   # the training forward

What hides behind it:
- the reference: a frozen copy of --init_from in the compute dtype, or with --lora_rank the same
  weights with the adapters switched off (lora_disabled: no second copy in memory);
- the rollout copy: under FSDP a gathered copy (the sampler's ~max_new_tokens small forwards
  would otherwise all-gather every block at every token), in bf16 a bf16 copy (autocast would
  re-cast every weight at every token); refreshed before each rollout, a LoRA policy's adapters
  merged in. Without either the policy samples itself;
- net: the policy and the value head as one module (WithValues), under DDP or FSDP2.
Footgun: the RNG order (the adapters' init, then the value head's, then the copy's) is what
makes a run reproduce its figures at a seed; keep it.
"""
import os

import torch

from nanorlsp import dist, packing, ppo
from nanorlsp.checkpoint import attach_lora, load_model, model_from_state, save_checkpoint
from nanorlsp.common import UserError, autocast, explicit_flags
from nanorlsp.model import GPT, is_lora_key, lora_disabled
from nanorlsp.rl import WithValues, token_logprobs
from nanorlsp.tokenizer import load_tokenizer


class Policy:
    """gpt: the bare model (config, checkpoint); head: PPO's value head or None; module: both as
    one (WithValues); net: module under DDP / FSDP (the one that trains); ref: the frozen
    reference (None with LoRA); roll: the sampler's model; params: what the optimizer updates."""

    def __init__(self, gpt: GPT, head, ref, d, fsdp: bool, dtype):
        self.gpt, self.head, self.d, self.fsdp, self.dtype = gpt, head, d, fsdp, dtype
        self.lora = gpt.lora is not None
        self.module = WithValues(gpt, head)
        self.ref = WithValues(ref, None) if ref is not None else None
        # DDP (each rank holds everything; gradients all-reduced, averaged) or FSDP2 (each rank
        # holds 1/N of every parameter, gradient and Adam moment); one process: the module
        self.net = dist.wrap(self.module, gpt.layers, d, fsdp,
                             fp32=[head] if head is not None else [])   # values in float32
        if fsdp and ref is not None:
            dist.shard(self.ref, ref.layers, d.device)
        if fsdp or (dtype != torch.float32 and not self.lora):
            # one more copy of the weights (2 bytes/param in bf16); LoRA's base already is in
            # the compute dtype, so without FSDP it samples itself
            self.roll = GPT(gpt.config).to(device=d.device, dtype=dtype).eval()
            self.roll.requires_grad_(False)
        else:
            self.roll = gpt
        self.params = [p for p in self.net.parameters() if p.requires_grad]  # LoRA: adapters
        # the update's rows without padding (forward); share: a group's prompt once for its
        # replies (None: where flops() says it is cheaper)
        self.packed, self.share = True, None

    def sampler(self) -> GPT:
        """The rollout / eval model with the policy's current weights (every rank; FSDP gathers
        them one tensor at a time; a LoRA policy's adapters merged in)."""
        if self.roll is not self.gpt:
            dist.copy_full_state(self.gpt, self.roll)
        return self.roll

    def forward(self, batch, rows: torch.Tensor, module=None):
        """Logits (b, Tn, V) and values (b, Tn) or None at the positions that predict the
        completion tokens of `rows` (the LM head runs there only, never over the prompt). The
        rows run packed without padding (nanorlsp/packing.py), a group's prompt shared by its
        replies where that costs fewer FLOPs; self.packed = False: padded (b, L), the reference
        the packed forward is tested against."""
        with autocast(self.d.device, self.dtype):
            if not self.packed:
                return (module or self.net)(batch.seq[rows], logits_at=batch.pos[rows])
            ids, layout = packing.pack(batch, rows, self.gpt.config, self.share)
            return (module or self.net)(ids, logits_at=layout)

    def logprobs(self, batch, temperature: float, chunks: int, reference=False, values=False):
        """Log-probs (B, Tn) of the sampled tokens under the reference or the policy (and its
        values (B, Tn), masked), no grad, in `chunks` slices like the update: only (B, Tn) is
        kept, never (B, Tn, V)."""
        if reference and self.lora:
            with lora_disabled(self.module):       # the base alone is the frozen reference
                return self.logprobs(batch, temperature, chunks, values=values)
        model = self.ref if reference else self.module
        lps, vals = [], []
        with torch.no_grad():
            for mb in torch.arange(len(batch.tokens)).chunk(chunks):
                lg, v = self.forward(batch, mb, model)
                lps.append(token_logprobs(lg / temperature, batch.tokens[mb], batch.vocab))
                vals.append(v)
        return torch.cat(lps), (torch.cat(vals) * batch.mask if values else None)

    def save(self, out_dir: str, tok, step: int, args: dict, optimizer, extra: dict):
        """An atomic checkpoint (every rank takes part in gathering FSDP shards; rank 0 writes)."""
        model_state = dist.full_state(self.gpt, keep=is_lora_key if self.lora else None)
        head_state = dist.full_state(self.head) if self.head is not None else None
        optim_state = dist.optimizer_state(self.net, optimizer, self.fsdp)
        if self.d.main:
            save_checkpoint(out_dir, self.gpt, tok, step, args, optim_state,
                            extra={"value_head": head_state, **extra}, model_state=model_state)
        dist.barrier()  # no rank runs ahead of a checkpoint it might need


def load_models(args, d, state, frozen_dtype, argv):
    """(policy GPT, reference GPT or None, tok): fresh from --init_from or from the run's state;
    the reference in frozen_dtype. LoRA: one model, the frozen base in frozen_dtype plus float32
    adapters, no reference."""
    device, lora = d.device, args.lora_rank > 0
    if state is not None and (state.get("lora") is not None) != lora:
        raise UserError(f"{args.out_dir}'s checkpoint and its saved --lora_rank disagree")
    if lora:
        if state is None and os.path.realpath(args.init_from) == os.path.realpath(args.out_dir):
            raise UserError("--lora_rank with --out_dir = --init_from would overwrite the base "
                            "the adapters need")
        if state is not None:
            if "init_from" in explicit_flags(argv) and os.path.abspath(
                    args.init_from) != os.path.abspath(state["lora"]["base"]):
                raise UserError(f"{args.out_dir} is a LoRA run on {state['lora']['base']}: its "
                                f"reference is that base, not --init_from {args.init_from}")
            return model_from_state(state, device, frozen_dtype), None, load_tokenizer(args.out_dir)
        policy, tok = load_model(args.init_from, device=device, dtype=frozen_dtype)
        torch.manual_seed(args.seed)      # the adapters' init: the same on every rank
        attach_lora(policy, args.init_from, args.lora_rank, args.lora_alpha, args.lora_targets)
        return policy, None, tok
    ref, tok = load_model(args.init_from, device=device, dtype=frozen_dtype)
    if tok is None:
        return None, None, None
    ref.requires_grad_(False)
    if state is None:
        return load_model(args.init_from, device=device)[0], ref, tok
    policy = model_from_state(state, device=device)
    if policy.config != ref.config:
        raise UserError(f"{args.out_dir} holds a checkpoint of another model config than "
                        f"{args.init_from}")
    return policy, ref, tok


def setup_policy(args, d, state, dtype, argv):
    """(Policy, tok, optimizer, start_step) for train_rl.py's args; a UserError or
    CheckpointError for a bad --init_from / --resume. The reference and the rollout copy only
    run forward, so they are held in the compute dtype (bf16 by default on CUDA); logits,
    log-probs and losses stay float32."""
    gpt, ref, tok = load_models(args, d, state, dtype, argv)
    if tok is None:
        raise UserError(f"--init_from {args.init_from} holds weights but no tokenizer files: copy "
                        "the original model's tokenizer (tokenizer.json, vocab.json + merges.txt "
                        "or tokenizer.model) into it")
    if gpt.lora is not None and d.main:
        n_train = sum(p.numel() for p in gpt.parameters() if p.requires_grad)
        print(f"lora: rank {args.lora_rank}, alpha {args.lora_alpha:g} on "
              f"{','.join(args.lora_targets)}: {n_train / 1e6:.3f}M trainable parameters "
              f"({100 * n_train / gpt.num_params():.2f}%), base {gpt.lora['base']} frozen "
              f"in {str(dtype).split('.')[-1]}")
    gpt.train()
    gpt.act_ckpt = args.act_ckpt
    torch.manual_seed(args.seed)  # the value head's init: the same on every rank and in one process
    head = ppo.value_head(gpt.config.n_embd, d.device) if args.algo == "ppo" else None
    if state is not None and head is not None:
        head.load_state_dict(state["value_head"])
    policy = Policy(gpt, head, ref, d, args.fsdp, dtype)
    optimizer = torch.optim.AdamW(policy.params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    if state is None:
        return policy, tok, optimizer, 0
    dist.load_optimizer(policy.net, optimizer, state["optimizer"], args.fsdp)
    return policy, tok, optimizer, state["step"]
