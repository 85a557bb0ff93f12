"""
Stage 1 of RLSP: supervised fine-tuning on demonstrations of the reasoning process.

The SFT loss is next-token cross-entropy on the assistant's tokens only:

    L(theta) = - sum_{b,t} m[b,t] * log p_theta(x[b,t+1] | x[b,<=t]) / sum_{b,t} m[b,t]

with m = 1 exactly where the *target* token is an assistant token (the reply and its closing
<|end_of_turn|>). The prompt is context, never a target: the model is taught to answer, not to
write questions. The mean is over all assistant tokens of the whole (global) batch, so a long
demonstration weighs by its length, as in nanochat, and gradient accumulation or several DDP ranks
give the same gradient as one big batch.

Packing: conversations are concatenated into rows of seq_len + 1 tokens so almost no compute is
spent on padding (the synthetic responses range from ~25 to ~280 tokens). Attention is
block-diagonal, so a conversation never sees its neighbours, and rotary positions restart at 0 for
each conversation: a packed example is computed exactly as if it were alone.
"""
import random

import torch
import torch.nn.functional as F


def render_examples(tok, rows: list[dict]) -> list[tuple[list[int], list[int]]]:
    """(ids, mask) of the user prompt + assistant response conversation for each row."""
    from nanorlsp.evaluation import user_prompt
    return [tok.render_conversation([{"role": "user", "content": user_prompt(r, tok)},
                                     {"role": "assistant", "content": r["response"]}])
            for r in rows]


def pack(examples: list[tuple[list[int], list[int]]], seq_len: int, seed: int, epoch: int):
    """Greedy first-fit packing of the examples, in an order shuffled by (seed, epoch), into
    rows of at most seq_len + 1 tokens. Returns a list of rows, each a list of example indices.
    Examples longer than seq_len + 1 cannot be packed and raise (make seq_len larger)."""
    order = list(range(len(examples)))
    random.Random(f"pack-{seed}-{epoch}").shuffle(order)
    rows, cur, used = [], [], 0
    for i in order:
        n = len(examples[i][0])
        if n > seq_len + 1:
            raise ValueError(f"an example has {n} tokens, more than seq_len + 1 = {seq_len + 1}")
        if used + n > seq_len + 1:
            rows.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        rows.append(cur)
    return rows


