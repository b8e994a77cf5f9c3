"""Mixed precision and GPU speed settings: ``--amp bf16|fp16``, ``--cudnn_benchmark``.

* ``autocast(amp, device)``: the network's forward under bf16 / fp16 autocast on CUDA; everything else (and the
  CPU, unless ``cpu=True``) runs in float32. ``--amp bf16`` on a GPU without bf16 falls back to fp16 with a warning.
* ``grad_scaler(amp, device)``: a ``torch.amp.GradScaler``, enabled exactly when fp16 autocast runs (fp16
  gradients underflow without loss scaling; bf16 has float32's range and needs none).
* ``full_precision(device)``: a region where autocast is off. Losses, vMF normalisers, logits divided by small
  temperatures and metrics run outside autocast on float32 inputs (the training loop casts the embeddings);
  code that calls a loss inside an autocast region wraps it in this.
* ``configure_backends(opt, device)``: ``--cudnn_benchmark`` (cuDNN autotuning) on CUDA.
* ``all_finite(tensors)``: whether every element is finite, in one fused pass (the training step's gradient check).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
log = logging.getLogger(__name__)
_warned: set[str] = set()


def bf16_supported(device: str | torch.device) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return True  # CPU autocast supports bf16


def resolve_amp(amp: str, device: str | torch.device, cpu: bool = False) -> str:
    """The autocast mode that actually runs: 'none' off CUDA (unless ``cpu``), 'fp16' for 'bf16' on a GPU without
    bf16 support (warned once), else ``amp``."""
    device = torch.device(device)
    if amp not in AMP_DTYPES or (device.type != "cuda" and not (cpu and device.type == "cpu")):
        return "none"
    if amp == "bf16" and not bf16_supported(device):
        if "bf16" not in _warned:
            _warned.add("bf16")
            log.warning("--amp bf16: this GPU has no bf16 support; using fp16 autocast with a GradScaler instead")
        return "fp16"
    return amp


def autocast(amp: str, device: str | torch.device, cpu: bool = False):
    """Autocast context for the network's forward pass (see ``resolve_amp``); a null context when it is off.

    Losses, vMF normalisers and metrics stay in float32 (the callers cast the network output).
    """
    mode = resolve_amp(amp, device, cpu=cpu)
    if mode == "none":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[mode])


def grad_scaler(amp: str, device: str | torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is enabled exactly when ``autocast(amp, device)`` runs fp16 (on CUDA)."""
    device = torch.device(device)
    enabled = device.type == "cuda" and resolve_amp(amp, device) == "fp16"
    return torch.amp.GradScaler("cuda" if device.type == "cuda" else "cpu", enabled=enabled)


def all_finite(tensors) -> bool:
    """True when every element of every tensor is finite.

    One fused pass per (device, dtype): the check the fp16 GradScaler runs on the gradients
    (``torch._amp_foreach_non_finite_check_and_unscale_``), here with the scale 1, which leaves every value as it
    is. A quarter of the cost of per-tensor norms for a small network's gradients (one sync either way).

    >>> all_finite([torch.ones(2), torch.tensor([0.0, float("nan")])])
    False
    """
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    for (device, _), group in groups.items():
        found_and_scale = torch.tensor([0.0, 1.0], device=device)  # one allocation for both
        torch._amp_foreach_non_finite_check_and_unscale_(group, found_and_scale[:1], found_and_scale[1:])
        if found_and_scale[0].item():
            return False
    return True


def full_precision(device: str | torch.device):
    """A region with autocast off (inside an autocast region): losses and metrics computed in float32."""
    return torch.autocast(torch.device(device).type, enabled=False)


def configure_backends(opt, device: str | torch.device) -> None:
    """``--cudnn_benchmark`` on CUDA: cuDNN picks the fastest convolution algorithms by timing them (benchmark on,
    deterministic off; the seeding sets the Roth suite's deterministic cuDNN otherwise). Call after seeding."""
    if torch.device(device).type == "cuda" and opt.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = False
