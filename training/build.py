"""Build a run from the options: device, data, model, miner, loss, sampler, loaders, optimiser, scheduler.

``build_run(opt)`` reads the options once and returns a ``Run`` holding every part; facts learned
from the data (number of train classes, input shape, effective batch size) are passed to the
components explicitly and kept on the ``Run``. Nothing here trains or writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

import architectures
import batch_mining
import criteria
import datasampler
import datasets
from utilities import distributed, precision, seeding

EVAL_BATCH_MIN = 128  # evaluation batches hold max(--bs, this) images: no gradients, so bigger is cheaper


@dataclass
class Run:
    """Every part of one training run, built from ``opt`` (see ``build_run``)."""

    opt: object
    rank: int
    world_size: int
    device: torch.device
    data: dict  # datasets.select: training / evaluation / validation / testing
    n_classes: int  # train classes
    input_shape: tuple  # (C, H, W) of a training image
    model: torch.nn.Module
    miner: object | None
    criterion: torch.nn.Module
    sampler: object
    train_loader: DataLoader
    eval_splits: dict  # split name -> dataset, in evaluation order
    selection_split: str  # where storage metrics are selected: validation if present, else testing
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    scaler: torch.amp.GradScaler
    batch_transform: object = None  # uint8 training batches (--decode_cache): converted / normalised on the device

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and logs."""
        return self.rank == 0

    @property
    def batch_size(self) -> int:
        """The effective (global) batch size: the sampler's (``--bs``, or the episodic sampler's own)."""
        return int(self.sampler.batch_size)

    def images_to_device(self, images: torch.Tensor) -> torch.Tensor:
        """A training batch on the device as the network's float input: uint8 batches of the decode cache travel
        as uint8 (pinned on CUDA) and are converted and normalised there (``batch_transform``)."""
        images = images.to(self.device, non_blocking=True)
        if images.dtype == torch.uint8 and self.batch_transform is not None:
            images = self.batch_transform(images)
        return images

    def describe(self) -> str:
        opt = self.opt
        n_params = sum(p.numel() for p in self.model.parameters())
        sizes = ", ".join(f"{k} {len(v)}" + split_sizes(v) for k, v in self.data.items()
                          if v is not None and k != "evaluation")  # fmt: skip
        return (f"dataset {opt.dataset} ({sizes}; {self.n_classes} train classes) | arch {opt.arch} "
                f"({n_params / 1e6:.2f}M params) | loss {opt.loss} | miner {opt.batch_mining} | "
                f"sampler {opt.data_sampler} ({len(self.sampler)} batches/epoch of {self.batch_size}) | "
                f"device {self.device} | selection split: {self.selection_split}")  # fmt: skip


def split_sizes(dataset) -> str:
    """`` (Q queries -> G gallery)`` for a query -> gallery split, else nothing."""
    if dataset.query is None:
        return ""
    return f" ({int(dataset.query.sum())} queries -> {int(dataset.gallery.sum())} gallery)"


