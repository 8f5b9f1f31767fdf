"""WKV7 through flash-linear-attention (a peer, where installed): same signature as
`wkv7_ref`. fla's default scale is not 1, so it is passed explicitly."""
from __future__ import annotations

from archbench.harness.errors import MissingDependencyError


def wkv7_fla(r, w, k, v, a, b, state, *, mode: str = "chunk"):
    try:
        from fla.ops.rwkv7 import chunk_rwkv7, fused_recurrent_rwkv7
    except ImportError as e:
        raise MissingDependencyError(f"impl='fla' needs flash-linear-attention ({e}); "
                                     "pip install 'archbench[peers]'") from None
    fn = chunk_rwkv7 if mode == "chunk" else fused_recurrent_rwkv7
    y, final = fn(r, w.to(r.dtype), k, v, a, b, scale=1.0, initial_state=state, output_final_state=True)
    return y, final
