"""The training loop: build components from ``opt``, train, evaluate, select, save.

One ``Trainer`` per run. ``Trainer(opt).fit()`` does what ``python main.py`` does.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import architectures
import batch_mining
import criteria
import datasampler
import datasets
import evaluation
from architectures._base import BN_TYPES
from evaluation.selection import ModelSelector
from utilities import checkpoint, distributed, run_folder, seeding
from utilities.errors import UserError
from utilities.plotting import plot_progression

log = logging.getLogger("dml")


def pick_device(opt) -> torch.device:
    if torch.cuda.is_available():
        local = int(__import__("os").environ.get("LOCAL_RANK", opt.gpu[0]))
        return torch.device(f"cuda:{local}")
    return torch.device("cpu")


def autocast(opt, device: torch.device):
    """bf16/fp16 autocast on GPU; the loss and metrics stay in float32."""
    if opt.amp == "none" or device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if opt.amp == "bf16" else torch.float16)


def eval_loader(dataset, opt, shard: bool = True) -> DataLoader:
    """Loader of a whole split in dataset order; under DDP (and ``shard``) each rank embeds its
    own shard (``evaluation.extract_embeddings`` gathers the shards and drops the padding)."""
    sampler = None
    if shard and distributed.world_size() > 1:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=distributed.world_size(), rank=distributed.rank(), shuffle=False
        )
    return DataLoader(dataset, batch_size=max(opt.bs, 128), shuffle=False, sampler=sampler, num_workers=opt.kernels,
                      worker_init_fn=seeding.worker_init_fn)  # fmt: skip


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
    """Backbone at ``--lr`` and head at ``--fc_lr`` (if set), both with ``--decay``; with
    ``--decay_exclude_1d`` their biases and 1-d parameters go to ``*_no_decay`` groups."""
    head = list(model.head_parameters()) if hasattr(model, "head_parameters") else []
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    fc_lr = opt.fc_lr if opt.fc_lr > 0 else opt.lr
    groups = [{"params": backbone, "lr": opt.lr, "weight_decay": opt.decay, "name": "backbone"}]
    if head:
        groups.append(
            {"params": [p for p in head if p.requires_grad], "lr": fc_lr, "weight_decay": opt.decay, "name": "head"}
        )
    groups = [g for g in groups if g["params"]]
    return exclude_1d_from_decay(groups) if getattr(opt, "decay_exclude_1d", False) else groups


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


@dataclass
class TrainState:
    epoch: int = 0  # last finished epoch
    stop_reason: str = "n_epochs reached"
    evaluations: list = field(default_factory=list)


class Trainer:
    """Builds every component of a run from ``opt`` and runs training."""

    def __init__(self, opt):
        self.opt = opt
        self.rank, self.world_size = distributed.init_distributed()
        self.main = self.rank == 0
        seeding.set_seed(opt.seed + self.rank)
        self.device = pick_device(opt)
        self.show_progress = self.main and not opt.no_progress

        self.data = datasets.select(opt.dataset, opt)
        train = self.data["training"]
        opt.n_classes = int(len(np.unique(train.labels)))
        opt.input_shape = tuple(train[0][0].shape)
        self.model = architectures.select(opt.arch, opt).to(self.device)
        self.miner = batch_mining.select(opt.batch_mining, opt) if opt.batch_mining else None
        self.criterion = criteria.select(opt.loss, opt, self.miner).to(self.device)
        self.sampler = datasampler.select(opt.data_sampler, opt, np.asarray(train.labels))
        if self.world_size > 1:
            self.sampler.set_distributed(self.rank, self.world_size)
        self.train_loader = DataLoader(train, batch_sampler=self.sampler, num_workers=opt.kernels,
                                       worker_init_fn=seeding.worker_init_fn)  # fmt: skip
        self.eval_splits = {}
        if not opt.no_train_metrics:
            self.eval_splits["training"] = self.data["evaluation"]
        if self.data.get("validation") is not None:
            self.eval_splits["validation"] = self.data["validation"]
        self.eval_splits["testing"] = self.data["testing"]
        self.selection_split = "validation" if "validation" in self.eval_splits else "testing"

        criterion_groups = self.criterion.param_groups()
        if getattr(opt, "decay_exclude_1d", False):
            criterion_groups = exclude_1d_from_decay(criterion_groups)
        groups = model_param_groups(self.model, opt) + criterion_groups
        self.optimizer = build_optimizer(groups, opt)
        self.scheduler = build_scheduler(self.optimizer, opt)
        self.scaler = torch.amp.GradScaler("cuda", enabled=opt.amp == "fp16" and self.device.type == "cuda")
        self.selector = ModelSelector(opt.storage_metrics)
        self.state = TrainState()
        self.run_dir: Path | None = None
        self.last_plot = 0.0

    # ------------------------------------------------------------------ set-up
    def describe(self) -> str:
        n_params = sum(p.numel() for p in self.model.parameters())
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.data.items() if v is not None and k != "evaluation")
        return (f"dataset {self.opt.dataset} ({sizes}; {self.opt.n_classes} train classes) | arch {self.opt.arch} "
                f"({n_params / 1e6:.2f}M params) | loss {self.opt.loss} | miner {self.opt.batch_mining} | "
                f"sampler {self.opt.data_sampler} ({len(self.sampler)} batches/epoch) | device {self.device} | "
                f"selection split: {self.selection_split}")  # fmt: skip

    def open_run_folder(self) -> None:
        if self.main:
            self.run_dir = run_folder.make_run_dir(self.opt)
        self.logger = run_folder.setup_logging(self.run_dir, self.main)
        if not self.main:
            return
        run_folder.write_config(self.run_dir, self.opt)
        self.csv = run_folder.MetricCSV(self.run_dir)
        self.wandb = None
        if self.opt.log_online:
            from utilities.wandb_logger import WandbLogger

            name = run_folder.run_name(self.opt)
            self.wandb = WandbLogger(self.opt, self.run_dir, run_folder.public_config(self.opt), name)

    def resume(self) -> None:
        path = Path(self.opt.resume) / checkpoint.LAST
        if not path.is_file():
            raise UserError(f"--resume {self.opt.resume}: no {checkpoint.LAST} there; pass a run folder of this suite")
        state = checkpoint.load(path, self.device)
        self.model.load_state_dict(state["model"])
        self.criterion.load_state_dict(state["criterion"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.selector.load_state_dict(state["selector"])
        self.state = state["train_state"]
        seeding.set_rng_state(state["rng"])
        log.info(f"resumed from {path} after epoch {self.state.epoch}")

    # ---------------------------------------------------------------- training
    def set_backbone_trainable(self, trainable: bool) -> None:
        """Freeze the backbone for ``--warmup`` epochs; afterwards restore each parameter's own flag."""
        if not hasattr(self, "_backbone_flags"):
            self._backbone_flags = [(p, p.requires_grad) for p in self.model.backbone_parameters()]
        for p, flag in self._backbone_flags:
            p.requires_grad_(flag and trainable)

    def backbone_batchnorms(self) -> list[torch.nn.Module]:
        """BatchNorm layers outside the head (their statistics stay fixed during ``--warmup``)."""
        head = {id(p) for p in self.model.head_parameters()} if hasattr(self.model, "head_parameters") else set()
        return [m for m in self.model.modules() if isinstance(m, BN_TYPES)
                and not any(id(p) in head for p in m.parameters(recurse=False))]  # fmt: skip

    def embed_split(self, dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (eval mode, no augmentation) and labels of a whole split, in dataset order."""
        distributed.broadcast_module(self.model, buffers_only=True)  # same BN statistics on every shard
        return evaluation.extract_embeddings(self.model, eval_loader(dataset, self.opt), self.device,
                                             amp=self.opt.amp, progress=self.show_progress)  # fmt: skip

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"] if p.requires_grad]

    def refresh_storage(self, epoch: int) -> None:
        """``--data_idx_full_prec``: re-embed the whole training set at the start of every
        epoch after the first (as the Roth suite), momentum ``--data_mb_mom`` if > 0. Skipped
        at the first epoch of a run or resumed run, whose storage was just computed."""
        if not getattr(self.sampler, "full_refresh", False) or epoch <= getattr(self, "_storage_epoch", 1):
            return
        emb, _ = self.embed_split(self.data["evaluation"])
        self.sampler.full_storage_update(emb)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        opt = self.opt
        storage = getattr(self.sampler, "requires_storage", False)
        start = time.time()
        if storage:
            self.refresh_storage(epoch)
        self.model.train()
        self.criterion.train()
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.criterion.on_epoch_start(epoch)
        warm = epoch <= opt.warmup
        if opt.warmup:
            self.set_backbone_trainable(not warm)
        if warm:  # the frozen backbone's BatchNorm statistics stay fixed too
            for bn in self.backbone_batchnorms():
                bn.eval()
        losses = []
        bar = tqdm(self.train_loader, desc=f"epoch {epoch}/{opt.n_epochs}" + (" (warm-up)" if warm else ""),
                   disable=not self.show_progress, leave=False, dynamic_ncols=True)  # fmt: skip
        for step, (images, labels, indices) in enumerate(bar):
            images, labels = images.to(self.device, non_blocking=True), labels.to(self.device)
            with autocast(opt, self.device):
                embeds = self.model(images)
            if storage:  # storage samplers keep the train-set embeddings current; under DDP the global batch
                self.sampler.replace_storage_entries(
                    distributed.all_gather_cat(embeds.detach().float()).cpu(),
                    distributed.all_gather_cat(torch.as_tensor(indices).to(self.device)).cpu(),
                )
            loss = self.criterion(embeds.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            value = distributed.all_reduce_gradients(self.trainable_parameters(), loss)  # mean over ranks
            if not math.isfinite(value):  # under DDP: on every rank when any rank's loss is non-finite
                self.non_finite(value, epoch, step)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            losses.append(value)
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        bar.close()
        return {"loss": float(np.mean(losses)) if losses else float("nan"), "time": time.time() - start,
                "lr": self.optimizer.param_groups[0]["lr"]}  # fmt: skip

    def non_finite(self, value: float, epoch: int, step: int):
        raise UserError(
            f"non-finite loss ({value}) at epoch {epoch}, batch {step}; lower --lr or check the data "
            f"(run folder kept: {self.run_dir})"
        )

    # -------------------------------------------------------------- evaluation
    def evaluate(self, epoch: int) -> tuple[dict[str, dict[str, float]], dict[str, tuple]]:
        """Metrics per evaluated split, and the embeddings they came from (both empty on ranks other than 0)."""
        opt = self.opt
        # DESIGN: torch k-NN on the GPU whenever training runs there; --evaluate_on_cpu forces faiss.
        metric_device = self.device if self.device.type == "cuda" and not opt.evaluate_on_cpu else "cpu"
        results, embeddings = {}, {}
        for split, dataset in self.eval_splits.items():
            start = time.time()
            emb, labels = self.embed_split(dataset)  # collective under DDP: every rank takes part
            if not self.main:  # only rank 0 uses metrics; its decisions are broadcast
                continue
            values = evaluation.compute_metrics(emb, labels, opt.evaluation_metrics, device=metric_device)
            values.update(self.criterion.evaluate(emb, labels, split))
            values["eval_time"] = time.time() - start
            results[split], embeddings[split] = values, (emb, labels)
        return results, embeddings

    def metrics_table(self, epoch: int, results: dict[str, dict[str, float]]) -> str:
        splits = list(results)
        shown = set(self.opt.evaluation_metrics) | {"eval_time"}
        names = list(self.opt.evaluation_metrics) + sorted({k for v in results.values() for k in v} - shown)
        width = max(len(n) for n in names) + 2
        head = f"{'epoch ' + str(epoch):<{width}}" + "".join(f"{s:>12}" for s in splits)
        rows = [head, "-" * len(head)]
        for name in names:
            rows.append(f"{name:<{width}}" + "".join(f"{results[s].get(name, float('nan')):>12.4f}" for s in splits))
        return "\n".join(rows)

    def save_embeddings(self, embeddings: dict[str, tuple]) -> None:
        """``embeddings_<split>.npz``: embeddings, labels, norms, the criterion's ``export()`` (class
        weights, temperature, ...) and its per-image ``export_embeddings(emb)`` (e.g. kappas) if any."""
        extras = self.criterion.export()
        per_image = getattr(self.criterion, "export_embeddings", None)
        for split, (emb, labels) in embeddings.items():
            arrays = {"embeddings": emb.numpy(), "labels": labels.numpy(), "norms": emb.norm(dim=1).numpy(), **extras}
            arrays |= per_image(emb) if per_image is not None else {}
            np.savez(self.run_dir / f"embeddings_{split}.npz", **arrays)

    def save_last(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "criterion": self.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "selector": self.selector.state_dict(),
            "train_state": self.state,
            "rng": seeding.rng_state(),
            "opt": run_folder.public_config(self.opt),
        }
        checkpoint.save(state, self.run_dir / checkpoint.LAST)

    def log_training(self, epoch: int, train_stats: dict) -> None:
        """The training row (loss, lr, epoch time) of an epoch without evaluation."""
        self.csv.log("training", epoch, train_stats)
        if self.wandb is not None:
            self.wandb.log({f"training/{k}": v for k, v in train_stats.items()}, step=epoch)

    def after_evaluation(self, epoch: int, train_stats: dict, results: dict, embeddings: dict) -> None:
        log.info(self.metrics_table(epoch, results))
        for split, values in results.items():
            self.csv.log(split, epoch, values | (train_stats if split == "training" else {}))
        if "training" not in results:
            self.csv.log("training", epoch, train_stats)
        if self.wandb is not None:
            flat = {f"{split}/{k}": v for split, vals in results.items() for k, v in vals.items()}
            self.wandb.log(flat | {f"training/{k}": v for k, v in train_stats.items()}, step=epoch)
        improved = self.selector.update(epoch, results, self.selection_split)
        for metric in improved:
            state = {"model": self.model.state_dict(), "criterion": self.criterion.state_dict(), "epoch": epoch,
                     "metrics": results, "selection_split": self.selection_split,
                     "opt": run_folder.public_config(self.opt)}  # fmt: skip
            checkpoint.save(state, self.run_dir / checkpoint.metric_filename(metric))
            log.info(f"  new best {metric} on {self.selection_split}: {results[self.selection_split][metric]:.4f}")
        if self.opt.storage_metrics[0] in improved or not (self.run_dir / "embeddings_testing.npz").exists():
            self.save_embeddings(embeddings)
        if time.time() - self.last_plot > 60:  # plotting is slow: at most once a minute, and at the end
            self.plot()
        self.write_summary()

    def plot_uncertainty(self) -> None:
        """Rejection curve and least/most certain images of the test split (selected model)."""
        from utilities.uncertainty_plots import plot_certainty_grid, plot_rejection_curve

        saved = np.load(self.run_dir / "embeddings_testing.npz")
        plot_rejection_curve(saved["embeddings"], saved["labels"], self.run_dir / "uncertainty_rejection.png")
        plot_certainty_grid(
            self.data["testing"], saved["norms"], saved["labels"], self.run_dir / "uncertainty_grid.png"
        )

    def plot(self) -> None:
        plot_progression(self.csv.history, self.run_dir / "progression.png", title=run_folder.run_name(self.opt))
        self.last_plot = time.time()

    def write_summary(self) -> None:
        note = ("held-out validation classes" if self.selection_split == "validation"
                else "no validation split: selected on the test split, the protocol of the original papers")  # fmt: skip
        run_folder.write_summary(self.run_dir, {
            "run": str(self.run_dir), "command": self.opt.command, "selection_split": self.selection_split,
            "selection_note": note, "splits": list(self.eval_splits), "best": self.selector.summary(),
            "epochs_run": self.state.epoch, "stop_reason": self.state.stop_reason,
        })  # fmt: skip

    def plateau_value(self, results: dict | None) -> float | None:
        """The plateau scheduler's input: the first storage metric on the selection split."""
        return results[self.selection_split].get(self.opt.storage_metrics[0], float("nan")) if results else None

    def step_scheduler(self, value: float | None) -> None:
        """One scheduler step per epoch; ReduceLROnPlateau only on a present, non-NaN ``value``."""
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if value is not None and value == value:
                self.scheduler.step(value)
        else:
            self.scheduler.step()

    def fit(self) -> Path | None:
        """Train for ``--n_epochs``, evaluating every ``--eval_every``; returns the run folder."""
        opt = self.opt
        self.open_run_folder()
        self.last_plot = time.time()  # the first progression plot after a minute (and always at the end)
        log.info(self.describe())
        if opt.resume:
            self.resume()
        else:
            distributed.broadcast_module(self.model)  # every rank starts from rank 0's initialisation
            # Unsharded: a hook may iterate the loader itself (vMF softmax's scale uses every image).
            self.criterion.prepare(self.model, eval_loader(self.data["evaluation"], opt, shard=False), self.device)
            distributed.broadcast_module(self.criterion)
        if getattr(self.sampler, "requires_storage", False):
            emb, _ = self.embed_split(self.data["evaluation"])
            self.sampler.init_storage(emb)
            self._storage_epoch = self.state.epoch + 1  # no full refresh right after this
        for epoch in range(self.state.epoch + 1, opt.n_epochs + 1):
            train_stats = self.train_epoch(epoch)
            self.state.epoch = epoch
            log.info(f"epoch {epoch}: loss {train_stats['loss']:.4f} ({train_stats['time']:.1f}s)")
            results = None
            if epoch % opt.eval_every == 0 or epoch == opt.n_epochs:
                results, embeddings = self.evaluate(epoch)
                if self.main:
                    self.after_evaluation(epoch, train_stats, results, embeddings)
            elif self.main:
                self.log_training(epoch, train_stats)
            # Rank 0 alone selects models: its decisions drive every rank.
            stop = opt.early_stop_patience > 0 and self.selector.evals_since_best() >= opt.early_stop_patience
            stop, value = distributed.broadcast_object((bool(stop), self.plateau_value(results)))
            self.step_scheduler(value)
            if stop:
                self.state.stop_reason = (
                    f"early stop: no improvement of {opt.storage_metrics[0]} in {opt.early_stop_patience} evaluations"
                )
            if self.main:
                self.save_last()
            if stop:
                log.info(self.state.stop_reason)
                break
        if self.main:
            self.plot()
            if self.criterion.norm_is_certainty:
                self.plot_uncertainty()
            self.write_summary()
            log.info(f"run folder: {self.run_dir}")
            if self.opt.log_online and self.wandb is not None:
                self.wandb.finish()
        distributed.cleanup()
        return self.run_dir
