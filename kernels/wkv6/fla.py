"""WKV6 through flash-linear-attention (a peer, where installed): same signature as
`wkv6_ref`."""
from __future__ import annotations

from archbench.harness.errors import MissingDependencyError


def wkv6_fla(r, k, v, w, u, state, *, mode: str = "chunk"):
    try:
        from fla.ops.rwkv6 import chunk_rwkv6, fused_recurrent_rwkv6
    except ImportError as e:
        raise MissingDependencyError(f"impl='fla' needs flash-linear-attention ({e}); "
                                     "pip install 'archbench[peers]'") from None
    fn = chunk_rwkv6 if mode == "chunk" else fused_recurrent_rwkv6
    y, final = fn(r, k, v, w.to(r.dtype), u.to(r.dtype), scale=1.0, initial_state=state, output_final_state=True)
    return y, final