def collate(examples, rows: list[list[int]], seq_len: int, pad_id: int = 0):
    """Build a training batch from packed rows.

    Returns (all of batch size B = len(rows), T = seq_len):
        idx        (B, T)        input tokens
        targets    (B, T)        the next token of each input
        loss_mask  (B, T) float  1 where the target is an assistant token
        positions  (B, T)        rotary position within the token's own conversation
        attn_mask  (B, 1, T, T)  bool, causal within a conversation, False across conversations
    """
    B, T = len(rows), seq_len
    ids = torch.full((B, T + 1), pad_id, dtype=torch.long)
    msk = torch.zeros((B, T + 1))
    doc = torch.full((B, T + 1), -1, dtype=torch.long)     # which conversation; -1 = padding
    pos = torch.zeros((B, T + 1), dtype=torch.long)
    for b, row in enumerate(rows):
        o = 0
        for j, i in enumerate(row):
            x, m = examples[i]
            n = len(x)
            ids[b, o:o + n] = torch.tensor(x)
            msk[b, o:o + n] = torch.tensor(m, dtype=torch.float)
            doc[b, o:o + n] = j
            pos[b, o:o + n] = torch.arange(n)
            o += n
    idx, targets = ids[:, :-1], ids[:, 1:]
    # a target counts only if it is an assistant token of the SAME conversation as its input
    # (the next conversation's first token is BOS, mask 0, so this is belt and braces)
    loss_mask = msk[:, 1:] * (doc[:, 1:] == doc[:, :-1]).float()
    d = doc[:, :-1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    attn_mask = (d[:, :, None] == d[:, None, :]) & causal                  # (B, T, T)
    return idx, targets, loss_mask, pos[:, :-1], attn_mask[:, None]


def sft_loss_sum(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor):
    """Sum over masked positions of -log p(target): logits (B, T, V), targets/mask (B, T).

    Returned as a sum so the caller divides once by the global count of assistant tokens
    (micro-batches and ranks then add up to exactly the big-batch mean)."""
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    return (nll.view_as(loss_mask) * loss_mask).sum()


def sft_loss(logits, targets, loss_mask):
    """The masked mean: sft_loss_sum / number of assistant tokens (see the module docstring)."""
    return sft_loss_sum(logits, targets, loss_mask) / loss_mask.sum().clamp(min=1)


# -----------------------------------------------------------------------------
# the model of an SFT run, set up by one call (train_sft.py)

def setup_model(args, d, state, tok, base, dtype, say=print):
    """(model, net, optimizer, start_step) for train_sft.py's args: the model from the run's
    state (--resume; a LoRA run: its base with the adapters), from `base` (the loaded
    --init_from, adapters attached with --lora_rank) or a new tiny model for tok; net: the
    module that trains (DDP around model, or model itself sharded in place by FSDP2, or model);
    the optimizer with its state and the RNG restored on --resume. A CheckpointError,
    UserError or ValueError for a bad checkpoint or LoRA setting."""
    import math

    from nanorlsp import dist
    from nanorlsp.checkpoint import attach_lora, model_from_state
    from nanorlsp.model import GPT, ModelConfig
    base_dtype = dtype if args.lora_rank else torch.float32   # LoRA: the frozen base
    if state is not None:   # a LoRA run's checkpoint: its base (loaded and checked) + adapters
        model = model_from_state(state, device=d.device, dtype=base_dtype)
    elif base is not None:
        model = base
        if args.lora_rank:
            attach_lora(model, args.init_from, args.lora_rank, args.lora_alpha, args.lora_targets)
    else:
        cfg = ModelConfig(vocab_size=64 * math.ceil(tok.n_vocab / 64), n_layer=args.n_layer,
                          n_embd=args.n_embd, n_head=args.n_head, n_kv_head=args.n_kv_head,
                          max_seq_len=max(args.seq_len, args.max_new_tokens + 64))
        model = GPT(cfg).to(d.device)
    model.train()
    model.act_ckpt = args.act_ckpt
    say(f"model: {model.num_params() / 1e6:.2f}M parameters, {model.config.n_layer} layers, "
        f"d={model.config.n_embd}, device {d.device}, compute dtype {str(dtype).split('.')[-1]}")
    if model.lora is not None:
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        say(f"lora: rank {args.lora_rank}, alpha {args.lora_alpha:g} on "
            f"{','.join(args.lora_targets)}: {n_train / 1e6:.3f}M trainable parameters "
            f"({100 * n_train / model.num_params():.2f}%), base {model.lora['base']} frozen in "
            f"{str(base_dtype).split('.')[-1]}")
    # Under torchrun: DDP (gradients all-reduced, averaged; `model` stays the plain module) or
    # FSDP2 (`model` itself becomes sharded: 1/N of every weight, gradient and Adam moment)
    net = dist.wrap(model, model.layers, d, args.fsdp)
    # fused/foreach AdamW differ in the last bits between devices; plain foreach is deterministic
    optimizer = torch.optim.AdamW(model.optim_groups(args.weight_decay), lr=args.lr,
                                  betas=(0.9, 0.95), eps=1e-8)
    if state is None:
        return model, net, optimizer, 0
    dist.load_optimizer(net, optimizer, state["optimizer"], args.fsdp)
    torch.set_rng_state(state["rng"]["torch"])
    return model, net, optimizer, state["step"]


def eval_copy(model, fsdp: bool, device):
    """The model to evaluate and sample from: itself, or under FSDP a gathered plain copy (every
    rank samples its own share of problems, so no rank may wait on another's forward; a LoRA
    model's adapters are merged into the copy)."""
    if not fsdp:
        return model
    from nanorlsp import dist
    from nanorlsp.model import GPT
    copy = GPT(model.config).to(device)
    dist.copy_full_state(model, copy)
    return copy
