"""DDP helpers: ``torchrun --nproc_per_node N main.py ...`` runs the same command.

Only rank 0 writes files, logs and checkpoints. Embeddings are gathered across ranks
for evaluation and for the storage samplers. Every rank holds the same model and
criterion: rank 0's initial state is broadcast once (``broadcast_module``), gradients are
reduced after every backward pass (``all_reduce_gradients``), and decisions taken on
rank 0 (early stop, the plateau scheduler's input) reach the others by
``broadcast_object``. Every helper is the identity without a process group.

Global-batch losses (the training step; ``criteria._base.Criterion.global_batch``): every
rank computes the loss on the batch gathered from all ranks in rank order
(``gather_with_grad``; its gradient reaches only the local slice), with the loss's random
draws from a stream that is the same on every rank (``shared_rng``, seeded by
``step_seed``). Each rank's backbone gradient is then its slice's share of dL, so those
gradients are summed over ranks, while the loss's own parameters received the whole dL on
every rank and are averaged: the step equals one process on the global batch.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist


def init_distributed() -> tuple[int, int]:
    """Start the process group when launched by torchrun; returns (rank, world_size)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():  # NCCL collectives run on the current device
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return rank(), world_size


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return rank() == 0


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (same shape on every rank) from all ranks along dim 0, in rank order, so the
    result is the same on every rank (identity without DDP).

    The other ranks' parts are detached copies; the local part is ``tensor`` itself, so autograd
    carries the gradient of anything computed on the result back to this rank's slice only.
    """
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    parts[rank()] = tensor
    return torch.cat(parts, dim=0)


_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """SplitMix64's finaliser (Steele et al. 2014): a bijection of 64-bit integers that scrambles every bit."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def step_seed(seed: int, epoch: int, step: int) -> int:
    """The seed of training step ``step`` of ``epoch``: the same on every rank and for any number of ranks.

    SplitMix64 chained over (seed, epoch, step), in plain Python: about 1 us per step (numpy's SeedSequence took
    ~60 us, a visible share of a small loss's step)."""
    x = _mix64((int(seed) + 0x9E3779B97F4A7C15) & _MASK64)
    x = _mix64(((x ^ int(epoch)) + 0x9E3779B97F4A7C15) & _MASK64)
    return _mix64(((x ^ int(step)) + 0x9E3779B97F4A7C15) & _MASK64)


@contextlib.contextmanager
def shared_rng(seed: int, device: torch.device):
    """Within the block torch's CPU generator (and ``device``'s CUDA generator) start from ``seed``; outside it
    they continue as if the block had drawn nothing.

    The loss's random draws (miners, vMF samples) on the gathered batch must be the same on every rank, whose
    own generators differ (seeded by ``--seed`` + rank): with a seed from ``step_seed`` they are, and are also
    those of a single process on the same batch.
    """
    generators = [torch.default_generator]  # get_state / set_state directly: torch.random.fork_rng's checks and
    if device.type == "cuda":  # warnings cost as much again, every training step
        generators.append(torch.cuda.default_generators[device.index if device.index is not None
                                                        else torch.cuda.current_device()])  # fmt: skip
    states = [g.get_state() for g in generators]
    for g in generators:
        g.manual_seed(seed)
    try:
        yield
    finally:
        for g, state in zip(generators, states):
            g.set_state(state)


def gather_cat_cpu(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Concatenate each CPU tensor over all ranks along dim 0 (shards may differ in length; no gradients).

    Used to collect the evaluation shards; the identity without a process group.
    """
    if world_size() == 1:
        return list(tensors)
    parts = [None] * world_size()
    dist.all_gather_object(parts, tensors)
    return [torch.cat([p[i] for p in parts]) for i in range(len(tensors))]


def broadcast_object(obj, src: int = 0):
    """``obj`` as rank ``src`` holds it, on every rank (any picklable object)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_module(module: torch.nn.Module, src: int = 0, buffers_only: bool = False) -> None:
    """Overwrite, in place, every parameter and buffer (or only the buffers, e.g. BatchNorm
    running statistics) with rank ``src``'s values."""
    if world_size() == 1:
        return
    tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=src)


def all_reduce_gradients(params, loss: torch.Tensor, summed=()) -> float:
    """Reduce the gradients of ``params`` over all ranks, in place: the sum for those also in ``summed``, the
    mean for the others; return the mean loss.

    ``summed``: the parameters whose gradient each rank holds only a share of (the model's, when the loss ran on
    the gathered batch: each rank backpropagates into its own slice). Averaged: those whose gradient each rank
    holds in full (the loss's own parameters on the gathered batch) or as the mean over its slice (a per-rank
    loss that averages over its samples). A parameter that has a gradient on some rank but not on this one (e.g.
    no mined tuple touched it here) takes part with zeros, so every rank ends with the same gradients; one that
    has none anywhere keeps ``grad = None``. The returned loss is non-finite when any rank's loss is, so all
    ranks can stop together.
    """
    params = list(params)
    if world_size() == 1:
        return float(loss.detach())
    n = world_size()
    summed_ids = {id(p) for p in summed}
    status = torch.zeros(len(params) + 1, dtype=torch.float64, device=loss.device)
    status[: len(params)] = torch.tensor([p.grad is not None for p in params], dtype=torch.float64)
    status[-1] = loss.detach().double()
    dist.all_reduce(status)
    have = status[: len(params)].tolist()
    present = [p for p, h in zip(params, have) if h > 0]
    for p in present:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    by_kind: dict[tuple, list[torch.Tensor]] = {}
    for p in present:
        by_kind.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
    averaged = [p.grad for p in present if id(p) not in summed_ids]  # a mean: each rank's part / n, then the sum
    if averaged:
        torch._foreach_div_(averaged, n)
    for grads in by_kind.values():  # one collective per (device, dtype)
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
    return status[-1].item() / n


def any_rank(value: int | None) -> int | None:
    """``value`` (e.g. a signal number) if some rank holds one, so that every rank stops at the same step."""
    if world_size() == 1:
        return value
    flag = torch.tensor([value or 0], dtype=torch.int64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
