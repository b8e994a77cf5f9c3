"""The training floor: build a run from the options, train it, record it.

* ``training.build``: ``build_run(opt) -> Run`` (device, data, model, miner, loss, sampler, loaders, optimiser
  groups, scheduler); facts of the data (classes, input shape, batch size) are passed explicitly.
* ``training.loop``: ``Trainer(run, hooks).fit()``, the epoch/step loop (warm-up, AMP, storage samplers, DDP,
  evaluation, model selection, early stopping).
* ``training.hooks``: the seam through which the run is recorded (``Hook``, ``Evaluation``).
* ``training.evaluate``: ``evaluate_run(opt)``, ``python main.py --evaluate <run folder>``: a trained run's
  checkpoint evaluated again, or embedding a folder of images.
* ``training.recording``, ``training.plots``, ``training.wandb_logger``: the suite's recording hooks
  (``default_hooks(opt)``); ``training.run_folder`` and ``training.checkpoint``: the files they write.

Imports go down only: training -> evaluation -> components -> utilities.
"""

from training.build import Run, build_run
from training.evaluate import evaluate_run
from training.hooks import Evaluation, Hook
from training.loop import Trainer
from training.recording import default_hooks

__all__ = ["Evaluation", "Hook", "Run", "Trainer", "build_run", "default_hooks", "evaluate_run"]
