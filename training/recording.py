"""What a run records, one hook each: config, console table, CSVs, checkpoints, embeddings, summary.

``default_hooks(opt)`` lists the suite's recording hooks in the order they run (see
``training.hooks`` for the events). Everything is written into the run folder
(``trainer.run_dir``) on rank 0; docs/outputs.md describes the files.
"""

from __future__ import annotations

import logging

import numpy as np

from training import checkpoint, run_folder
from training.hooks import Evaluation, Hook

log = logging.getLogger("dml")


class ConfigRecord(Hook):
    """``config.json`` (every flag value, no secrets) and ``command.txt`` (the commands, resumes appended)."""

    def on_run_start(self, trainer) -> None:
        run_folder.write_config(trainer.run_dir, trainer.opt)


class ConsoleTable(Hook):
    """The metrics of every evaluated split as a table in the log (``--evaluation_metrics`` first)."""

    def after_evaluation(self, trainer, evaluation: Evaluation) -> None:
        log.info(metrics_table(evaluation.epoch, evaluation.results, trainer.opt.evaluation_metrics))


def metrics_table(epoch: int, results: dict[str, dict[str, float]], first: list[str]) -> str:
    """Rows: metric names (``first`` in order, then the rest sorted); columns: splits."""
    splits = list(results)
    shown = set(first) | {"eval_time"}
    names = list(first) + sorted({k for v in results.values() for k in v} - shown)
    width = max(len(n) for n in names) + 2
    head = f"{'epoch ' + str(epoch):<{width}}" + "".join(f"{s:>12}" for s in splits)
    rows = [head, "-" * len(head)]
    for name in names:
        rows.append(f"{name:<{width}}" + "".join(f"{results[s].get(name, float('nan')):>12.4f}" for s in splits))
    return "\n".join(rows)


class MetricsCSV(Hook):
    """``metrics_<split>.csv``: a row per evaluation; ``metrics_training.csv`` a row per epoch (loss, lr, time and
    the loss's diagnostics, plus the training-split metrics on evaluated epochs)."""

    def on_run_start(self, trainer) -> None:
        self.csv = run_folder.MetricCSV(trainer.run_dir)

    def after_evaluation(self, trainer, evaluation: Evaluation) -> None:
        for split, values in evaluation.results.items():
            self.csv.log(split, evaluation.epoch, values | (evaluation.train_stats if split == "training" else {}))

    def after_epoch(self, trainer, epoch: int, train_stats: dict, evaluation: Evaluation | None) -> None:
        if evaluation is None or "training" not in evaluation.results:
            self.csv.log("training", epoch, train_stats)


class Checkpoints(Hook):
    """``checkpoint_best_<metric>.pth`` at each improvement of a storage metric on the selection split, and
    ``checkpoint_last.pth`` (everything ``--resume`` needs) after every epoch and, mid-epoch, every
    ``--checkpoint_every`` steps and when a SIGTERM / SIGINT stops the run (with the epoch's position)."""

    def after_step(self, trainer, epoch: int, step: int, loss: float) -> None:
        if trainer.checkpoint_due(step):
            checkpoint.save(trainer.state_dict(), trainer.run_dir / checkpoint.LAST)

    def on_interrupt(self, trainer, epoch: int, step: int) -> None:
        checkpoint.save(trainer.state_dict(), trainer.run_dir / checkpoint.LAST)

    def after_evaluation(self, trainer, evaluation: Evaluation) -> None:
        run, split = trainer.run, trainer.run.selection_split
        for metric in evaluation.improved:
            state = {"model": run.model.state_dict(), "criterion": run.criterion.state_dict(),
                     "epoch": evaluation.epoch, "metrics": evaluation.results, "selection_split": split,
                     "opt": run_folder.public_config(trainer.opt), "facts": run_facts(run)}  # fmt: skip
            checkpoint.save(state, trainer.run_dir / checkpoint.metric_filename(metric))
            log.info(f"  new best {metric} on {split}: {evaluation.results[split][metric]:.4f}")

    def after_epoch(self, trainer, epoch: int, train_stats: dict, evaluation: Evaluation | None) -> None:
        checkpoint.save(trainer.state_dict(), trainer.run_dir / checkpoint.LAST)


