"""Optional W&B logging (``--log_online``); the key comes from WANDB_API_KEY only.

Without a key or without network it logs offline into the run folder and says so,
so ``wandb sync`` can upload later.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("dml")


def _online() -> bool:
    try:
        socket.create_connection(("api.wandb.ai", 443), timeout=3).close()
        return True
    except OSError:
        return False


class WandbLogger:
    def __init__(self, opt, run_dir, config: dict, name: str):
        import wandb

        mode = os.environ.get("WANDB_MODE", "online")
        if mode == "online":
            if not os.environ.get("WANDB_API_KEY"):
                mode, why = "offline", "WANDB_API_KEY is not set"
            elif not _online():
                mode, why = "offline", "no network"
            if mode == "offline":
                log.info(f"W&B: logging offline ({why}); upload later with `wandb sync {run_dir}/wandb/offline-run-*`")
        self.run = wandb.init(
            project=opt.project, group=opt.group, name=name, dir=str(run_dir), config=config, mode=mode, reinit=True
        )

    def log(self, values: dict, step: int) -> None:
        self.run.log(values, step=step)

    def finish(self) -> None:
        self.run.finish()
