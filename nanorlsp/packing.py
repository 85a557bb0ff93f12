"""
The RL update's rows without padding: a micro-batch's rows laid end to end (first-fit
decreasing into rows as long as the longest one, so attention costs O(B' N^2), never
O((b N)^2)), positions restarting per row, attention block-diagonal, as SFT's packing
(nanorlsp/sft.py); where it costs fewer FLOPs, a group's prompt once for its G replies (a tree
mask). The logits come back (b, Tn, V), lined up with batch.tokens[rows], so no objective sees
the difference; tests/test_packed.py checks every figure against the padded rows.

    ids, layout = pack(batch, rows, config)          # Policy.forward: model(ids, logits_at=layout)
"""
import torch

from nanorlsp.model import Packed


def pack(batch, rows: torch.Tensor, config, share: bool | None = None):
    """pack_rows with the cheaper layout (share None: planned before any tensor is built, by
    flops), or the one asked for."""
    if share is None:
        share = min((False, True), key=lambda sh: flops(config, *pack_plan(batch, rows, sh)[-2:]))
    return pack_rows(batch, rows, share)


def flops(c, N: int, bins: int) -> int:
    """A block's forward FLOPs over `bins` rows of N positions: its matmuls at every
    position plus attention's QK^T and AV over all N keys (a masked SDPA computes the masked
    ones too). What decides whether a group's prompt is shared: a tree row is longer."""
    qkvo = c.n_embd * (2 * c.n_head + 2 * c.n_kv_head) * c.head_dim
    matmuls = 2 * (qkvo + 3 * c.n_embd * c.intermediate_size)             # per position
    return bins * N * (matmuls + 4 * c.n_head * c.head_dim * N)


def pack_plan(batch, rows: torch.Tensor, share: bool = False):
    """Where pack_rows puts rows (no tensors built): (lp, c, units, start, N, bins) with lp and
    c each row's prompt and completion inputs, units lists of rows (a row alone, or share: a
    group's consecutive rows), start each unit's flat offset, bins rows of N positions. Units go
    first-fit decreasing into rows of N = the longest unit."""
    lp = (batch.pos[rows, 0] + 1).tolist()                              # prompt lengths
    c = (batch.lengths[rows] - 1).clamp(min=0).tolist()                 # completion inputs
    grp = (rows // batch.group).tolist() if share else list(range(len(lp)))
    units = []
    for i in range(len(lp)):
        if i and grp[i] == grp[i - 1]:
            units[-1].append(i)
        else:
            units.append([i])
    n = [lp[u[0]] + sum(c[i] for i in u) for u in units]
    N, used, start = max(n), [], [0] * len(units)   # bins' filled lengths, units' flat starts
    for k in sorted(range(len(units)), key=lambda k: -n[k]):
        j = next((j for j, f in enumerate(used) if f + n[k] <= N), len(used))
        used += [0] * (j == len(used))
        start[k], used[j] = j * N + used[j], used[j] + n[k]
    return lp, c, units, start, N, len(used)


def pack_rows(batch, rows: torch.Tensor, share: bool = False):
    """Training rows `rows` of batch end to end without padding: (ids (B', N), model.Packed)
    whose logits (b, Tn, V) line up with batch.tokens[rows]. A row needs its prompt and its
    completion but the last token (whose logits predict nothing): Lp + len - 1 inputs. share:
    the rows of one prompt (a group's, consecutive in rows) hold the prompt once, each reply
    attending to it and to itself (a tree mask). Rows of N = the longest unit (pack_plan), so
    attention costs O(B' N^2), never O((b N)^2); positions are each token's own row's,
    attention is causal within a row (as if alone; padding attends to padding). Logits at a
    row's masked tail read its last input."""
    seq, pos = batch.seq[rows], batch.pos[rows]                         # (b, L), (b, Tn)
    dev, b = seq.device, len(rows)
    lp, c, units, start, N, bins = pack_plan(batch, rows, share)
    # segments: each unit's prompt (doc b + unit), then each row's completion inputs (doc: row)
    seg, reply_at = [], [0] * b                     # (row, src, length, doc, unit, flat start)
    for k, u in enumerate(units):
        o = start[k] + lp[u[0]]
        seg.append((u[0], 0, lp[u[0]], b + k, k, start[k]))
        for i in u:
            seg.append((i, lp[i], c[i], i, k, o))
            reply_at[i], o = o, o + c[i]
    row, src, ln, doc_s, unit_s, dst_s = torch.tensor(seg, device=dev).unbind(1)
    owner = torch.repeat_interleave(torch.arange(len(seg), device=dev), ln)   # token -> segment
    within = torch.arange(len(owner), device=dev) - (ln.cumsum(0) - ln)[owner]
    ids = torch.zeros(bins * N, dtype=torch.long, device=dev)
    positions, doc, unit = torch.zeros_like(ids), torch.full_like(ids, -1), torch.full_like(ids, -1)
    dst = dst_s[owner] + within
    ids[dst] = seq[row[owner], src[owner] + within]
    positions[dst], doc[dst], unit[dst] = src[owner] + within, doc_s[owner], unit_s[owner]
    doc, unit = doc.view(-1, N), unit.view(-1, N)                       # (B', N); -1: padding
    causal = torch.ones(N, N, dtype=torch.bool, device=dev).tril()
    mask = ((unit[:, :, None] == unit[:, None, :]) & causal              # (B', N, N)
            & ((doc[:, :, None] == doc[:, None, :]) | (doc[:, None, :] >= b)))
    j = torch.minimum(pos - pos[:, :1], torch.tensor(c, device=dev)[:, None])   # (b, Tn)
    prompt_end = torch.tensor([start[k] + lp[u[0]] - 1 for k, u in enumerate(units)
                               for _ in u], device=dev)
    reply_at = torch.tensor(reply_at, device=dev)[:, None]
    at = torch.where(j == 0, prompt_end[:, None], reply_at + j - 1)                   # (b, Tn)
    return ids.view(-1, N), Packed(positions.view(-1, N), mask[:, None], at)
