"""Model selection: track the best value of each storage metric on the selection split."""

from __future__ import annotations


class ModelSelector:
    """Best value and epoch per storage metric (higher is better), evaluated on one split."""

    def __init__(self, storage_metrics: list[str]):
        self.metrics = list(storage_metrics)
        self.best: dict[str, dict] = {}
        self.n_evals = 0
        self.last_improvement = 0  # evaluation count at the last improvement of the first metric

    def update(self, epoch: int, results: dict[str, dict[str, float]], split: str) -> list[str]:
        """Record one evaluation; return the storage metrics that improved."""
        self.n_evals += 1
        improved = []
        for metric in self.metrics:
            value = results[split].get(metric, float("nan"))  # a loss metric may be absent (open-set split)
            if value != value:  # NaN never counts as an improvement
                continue
            if metric not in self.best or value > self.best[metric]["value"]:
                at_best = {s: vals.get(metric, float("nan")) for s, vals in results.items()}
                self.best[metric] = {"value": value, "epoch": epoch, "split": split, "at_best": at_best}
                improved.append(metric)
        if self.metrics and self.metrics[0] in improved:
            self.last_improvement = self.n_evals
        return improved

    def evals_since_best(self) -> int:
        return self.n_evals - self.last_improvement

    def summary(self) -> dict:
        return dict(self.best)

    def state_dict(self) -> dict:
        return {"best": self.best, "n_evals": self.n_evals, "last_improvement": self.last_improvement}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.n_evals, self.last_improvement = state["best"], state["n_evals"], state["last_improvement"]
