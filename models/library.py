"""What the wrappers of library models (transformers, mamba_ssm) share: a `cast` that
moves every parameter to one dtype, and re-tying the output embedding to the input
embedding whenever torch rebuilds parameters (leaving the meta device makes new ones)."""
from __future__ import annotations

import torch.nn as nn

from archbench.harness.interface import resolve_dtype


class LibraryModel(nn.Module):
    def _tie(self) -> None:
        """Subclasses tie their output embedding to the input one if the config says so."""

    def cast(self, dtype):
        """Every parameter to dtype (buffers, e.g. rotary frequencies, keep theirs)."""
        dtype = resolve_dtype(dtype)
        for p in self.parameters():
            p.data = p.data.to(dtype)
        return self

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._tie()
        return self
