"""The training loop's hook seam: everything a run records is a ``Hook``.

The loop (``training.loop.Trainer``) calls each hook's methods, in list order, at these events
(on rank 0 only: the process that writes files):

=====================  =============================================================================
``on_run_start``       the run folder exists and logging is set up; before resuming / preparing the loss
``after_step``         after every optimiser step: ``(trainer, epoch, step, loss)``
``after_evaluation``   after an evaluation and the model selection: ``(trainer, evaluation)``
``after_epoch``        after every epoch, once the scheduler stepped and the stop decision is made:
                       ``(trainer, epoch, train_stats, evaluation or None)``
``on_run_end``         after the last epoch (or an early stop)
``on_interrupt``       a SIGTERM / SIGINT stopped training after ``(trainer, epoch, step)``; the run ends
=====================  =============================================================================

A new output (a report, a plot, a logger) is one subclass overriding the events it needs,
passed in ``Trainer(run, hooks=[...])``; see ``training.recording.default_hooks`` for the
suite's own. Example::

    class PrintBest(Hook):
        def after_evaluation(self, trainer, evaluation):
            for metric in evaluation.improved:
                print(metric, evaluation.results[trainer.run.selection_split][metric])
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Evaluation:
    """One evaluation of the run at ``epoch``.

    results: split -> metric -> value. embeddings: split -> (embeddings [N, D], labels [N]) on the CPU.
    train_stats: the epoch's training numbers (loss, lr, time, the loss's diagnostics).
    improved: the storage metrics that improved on the selection split (their checkpoints are due).
    """

    epoch: int
    results: dict
    embeddings: dict
    train_stats: dict
    improved: list = field(default_factory=list)


class Hook:
    """Base of the loop's callbacks; every event does nothing unless overridden."""

    def on_run_start(self, trainer) -> None:
        pass

    def after_step(self, trainer, epoch: int, step: int, loss: float) -> None:
        pass

    def after_evaluation(self, trainer, evaluation: Evaluation) -> None:
        pass

    def after_epoch(self, trainer, epoch: int, train_stats: dict, evaluation: Evaluation | None) -> None:
        pass

    def on_run_end(self, trainer) -> None:
        pass

    def on_interrupt(self, trainer, epoch: int, step: int) -> None:
        pass
