"""archbench: sequence-model architectures measured side by side.

    import archbench
    model = archbench.build("rwkv7-tiny", impl="ref", dtype="float32")
    logits, state = model.forward(tokens)          # tokens: LongTensor [B, T]
    logits, state = model.step(tokens[:, -1], state)

`archbench.list_models()` names every registered preset.
"""
from archbench.harness.errors import ArchbenchError, CheckpointError
from archbench.harness.registry import build, list_models, load

__all__ = ["ArchbenchError", "CheckpointError", "build", "list_models", "load"]
__version__ = "0.1.0"
