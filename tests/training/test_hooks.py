"""training.hooks: the loop's seam. Events arrive in order with the loop's own numbers, and a new output is one hook
(the loop records nothing by itself)."""

from __future__ import annotations

import csv

import pytest

from training import Evaluation, Hook, Trainer, build_run, default_hooks


class Recorder(Hook):
    def __init__(self):
        self.events = []

    def on_run_start(self, trainer):
        self.events.append(("start", trainer.run_dir is not None))

    def after_step(self, trainer, epoch, step, loss):
        self.events.append(("step", epoch, step, loss))

    def after_evaluation(self, trainer, evaluation):
        self.events.append(("evaluation", evaluation))

    def after_epoch(self, trainer, epoch, train_stats, evaluation):
        self.events.append(("epoch", epoch, dict(train_stats), evaluation))

    def on_run_end(self, trainer):
        self.events.append(("end",))


def short_run(make_opt, tmp_path, *argv):
    return build_run(make_opt("--save_path", str(tmp_path), "--no_progress", "--n_epochs", "3", "--eval_every", "2",
                              "--evaluation_metrics", "e_recall@1", *argv))  # fmt: skip


def test_events_arrive_in_order_with_the_loops_numbers(make_opt, tmp_path):
    run = short_run(make_opt, tmp_path)
    recorder = Recorder()
    Trainer(run, [recorder]).fit()
    kinds = [e[0] for e in recorder.events]
    n = len(run.sampler)  # batches per epoch
    assert kinds == ["start", *["step"] * n, "epoch", *["step"] * n, "evaluation", "epoch", *["step"] * n,
                     "evaluation", "epoch", "end"]  # fmt: skip
    assert recorder.events[0] == ("start", True)
    steps = [e for e in recorder.events if e[0] == "step"]
    assert [(e[1], e[2]) for e in steps] == [(epoch, step) for epoch in (1, 2, 3) for step in range(n)]
    epochs = [e for e in recorder.events if e[0] == "epoch"]
    for (_, epoch, stats, evaluation), losses in zip(epochs, [steps[i * n : (i + 1) * n] for i in range(3)]):
        # the epoch's mean loss is the mean of its steps' losses, as the hook saw them
        assert stats["loss"] == pytest.approx(sum(e[3] for e in losses) / n, rel=1e-12)
        assert (evaluation is None) == (epoch == 1)
    evaluations = [e[1] for e in recorder.events if e[0] == "evaluation"]
    assert [ev.epoch for ev in evaluations] == [2, 3]
    assert all(isinstance(ev, Evaluation) and set(ev.results) == {"training", "testing"} for ev in evaluations)
    assert evaluations[0].improved == ["e_recall@1"]  # the first evaluation is always an improvement
    assert epochs[1][3] is evaluations[0]  # after_epoch gets the same evaluation


def test_the_loop_itself_records_nothing(make_opt, tmp_path):
    """Without hooks a run leaves only its folder and log; every file of a run comes from a hook."""
    run = short_run(make_opt, tmp_path, "--n_epochs", "1")
    trainer = Trainer(run, [])
    trainer.fit()
    assert sorted(p.name for p in trainer.run_dir.iterdir()) == ["log.txt"]


def test_a_new_output_is_one_hook(make_opt, tmp_path):
    """A hook writing the best test Recall@1 per epoch next to the suite's own outputs."""

    class BestSoFar(Hook):
        def after_evaluation(self, trainer, evaluation):
            with open(trainer.run_dir / "best_so_far.csv", "a", newline="") as f:
                best = trainer.selector.best["e_recall@1"]
                csv.writer(f).writerow([evaluation.epoch, best["epoch"], best["value"]])

    opt = make_opt("--save_path", str(tmp_path), "--no_progress", "--n_epochs", "2", "--evaluation_metrics",
                   "e_recall@1")  # fmt: skip
    trainer = Trainer(build_run(opt), [*default_hooks(opt), BestSoFar()])
    run_dir = trainer.fit()
    rows = list(csv.reader(open(run_dir / "best_so_far.csv")))
    tested = {int(r["epoch"]): float(r["e_recall@1"]) for r in csv.DictReader(open(run_dir / "metrics_testing.csv"))}
    assert [int(r[0]) for r in rows] == [1, 2]
    assert float(rows[-1][2]) == max(tested.values()) and int(rows[-1][1]) in tested
    assert (run_dir / "summary.json").is_file()  # the suite's hooks ran too
