"""The epoch/step loop: warm-up, AMP, storage samplers, DDP, evaluation and model selection.

``Trainer(run, hooks).fit()`` trains the parts of a ``training.build.Run``; everything the run
records (run folder files, W&B, plots) is attached through ``training.hooks.Hook`` objects.
``Trainer.from_options(opt)`` builds the run and attaches the suite's recording hooks, which is
what ``python main.py`` does.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
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
from utilities import distributed, precision, seeding
from utilities.errors import UserError

log = logging.getLogger("dml")


@dataclass
class TrainState:
    epoch: int = 0  # last finished epoch
    stop_reason: str = "n_epochs reached"


class Interrupted(Exception):
    """SIGTERM / SIGINT during training: the current step finished and a checkpoint holds the run's position."""

    def __init__(self, signum: int, epoch: int, step: int, run_dir):
        self.signum, self.epoch, self.step, self.run_dir = signum, epoch, step, run_dir
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name} at epoch {epoch}, batch {step}; the run's position is saved: resume "
                         f"with the same command plus --resume {run_dir}")  # fmt: skip


EXPLOSION = 1e3  # a finite loss this many times its first value is reported (once per epoch)


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
        self.position: dict | None = None  # epoch under way: {"epoch", "step" (batches done), "losses", "elapsed"}
        self.resume_position: dict | None = None  # a mid-epoch checkpoint's position, until that epoch resumes
        self.pending_rng: dict | None = None  # its RNG states, restored once the epoch's loader iterator exists
        self.interrupt: int | None = None  # the signal received, if any
        self.first_loss: float | None = None
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
            "position": None if self.position is None else self.position | {"losses": list(self.position["losses"])},
            "storage": self.storage_state(),
        }

    def storage_state(self) -> dict | None:
        """A storage sampler's train-set embeddings (a mid-epoch resume continues from them exactly)."""
        sampler = self.run.sampler
        if not self.uses_storage() or sampler.storage is None:
            return None
        return {"storage": sampler.storage, "delta_storage": sampler.delta_storage}

    def checkpoint_due(self, step: int) -> bool:
        """After ``step`` (0-based) of an epoch: ``--checkpoint_every`` steps passed (a mid-epoch checkpoint)."""
        every = self.opt.checkpoint_every
        return every > 0 and (step + 1) % every == 0

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
        if state.get("storage") is not None and self.uses_storage():
            self.run.sampler.storage = state["storage"]["storage"]
            self.run.sampler.delta_storage = state["storage"]["delta_storage"]
        if state.get("position"):  # mid-epoch: continue that epoch at its next batch, with its RNG states
            self.resume_position, self.pending_rng = state["position"], state["rng"]
            log.info(
                f"resumed from {path} at epoch {self.resume_position['epoch']}, batch {self.resume_position['step']}"
            )
        else:
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
        resumed = self.resume_position if self.resume_position and self.resume_position["epoch"] == epoch else None
        self.resume_position = None
        done, losses = (resumed["step"], list(resumed["losses"])) if resumed else (0, [])
        total = math.fsum(losses)  # running sum for the progress bar's mean
        start = time.time() - (resumed["elapsed"] if resumed else 0.0)
        if storage and not resumed:
            self.refresh_storage(epoch)
        run.model.train()
        run.criterion.train()
        if hasattr(run.sampler, "set_epoch"):
            run.sampler.set_epoch(epoch)
        if done:
            run.sampler.skip(done)
        run.criterion.on_epoch_start(epoch)
        warm = epoch <= opt.warmup
        if opt.warmup:
            self.set_backbone_trainable(not warm)
        if warm:  # the frozen backbone's BatchNorm statistics stay fixed too
            for bn in self.backbone_batchnorms():
                bn.eval()
        params = [p for g in run.optimizer.param_groups for p in g["params"]]  # after the warm-up toggle above
        trainable = [p for p in params if p.requires_grad]
        batches = iter(run.train_loader)  # creating it draws a seed from torch's RNG, as at the epoch's start
        if self.pending_rng is not None:
            seeding.set_rng_state(self.pending_rng)
            self.pending_rng = None
        bar = tqdm(batches, total=len(run.train_loader) - done, disable=not self.show_progress, leave=False,
                   desc=f"epoch {epoch}/{opt.n_epochs}" + (" (warm-up)" if warm else ""), dynamic_ncols=True)  # fmt: skip
        reported = False
        for step, (images, labels, indices) in enumerate(bar, start=done):
            images, labels = run.images_to_device(images), labels.to(run.device)  # uint8: normalised there
            with precision.autocast(opt.amp, run.device):
                embeds = run.model(images)
            embeds = embeds.to(torch.promote_types(embeds.dtype, torch.float32))  # AMP's half: the loss in fp32
            # Under DDP a global-batch loss (and its miner) sees every rank's slice in rank order, its gradient
            # reaching only this rank's slice; its random draws are the same on every rank (utilities.distributed).
            whole = run.criterion.global_batch
            loss_batch = (distributed.gather_with_grad(embeds), distributed.gather_with_grad(labels)) if whole \
                else (embeds, labels)  # fmt: skip
            if storage:  # storage samplers keep the train-set embeddings current; under DDP the global batch
                run.sampler.replace_storage_entries(
                    (loss_batch[0] if whole else distributed.gather_with_grad(embeds)).detach().float().cpu(),
                    distributed.gather_with_grad(torch.as_tensor(indices).to(run.device)).cpu(),
                )
            # Non-finite embeddings are looked for only when something failed (a check every step costs a sync):
            # a miner or loss that stops on them, or a non-finite loss, is then reported as the network's fault.
            try:
                with distributed.shared_rng(distributed.step_seed(opt.seed, epoch, step), run.device):
                    loss = run.criterion(*loss_batch)
            except (RuntimeError, ValueError):  # e.g. torch.multinomial's "invalid distribution" in a miner
                self.check_embeddings(embeds, epoch, step)
                raise
            for p in params:  # optimizer.zero_grad(set_to_none=True) without its per-call wrappers (15 us a step)
                p.grad = None
            run.scaler.scale(loss).backward()
            # Gathered: each rank's model gradient is its slice's share of dL (summed over ranks), the loss's own
            # parameters got all of dL on every rank (averaged); a per-rank loss: everything averaged.
            value = distributed.all_reduce_gradients(trainable, loss,
                                                     summed=run.model.parameters() if whole else ())  # fmt: skip
            if not math.isfinite(value):  # under DDP: on every rank when any rank's loss is non-finite
                self.check_embeddings(embeds, epoch, step)
                raise UserError(f"non-finite loss ({value}) at epoch {epoch}, batch {step}; lower --lr ({opt.lr:g}) "
                                f"or check the data (run folder kept: {self.run_dir})")  # fmt: skip
            self.check_gradients(trainable, epoch, step)
            run.scaler.step(run.optimizer)
            run.scaler.update()
            losses.append(value)
            total += value
            self.first_loss = value if self.first_loss is None else self.first_loss
            if not reported and abs(value) > EXPLOSION * max(abs(self.first_loss), 1e-12):
                reported = True
                log.warning(f"the loss is exploding: {value:.4g} at epoch {epoch}, batch {step}, "
                            f"{abs(value / self.first_loss):.3g}x its first value; consider a lower --lr")  # fmt: skip
            if self.show_progress:
                bar.set_postfix(loss=f"{total / len(losses):.4f}")
            # the epoch's loss list itself (copied when a checkpoint is written, not every step)
            self.position = {"epoch": epoch, "step": step + 1, "losses": losses, "elapsed": time.time() - start}
            self.interrupt = distributed.any_rank(self.interrupt)
            self.emit("after_step", epoch, step, value)  # a mid-epoch checkpoint when checkpoint_due(step)
            if self.interrupt is not None:
                self.emit("on_interrupt", epoch, step)
                raise Interrupted(self.interrupt, epoch, step + 1, self.run_dir)
        bar.close()
        self.position = None
        stats = {"loss": float(np.mean(losses)) if losses else float("nan"), "time": time.time() - start,
                 "lr": run.optimizer.param_groups[0]["lr"]}  # fmt: skip
        return stats | run.criterion.diagnostics()

    def check_embeddings(self, embeds: torch.Tensor, epoch: int, step: int) -> None:
        """One line when the network's output is not finite (its weights after the previous step diverged)."""
        if not bool(torch.isfinite(embeds.detach()).all()):
            raise UserError(f"non-finite embeddings at epoch {epoch}, batch {step}: the network diverged (its "
                            f"weights after the previous step); lower --lr ({self.opt.lr:g}) or check the data "
                            f"(run folder kept: {self.run_dir})")  # fmt: skip

    def check_gradients(self, params: list[torch.nn.Parameter], epoch: int, step: int) -> None:
        """One line when a gradient of ``params`` is not finite (a finite loss with an overflowing backward pass)."""
        if self.run.scaler.is_enabled():  # fp16: the scaler skips such steps itself
            return
        if not precision.all_finite(p.grad for p in params if p.grad is not None):
            raise UserError(f"non-finite gradients at epoch {epoch}, batch {step} (the loss was finite); lower "
                            f"--lr ({self.opt.lr:g}) or check the loss's settings (run folder kept: {self.run_dir})")  # fmt: skip

    # -------------------------------------------------------------- evaluation
    def evaluate(self, epoch: int) -> tuple[dict[str, dict[str, float]], dict[str, tuple]]:
        """Metrics per evaluated split, and the embeddings they came from (both empty on ranks other than 0)."""
        opt, run = self.opt, self.run
        # metrics on the GPU whenever training runs there; --evaluate_on_cpu keeps them off it
        metric_device = run.device if run.device.type == "cuda" and not opt.evaluate_on_cpu else "cpu"
        results, embeddings = {}, {}
        for split, dataset in run.eval_splits.items():
            start = time.time()
            emb, labels = self.embed_split(dataset)  # collective under DDP: every rank takes part
            if not run.main:  # only rank 0 uses metrics; its decisions are broadcast
                continue
            views = evaluation.loss_views(run.criterion, emb, closed_set=dataset.closed_set, seed=opt.seed)
            values = evaluation.compute_metrics(emb, labels, opt.evaluation_metrics, device=metric_device, views=views,
                                                queries=dataset.query, gallery=dataset.gallery)  # fmt: skip
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
        if self.uses_storage() and run.sampler.storage is None:
            emb, _ = self.embed_split(run.data["evaluation"])
            run.sampler.init_storage(emb)
            self.storage_epoch = self.state.epoch + 1  # no full refresh right after this

    def on_signal(self, signum, frame) -> None:
        """SIGTERM / SIGINT: finish the current step, checkpoint the position, stop (``Interrupted``)."""
        if self.interrupt is not None:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.interrupt = signum
        log.warning(f"{signal.Signals(signum).name} received: finishing the current step, then saving the position")

    @contextlib.contextmanager
    def signals_caught(self):
        """``on_signal`` handles SIGTERM and SIGINT while training (main thread only), the previous handlers after."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self.on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def fit(self) -> Path | None:
        """Train for ``--n_epochs``, evaluating every ``--eval_every``; returns the run folder."""
        with self.signals_caught():
            return self._fit()

    def _fit(self) -> Path | None:
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
