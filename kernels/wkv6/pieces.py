"""WKV6 / WKV5 over a long prompt at few heads: the prompt cut into pieces that run as a batch.

At few heads (B x H small) the chunked kernel's state pass is one chain of chunks per head,
and at B = 1 that chain sets its speed (H100 / H200: the state pass is ~0.8 ms of a 1.06 ms
1x16384 call at H=40). The recurrence is linear in the state, so the prompt can be cut into
P pieces of Ts tokens that run at once as a batch of B * P sequences, piece p > 0 from a zero
state, and be joined after. With S_p the state entering piece p, E_t the sum of the piece's
log decays before token t and D_p their sum over the whole piece:

    y_t     = y0_t + (r_t * exp(E_t)) S_p        (y0, S0_p: the batch run's output and states)
    S_{p+1} = exp(D_p) * S_p + S0_p             (exp(D_p) scales the key rows of S)

`join_ref` does the join in PyTorch (the reference, also on the CPU); `run_in_pieces(...,
join="cuda")` does the batch run and the join in one call of cuda/wkv6_pieces.cu (the log
decays summed per 64-token tile on a second stream beside the batch run, the states folded,
then every tile corrected at once), so that the host issues a few launches instead of ~30
torch ops (in Python it took 0.257 ms to issue a 1 x 4096 x 40 call, more than the GPU's 0.226).
The T - P * Ts tokens left over (fewer than P) run after, from the joined state. Measured
(H200, 1 x 16384 x 40 heads, bf16, 8 pieces): the batch run 0.74 ms of kernel time, the join
0.22 ms (its tile kernel 0.17 ms, at 1.7 TB/s), against 1.47 ms without pieces (build and
state pass, partly overlapped: 1.06 ms wall).

    y, state = run_in_pieces(base, r, k, v, w, u, state, pieces=8)
"""
from __future__ import annotations

import torch

from archbench.kernels.build import extension

# Pieces by shape (`pieces_for`, from the H200 bench of 2026-11-28, wkv_bench_20261128-*-h200-pieces):
# at B x H <= MAX_HEADS heads and T >= MIN_T tokens, as many pieces as give the batch about
# PIECE_HEADS heads, each at least MIN_PIECE tokens, at most MAX_PIECES. At 1 x 40 heads 8 pieces
# were best from 4096 to 65536 tokens (x1.15 / x1.28 / x1.35 against none); at 1 x 64 heads
# no count beat none (the chunked kernel at 64 heads is not bound by its state pass).
PIECE_HEADS = 320
MAX_HEADS = 48
MIN_T = 4096
MIN_PIECE = 512
MAX_PIECES = 32
TILE = 64  # tokens a block of the CUDA join corrects (cuda/wkv6_pieces.cu)


