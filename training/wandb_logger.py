"""Optional W&B logging (``--log_online``); the key comes from WANDB_API_KEY only.

Without a key, without network, or when the W&B server refuses the connection (a bad
key, an unreachable ``WANDB_BASE_URL``), it logs offline into the run folder and says
so, so ``wandb sync`` can upload later. Without ``--log_online`` W&B is never imported.
"""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlparse

from training.hooks import Evaluation, Hook
from training.run_folder import public_config, run_name

log = logging.getLogger("dml")

DEFAULT_BASE_URL = "https://api.wandb.ai"


def _online(base_url: str | None = None) -> bool:
    """Whether the W&B server (``WANDB_BASE_URL`` or the public one) accepts a TCP connection."""
    url = urlparse(base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL)
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname or "", port), timeout=3).close()
        return True
    except OSError:
        return False


class WandbLogger:
    def __init__(self, opt, run_dir, config: dict, name: str):
        import wandb

        mode = os.environ.get("WANDB_MODE", "online")
        why = ""
        if mode == "online":
            if not os.environ.get("WANDB_API_KEY"):
                mode, why = "offline", "WANDB_API_KEY is not set"
            elif not _online():
                mode, why = "offline", "no network"
        kwargs = dict(project=opt.project, group=opt.group, name=name, dir=str(run_dir), config=config, reinit=True)
        try:
            self.run = wandb.init(mode=mode, **kwargs)
        except Exception as err:  # wandb raises its own error types for auth / connection failures
            if mode != "online":
                raise
            # The message may quote the request; keep only its type so no key can reach the log.
            mode, why = "offline", f"the W&B server refused the run ({type(err).__name__})"
            self.run = wandb.init(mode=mode, **kwargs)
        if why:
            log.info(f"W&B: logging offline ({why}); upload later with `wandb sync {run_dir}/wandb/offline-run-*`")

    def log(self, values: dict, step: int) -> None:
        self.run.log(values, step=step)

    def finish(self) -> None:
        self.run.finish()


class WandbLog(Hook):
    """``--log_online``: every evaluation's metrics per split and every epoch's training numbers, step = epoch."""

    def on_run_start(self, trainer) -> None:
        opt = trainer.opt
        self.logger = WandbLogger(opt, trainer.run_dir, public_config(opt), run_name(opt))

    def after_epoch(self, trainer, epoch: int, train_stats: dict, evaluation: Evaluation | None) -> None:
        values = {f"training/{k}": v for k, v in train_stats.items()}
        if evaluation is not None:
            values = {f"{split}/{k}": v for split, vals in evaluation.results.items() for k, v in vals.items()} | values
        self.logger.log(values, step=epoch)

    def on_run_end(self, trainer) -> None:
        self.logger.finish()