def run_facts(run) -> dict:
    """What a checkpoint needs besides the options to rebuild the run's model and loss (``--evaluate``)."""
    return {"n_classes": int(run.n_classes), "input_shape": [int(v) for v in run.input_shape]}


def write_embeddings(path, embeddings, labels, criterion, dataset=None, **extra) -> None:
    """``.npz`` of one set of images: ``embeddings``, ``labels`` (if any), ``norms``, the loss's ``export()`` (class
    weights, temperature, ...), its per-image ``export_embeddings`` (e.g. the concentration ``kappa``) and, when
    ``dataset`` is a query -> gallery split (In-Shop), its boolean masks ``queries`` and ``gallery``."""
    arrays = {"embeddings": embeddings.numpy(), "norms": embeddings.norm(dim=1).numpy(), **criterion.export()}
    if labels is not None:
        arrays["labels"] = labels.numpy()
    if dataset is not None and dataset.query is not None:
        arrays |= {"queries": dataset.query, "gallery": dataset.gallery}
    np.savez(path, **arrays, **criterion.export_embeddings(embeddings), **extra)


class EmbeddingExport(Hook):
    """``embeddings_<split>.npz`` at the best first storage metric: embeddings, labels, norms, the loss's
    ``export()`` (class weights, temperature, ...), its per-image ``export_embeddings`` (e.g. kappas) and, for a
    query -> gallery split (In-Shop), the boolean masks ``queries`` and ``gallery``."""

    def after_evaluation(self, trainer, evaluation: Evaluation) -> None:
        first = trainer.opt.storage_metrics[0]
        if first not in evaluation.improved and (trainer.run_dir / "embeddings_testing.npz").exists():
            return
        for split, (emb, labels) in evaluation.embeddings.items():
            write_embeddings(trainer.run_dir / f"embeddings_{split}.npz", emb, labels, trainer.run.criterion,
                             trainer.run.eval_splits[split])  # fmt: skip


class Summary(Hook):
    """``summary.json`` / ``summary.md``: best value and epoch per storage metric, which split selected them."""

    def after_evaluation(self, trainer, evaluation: Evaluation) -> None:
        self.write(trainer)

    def on_run_end(self, trainer) -> None:
        self.write(trainer)
        log.info(f"run folder: {trainer.run_dir}")

    @staticmethod
    def write(trainer) -> None:
        run = trainer.run
        note = ("held-out validation classes" if run.selection_split == "validation"
                else "no validation split: selected on the test split, the protocol of the original papers")  # fmt: skip
        run_folder.write_summary(trainer.run_dir, {
            "run": str(trainer.run_dir), "command": trainer.opt.command, "selection_split": run.selection_split,
            "selection_note": note, "splits": list(run.eval_splits), "best": trainer.selector.summary(),
            "epochs_run": trainer.state.epoch, "stop_reason": trainer.state.stop_reason,
        })  # fmt: skip


def default_hooks(opt) -> list[Hook]:
    """The suite's recording, in order: config, console table, CSVs, W&B (``--log_online``), checkpoints,
    embeddings, progression, uncertainty and retrieval plots, summary, report page."""
    from training.plots import ProgressionPlot, RetrievalPlots, UncertaintyPlots
    from training.report_page import RunReport

    hooks: list[Hook] = [ConfigRecord(), ConsoleTable(), MetricsCSV()]
    if opt.log_online:
        from training.wandb_logger import WandbLog

        hooks.append(WandbLog())
    hooks += [Checkpoints(), EmbeddingExport(), ProgressionPlot(), UncertaintyPlots(), RetrievalPlots()]
    return hooks + [Summary(), RunReport()]
