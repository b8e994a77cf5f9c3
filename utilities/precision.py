"""Mixed precision: ``--amp bf16|fp16`` autocast on CUDA; everything else runs in float32."""

from __future__ import annotations

from contextlib import nullcontext

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(amp: str, device: str | torch.device):
    """Autocast context for the network's forward pass: ``amp`` 'bf16' / 'fp16' on a CUDA ``device``, else none.

    Losses, vMF normalisers and metrics stay in float32 (the callers cast the network output).
    """
    if amp not in AMP_DTYPES or torch.device(device).type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=AMP_DTYPES[amp])