def pieces_for(B: int, T: int, H: int) -> int:
    """How many pieces `wkv6_cuda_chunked` cuts a [B, T, H] prompt into by default (1: none)."""
    if B * H > MAX_HEADS or T < MIN_T:
        return 1
    return max(1, min(PIECE_HEADS // (B * H), T // MIN_PIECE, MAX_PIECES))


def join_ref(r, w, y, s0, dsum, state, pieces: int, Ts: int):
    """The join in PyTorch: y [B, T, H, N] corrected in place for tokens Ts .. P * Ts; s0
    [B * P, H, N, N] fp32 (the pieces' final states), dsum [B * P, H, N] fp32 (their summed log
    decays); the state after token P * Ts is written into state [B, H, N, N]."""
    B, T, H, N = r.shape
    P = pieces
    s0 = s0.view(B, P, H, N, N)
    dsum = dsum.view(B, P, H, N)
    cur = s0[:, 0]
    for p in range(1, P):
        sl = slice(p * Ts, (p + 1) * Ts)
        lw = (w[:, sl] if w.dim() == 4 else w.expand(B, Ts, H, N)).float()
        excl = torch.cumsum(lw, 1) - lw
        q = r[:, sl].float() * torch.exp(excl)
        y[:, sl] = (y[:, sl].float() + torch.einsum("bthi,bhij->bthj", q, cur)).to(y.dtype)
        cur = torch.exp(dsum[:, p])[..., None] * cur + s0[:, p]
    state.copy_(cur)


def tile_offsets(w, B: int, P: int, Ts: int):
    """The log decays summed per piece: before each tile of TILE tokens ([B * P, nt, H, N],
    nt = ceil(Ts / TILE)) and over the whole piece ([B * P, H, N]), fp32."""
    H, N = w.shape[-2:]
    nt, full = -(-Ts // TILE), Ts // TILE * TILE
    if w.dim() == 2:  # one decay per head: the tiles' token counts times it
        counts = torch.full((nt,), float(TILE), device=w.device)
        counts[-1] = Ts - (nt - 1) * TILE
        tsum = (counts[:, None, None] * w.float()).expand(B * P, nt, H, N)
    else:
        wp = w[:, :P * Ts].reshape(B * P, Ts, H, N)
        parts = [wp[:, :full].reshape(B * P, full // TILE, TILE, H, N).sum(2, dtype=torch.float32)] if full else []
        if full < Ts:
            parts.append(wp[:, full:].sum(1, keepdim=True, dtype=torch.float32))
        tsum = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
    incl = torch.cumsum(tsum, 1)
    return (incl - tsum).contiguous(), incl[:, -1].contiguous()


def run_in_pieces(base, r, k, v, w, u, state, *, pieces: int, join: str = "auto", out=None, code: int = 0):
    """base(r, k, v, w, u, state, inplace=True, out=y[, tail=True]) runs a batch (a WKV6 op; w
    [B, T, H, N] log decay per token, or [H, N] per head as WKV5's): the tokens left over, and
    the batch with join="torch". state [B, H, N, N] fp32 is updated in place. join: "cuda"
    (the batch run and the join in one call of cuda/wkv6_pieces.cu, the batch at launch code
    `code` of the chunked kernel, its first tile kernel), "cuda2" (the same with the tile
    kernel of fewer shared-memory accesses, 16-bit inputs only: 2-4% faster in the H200 bench
    of 2026-11-28, wkv_bench_20261128-112541-h200-join2), "auto" (cuda2 for 16-bit inputs, else
    cuda) or "torch" (the batch by `base`, joined by `join_ref`). Returns y (out, if given) and
    state."""
    B, T, H, N = r.shape
    P = int(pieces)
    Ts = T // P
    if P < 2 or Ts < 1:
        raise ValueError(f"run_in_pieces: {P} pieces of a {T}-token prompt")
    half = r.dtype in (torch.float16, torch.bfloat16)
    if join == "auto":
        join = "cuda2" if half else "cuda"
    if join not in ("cuda", "cuda2", "torch"):
        raise ValueError(f"run_in_pieces: join must be 'auto', 'cuda', 'cuda2' or 'torch', got {join!r}")
    if join == "cuda2" and not half:
        raise ValueError(f"run_in_pieces: join='cuda2' takes 16-bit inputs, got {r.dtype}")
    L = P * Ts
    y = torch.empty_like(r) if out is None else out

    def batch(x):  # [B, L, H, N] -> [B * P, Ts, H, N]; a view when the prompt is whole
        return x[:, :L].reshape(B * P, Ts, H, N)

    per_head = w.dim() == 2
    y_main = y[:, :L].view(B * P, Ts, H, N) if (B == 1 or L == T) else torch.empty(B * P, Ts, H, N, dtype=y.dtype,
                                                                                     device=y.device)
    wb = w if per_head else batch(w)
    if join in ("cuda", "cuda2"):
        ext = extension()
        ws = torch.empty(ext.wkv6_pieces_workspace(B, P, Ts, H, N, per_head, code), dtype=torch.uint8, device=r.device)
        u32 = u.to(device=r.device, dtype=torch.float32).reshape(H, N).contiguous()
        ext.wkv6_pieces(batch(r), batch(k), batch(v), wb, u32, state, y_main, ws, P, code, 2 if join == "cuda2" else 1)
    else:
        s0 = torch.zeros(B, P, H, N, N, dtype=torch.float32, device=r.device)
        s0[:, 0] = state
        s0 = s0.view(B * P, H, N, N)
        base(batch(r), batch(k), batch(v), wb, u, s0, inplace=True, out=y_main)
        y_main = y_main.view(B, L, H, N)
        join_ref(r, w, y_main, s0, tile_offsets(w, B, P, Ts)[1], state, P, Ts)
    if y_main.data_ptr() != y.data_ptr():
        y[:, :L] = y_main.view(B, L, H, N)
    if L < T:  # the few tokens left over, from the joined state
        tail_out = y[:, L:] if B == 1 else None
        yt, _ = base(*(x[:, L:].contiguous() for x in (r, k, v)), w if per_head else w[:, L:].contiguous(), u, state,
                     inplace=True, out=tail_out, tail=True)
        if tail_out is None:
            y[:, L:] = yt
    return y, state