def pick_device(opt) -> torch.device:
    """``cuda:<LOCAL_RANK or first --gpu>`` when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', opt.gpu[0]))}")
    return torch.device("cpu")


def eval_loader(dataset, opt, shard: bool = True) -> DataLoader:
    """Loader of a whole split in dataset order; under DDP (and ``shard``) each rank embeds its
    own shard (``evaluation.extract_embeddings`` gathers the shards and drops the padding)."""
    sampler = None
    if shard and distributed.world_size() > 1:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=distributed.world_size(), rank=distributed.rank(), shuffle=False
        )
    return DataLoader(dataset, batch_size=max(opt.bs, EVAL_BATCH_MIN), shuffle=False, sampler=sampler,
                      num_workers=opt.kernels, worker_init_fn=seeding.worker_init_fn,
                      pin_memory=torch.cuda.is_available())  # fmt: skip


def make_train_loader(dataset, batch_sampler, opt, device: torch.device) -> DataLoader:
    """The training loader: ``--kernels`` workers, batches pinned when training on CUDA. The decode cache's
    training split (``--decode_cache``) yields uint8 images, converted on the device (``Run.images_to_device``)."""
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=opt.kernels,
                      worker_init_fn=seeding.worker_init_fn, pin_memory=device.type == "cuda")  # fmt: skip


def exclude_1d_from_decay(groups: list[dict]) -> list[dict]:
    """``--decay_exclude_1d``: split every group with weight decay into its decayed part (same
    name) and a ``<name>_no_decay`` part with ``weight_decay`` 0 holding the parameters with
    dim <= 1 (biases, BatchNorm affine, scalars), as the vMF paper's code decays only the rest;
    all other settings (lr, momentum, ...) are kept. Groups without decay are unchanged."""
    out = []
    for group in groups:
        if not group.get("weight_decay", 0.0):
            out.append(group)
            continue
        params = list(group["params"])
        exempt = [p for p in params if p.ndim <= 1]
        decayed = [p for p in params if p.ndim > 1]
        if decayed:
            out.append({**group, "params": decayed})
        if exempt:
            out.append({**group, "params": exempt, "weight_decay": 0.0,
                        "name": f"{group.get('name', 'group')}_no_decay"})  # fmt: skip
    return out


def model_param_groups(model: torch.nn.Module, opt) -> list[dict]:
    """Backbone at ``--lr`` and head at ``--fc_lr`` (if set), both with ``--decay``."""
    head = list(model.head_parameters()) if hasattr(model, "head_parameters") else []
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    fc_lr = opt.fc_lr if opt.fc_lr > 0 else opt.lr
    groups = [{"params": backbone, "lr": opt.lr, "weight_decay": opt.decay, "name": "backbone"}]
    if head:
        groups.append(
            {"params": [p for p in head if p.requires_grad], "lr": fc_lr, "weight_decay": opt.decay, "name": "head"}
        )
    return [g for g in groups if g["params"]]


def param_groups(model: torch.nn.Module, criterion, opt) -> list[dict]:
    """The model's groups and the criterion's own; with ``--decay_exclude_1d`` 1-d parameters lose their decay."""
    groups = model_param_groups(model, opt) + criterion.param_groups()
    return exclude_1d_from_decay(groups) if opt.decay_exclude_1d else groups


def build_optimizer(groups: list[dict], opt) -> torch.optim.Optimizer:
    if opt.optim == "adam":
        return torch.optim.Adam(groups)
    if opt.optim == "adamw":
        return torch.optim.AdamW(groups)
    # Groups may set their own momentum (the vMF softmax temperature uses none).
    return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov and opt.momentum > 0)


def build_scheduler(optimizer, opt):
    if opt.scheduler == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=opt.tau, gamma=opt.gamma)
    if opt.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=opt.plateau_factor, patience=opt.plateau_patience
        )
    return None


def build_model_and_loss(opt, n_classes: int, input_shape: tuple, device: torch.device):
    """(model, miner, criterion) of the options, on ``device``; the miner gets the loss's margin."""
    model = architectures.select(opt.arch, opt, input_shape=input_shape).to(device)
    loss_class = criteria.get_class(opt.loss)
    miner = (
        batch_mining.select(opt.batch_mining, opt, margin=loss_class.miner_margin(opt)) if opt.batch_mining else None
    )
    criterion = criteria.select(opt.loss, opt, miner, n_classes=n_classes).to(device)
    return model, miner, criterion


def evaluation_splits(data: dict, opt) -> dict:
    """The splits evaluated, in order: the training images (unless ``--no_train_metrics``), validation, test."""
    splits = {} if opt.no_train_metrics else {"training": data["evaluation"]}
    if data.get("validation") is not None:
        splits["validation"] = data["validation"]
    splits["testing"] = data["testing"]
    return splits


def build_run(opt) -> Run:
    """Start DDP if launched by torchrun, seed, load the data and build every component of the run."""
    rank, world_size = distributed.init_distributed()
    seeding.set_seed(opt.seed + rank)
    device = pick_device(opt)
    precision.configure_backends(opt, device)  # --cudnn_benchmark (after the seeding's deterministic cuDNN)

    data = datasets.select(opt.dataset, opt)
    train = data["training"]
    n_classes = int(len(np.unique(train.labels)))
    input_shape = tuple(train[0][0].shape)
    model, miner, criterion = build_model_and_loss(opt, n_classes, input_shape, device)
    sampler = datasampler.select(opt.data_sampler, opt, np.asarray(train.labels))
    if world_size > 1:
        sampler.set_distributed(rank, world_size)
    train_loader = make_train_loader(train, sampler, opt, device)
    eval_splits = evaluation_splits(data, opt)
    optimizer = build_optimizer(param_groups(model, criterion, opt), opt)
    return Run(
        opt=opt, rank=rank, world_size=world_size, device=device, data=data, n_classes=n_classes,
        input_shape=input_shape, model=model, miner=miner, criterion=criterion, sampler=sampler,
        train_loader=train_loader, eval_splits=eval_splits,
        selection_split="validation" if "validation" in eval_splits else "testing",
        optimizer=optimizer, scheduler=build_scheduler(optimizer, opt),
        scaler=precision.grad_scaler(opt.amp, device),
        batch_transform=getattr(train, "device_transform", None),
    )  # fmt: skip
