"""Embeddings of a whole split: model in eval mode, no gradients, optional autocast."""

from __future__ import annotations

import torch
from tqdm import tqdm

from utilities.distributed import gather_cat_cpu
from utilities.precision import autocast


def extract_embeddings(
    model: torch.nn.Module,
    loader,
    device: str | torch.device,
    amp: str = "none",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed every batch of ``loader``; return (float32 [N, D] on CPU, LongTensor [N] labels).

    The loader yields ``(images, labels, indices)``; rows come back ordered by dataset index
    (so a shuffling or sharded sampler does not permute them), and under DDP each rank's
    shard is gathered and duplicates from the sampler's padding are dropped. An
    ``(images, labels)`` loader is accepted outside DDP; its rows keep the loader's order. A model
    returning a tuple (embeddings, features) contributes its first element. ``amp`` 'bf16' /
    'fp16' autocasts on CUDA; the output is cast to float32. The model is put in eval mode
    and its previous train/eval mode is restored afterwards.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    embeds, labels, indices = [], [], []
    seen = 0
    try:
        with torch.no_grad(), autocast(amp, device):
            for batch in tqdm(loader, desc="Embedding", disable=not progress, leave=False):
                images, batch_labels, *rest = batch
                batch_indices = rest[0] if rest else torch.arange(seen, seen + len(images))
                seen += len(images)
                out = model(images.to(device, non_blocking=True))
                if isinstance(out, (tuple, list)):
                    out = out[0]
                embeds.append(out.detach().float().cpu())
                labels.append(torch.as_tensor(batch_labels).reshape(-1).long().cpu())
                indices.append(torch.as_tensor(batch_indices).reshape(-1).long().cpu())
    finally:
        model.train(was_training)
    if not embeds:
        raise ValueError("extract_embeddings: the loader yielded no batches")
    x, y, idx = gather_cat_cpu(torch.cat(embeds), torch.cat(labels), torch.cat(indices))
    idx, order = torch.sort(idx, stable=True)
    first = torch.ones_like(idx, dtype=torch.bool)
    first[1:] = idx[1:] != idx[:-1]  # drop repeats (DistributedSampler pads shards with duplicates)
    order = order[first]
    return x[order].contiguous(), y[order].contiguous()
