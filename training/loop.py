"""The epoch/step loop: warm-up, AMP, storage samplers, DDP, evaluation and model selection.

``Trainer(run, hooks).fit()`` trains the parts of a ``training.build.Run``; everything the run
records (run folder files, W&B, plots) is attached through ``training.hooks.Hook`` objects.
``Trainer.from_options(opt)`` builds the run and attaches the suite's recording hooks, which is
what ``python main.py`` does.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import evaluation
from architectures import BN_TYPES
from evaluation.selection import ModelSelector
from training import checkpoint, run_folder
from training.build import Run, build_run, eval_loader
from training.hooks import Evaluation, Hook
from training.recording import default_hooks, run_facts
from utilities import distributed, seeding
from utilities.errors import UserError
from utilities.precision import autocast

log = logging.getLogger("dml")


@dataclass
class TrainState:
    epoch: int = 0  # last finished epoch
    stop_reason: str = "n_epochs reached"


class Trainer:
    """Trains one ``Run``; ``hooks`` record it (rank 0 only)."""

    def __init__(self, run: Run, hooks: list[Hook] | None = None):
        self.run = run
        self.opt = run.opt
        self.hooks = list(hooks or [])
        self.show_progress = run.main and not self.opt.no_progress
        self.selector = ModelSelector(self.opt.storage_metrics)
        self.state = TrainState()
        self.run_dir: Path | None = None
        self.storage_epoch = 1  # the storage samplers' storage is fresh before this epoch
        self.backbone_flags = [(p, p.requires_grad) for p in self.run.model.backbone_parameters()] \
            if hasattr(self.run.model, "backbone_parameters") else []  # fmt: skip

    @classmethod
    def from_options(cls, opt) -> Trainer:
        """The run of ``opt`` with the suite's recording hooks (what ``python main.py`` trains)."""
        return cls(build_run(opt), default_hooks(opt))

    # ------------------------------------------------------------------ the seam
    def emit(self, event: str, *args) -> None:
        if self.run.main:
            for hook in self.hooks:
                getattr(hook, event)(self, *args)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything ``--resume`` needs: model, loss, optimiser, scheduler, selection, loop state, RNG states."""
        run = self.run
        return {
            "model": run.model.state_dict(),
            "criterion": run.criterion.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
            "selector": self.selector.state_dict(),
            "train_state": asdict(self.state),
            "rng": seeding.rng_state(),
            "opt": run_folder.public_config(self.opt),
            "facts": run_facts(run),
        }

    def resume(self) -> None:
        path = Path(self.opt.resume) / checkpoint.LAST
        if not path.is_file():
            raise UserError(f"--resume {self.opt.resume}: no {checkpoint.LAST} there; pass a run folder of this suite")
        state = checkpoint.load(path, self.run.device)
        self.run.model.load_state_dict(state["model"])
        self.run.criterion.load_state_dict(state["criterion"])
        self.run.optimizer.load_state_dict(state["optimizer"])
        if self.run.scheduler is not None and state.get("scheduler"):
            self.run.scheduler.load_state_dict(state["scheduler"])
        self.selector.load_state_dict(state["selector"])
        self.state = TrainState(**state["train_state"])
        seeding.set_rng_state(state["rng"])
        log.info(f"resumed from {path} after epoch {self.state.epoch}")

    # ---------------------------------------------------------------- training
    def set_backbone_trainable(self, trainable: bool) -> None:
        """Freeze the backbone for ``--warmup`` epochs; afterwards restore each parameter's own flag."""
        for p, flag in self.backbone_flags:
            p.requires_grad_(flag and trainable)

    def backbone_batchnorms(self) -> list[torch.nn.Module]:
        """BatchNorm layers outside the head (their statistics stay fixed during ``--warmup``)."""
        model = self.run.model
        head = {id(p) for p in model.head_parameters()} if hasattr(model, "head_parameters") else set()
        return [m for m in model.modules() if isinstance(m, BN_TYPES)
                and not any(id(p) in head for p in m.parameters(recurse=False))]  # fmt: skip

    def embed_split(self, dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (eval mode, no augmentation) and labels of a whole split, in dataset order."""
        distributed.broadcast_module(self.run.model, buffers_only=True)  # same BN statistics on every shard
        return evaluation.extract_embeddings(self.run.model, eval_loader(dataset, self.opt), self.run.device,
                                             amp=self.opt.amp, progress=self.show_progress)  # fmt: skip

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for g in self.run.optimizer.param_groups for p in g["params"] if p.requires_grad]

    def uses_storage(self) -> bool:
        return getattr(self.run.sampler, "requires_storage", False)

    def refresh_storage(self, epoch: int) -> None:
        """``--data_idx_full_prec``: re-embed the whole training set at the start of every
        epoch after the first (as the Roth suite), momentum ``--data_mb_mom`` if > 0. Skipped
        at the first epoch of a run or resumed run, whose storage was just computed."""
        if not self.run.sampler.full_refresh or epoch <= self.storage_epoch:
            return
        emb, _ = self.embed_split(self.run.data["evaluation"])
        self.run.sampler.full_storage_update(emb)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        opt, run = self.opt, self.run
        storage = self.uses_storage()
        start = time.time()
        if storage:
            self.refresh_storage(epoch)
        run.model.train()
        run.criterion.train()
        if hasattr(run.sampler, "set_epoch"):
            run.sampler.set_epoch(epoch)
        run.criterion.on_epoch_start(epoch)
        warm = epoch <= opt.warmup
        if opt.warmup:
            self.set_backbone_trainable(not warm)
        if warm:  # the frozen backbone's BatchNorm statistics stay fixed too
            for bn in self.backbone_batchnorms():
                bn.eval()
        losses = []
        bar = tqdm(run.train_loader, desc=f"epoch {epoch}/{opt.n_epochs}" + (" (warm-up)" if warm else ""),
                   disable=not self.show_progress, leave=False, dynamic_ncols=True)  # fmt: skip
        for step, (images, labels, indices) in enumerate(bar):
            images, labels = images.to(run.device, non_blocking=True), labels.to(run.device)
            with autocast(opt.amp, run.device):
                embeds = run.model(images)
            if storage:  # storage samplers keep the train-set embeddings current; under DDP the global batch
                run.sampler.replace_storage_entries(
                    distributed.all_gather_cat(embeds.detach().float()).cpu(),
                    distributed.all_gather_cat(torch.as_tensor(indices).to(run.device)).cpu(),
                )
            loss = run.criterion(embeds.float(), labels)
            run.optimizer.zero_grad(set_to_none=True)
            run.scaler.scale(loss).backward()
            value = distributed.all_reduce_gradients(self.trainable_parameters(), loss)  # mean over ranks
            if not math.isfinite(value):  # under DDP: on every rank when any rank's loss is non-finite
                raise UserError(f"non-finite loss ({value}) at epoch {epoch}, batch {step}; lower --lr or check "
                                f"the data (run folder kept: {self.run_dir})")  # fmt: skip
            run.scaler.step(run.optimizer)
            run.scaler.update()
            losses.append(value)
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
            self.emit("after_step", epoch, step, value)
        bar.close()
        stats = {"loss": float(np.mean(losses)) if losses else float("nan"), "time": time.time() - start,
                 "lr": run.optimizer.param_groups[0]["lr"]}  # fmt: skip
        return stats | run.criterion.diagnostics()

    # -------------------------------------------------------------- evaluation
    def evaluate(self, epoch: int) -> tuple[dict[str, dict[str, float]], dict[str, tuple]]:
        """Metrics per evaluated split, and the embeddings they came from (both empty on ranks other than 0)."""
        opt, run = self.opt, self.run
        # torch k-NN on the GPU whenever training runs there; --evaluate_on_cpu forces faiss.
        metric_device = run.device if run.device.type == "cuda" and not opt.evaluate_on_cpu else "cpu"
        results, embeddings = {}, {}
        for split, dataset in run.eval_splits.items():
            start = time.time()
            emb, labels = self.embed_split(dataset)  # collective under DDP: every rank takes part
            if not run.main:  # only rank 0 uses metrics; its decisions are broadcast
                continue
            views = evaluation.loss_views(run.criterion, emb, closed_set=dataset.closed_set, seed=opt.seed)
            values = evaluation.compute_metrics(emb, labels, opt.evaluation_metrics, device=metric_device,
                                                views=views)  # fmt: skip
            values["eval_time"] = time.time() - start
            results[split], embeddings[split] = values, (emb, labels)
        return results, embeddings

    def plateau_value(self, results: dict | None) -> float | None:
        """The plateau scheduler's input: the first storage metric on the selection split."""
        if not results:
            return None
        return results[self.run.selection_split].get(self.opt.storage_metrics[0], float("nan"))

    def step_scheduler(self, value: float | None) -> None:
        """One scheduler step per epoch; ReduceLROnPlateau only on a present, non-NaN ``value``."""
        scheduler = self.run.scheduler
        if scheduler is None:
            return
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if value is not None and value == value:
                scheduler.step(value)
        else:
            scheduler.step()

    # ------------------------------------------------------------------ the run
    def start(self) -> None:
        """Run folder and logging (rank 0), hooks' start, then resume or prepare the loss and the storage."""
        opt, run = self.opt, self.run
        if run.main:
            self.run_dir = run_folder.make_run_dir(opt)
        run_folder.setup_logging(self.run_dir, run.main)
        self.emit("on_run_start")
        log.info(run.describe())
        if opt.resume:
            self.resume()
        else:
            distributed.broadcast_module(run.model)  # every rank starts from rank 0's initialisation
            # Unsharded: a hook may iterate the loader itself (vMF softmax's scale uses every image).
            run.criterion.prepare(run.model, eval_loader(run.data["evaluation"], opt, shard=False), run.device)
            if run.criterion.wants_warm_start:
                run.criterion.warm_start(*self.embed_split(run.data["evaluation"]))
            distributed.broadcast_module(run.criterion)
        if self.uses_storage():
            emb, _ = self.embed_split(run.data["evaluation"])
            run.sampler.init_storage(emb)
            self.storage_epoch = self.state.epoch + 1  # no full refresh right after this

    def fit(self) -> Path | None:
        """Train for ``--n_epochs``, evaluating every ``--eval_every``; returns the run folder."""
        opt = self.opt
        self.start()
        for epoch in range(self.state.epoch + 1, opt.n_epochs + 1):
            train_stats = self.train_epoch(epoch)
            self.state.epoch = epoch
            log.info(f"epoch {epoch}: loss {train_stats['loss']:.4f} ({train_stats['time']:.1f}s)")
            done = None
            if epoch % opt.eval_every == 0 or epoch == opt.n_epochs:
                results, embeddings = self.evaluate(epoch)
                if self.run.main:  # rank 0 alone selects models: its decisions drive every rank
                    improved = self.selector.update(epoch, results, self.run.selection_split)
                    done = Evaluation(epoch, results, embeddings, train_stats, improved)
                    self.emit("after_evaluation", done)
            stop = opt.early_stop_patience > 0 and self.selector.evals_since_best() >= opt.early_stop_patience
            stop, value = distributed.broadcast_object((bool(stop), self.plateau_value(done and done.results)))
            self.step_scheduler(value)
            if stop:
                self.state.stop_reason = (
                    f"early stop: no improvement of {opt.storage_metrics[0]} in {opt.early_stop_patience} evaluations"
                )
            self.emit("after_epoch", epoch, train_stats, done)
            if stop:
                log.info(self.state.stop_reason)
                break
        self.emit("on_run_end")
        distributed.cleanup()
        return self.run_dir
