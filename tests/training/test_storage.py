"""The training loop's side of the storage-sampler protocol (datasampler/_storage.py, step 4):
``--data_idx_full_prec`` re-embeds the training set at the start of every epoch after the
first, with momentum ``--data_mb_mom`` / step ``--data_mb_lr`` when the momentum is > 0."""

from __future__ import annotations

import pytest
import torch

import datasampler
import evaluation
from training import Trainer, build_run, default_hooks
from training.build import eval_loader

STORAGE_SAMPLERS = [e.name for e in datasampler.REGISTRY.entries() if getattr(e.obj, "requires_storage", False)]


def record_storage(trainer: Trainer) -> list[dict]:
    """Per epoch: the storage when the epoch starts (before any refresh), the storage the epoch's
    batches are drawn from, and a fresh embedding of the training set at that moment."""
    records = []
    run = trainer.run
    original_epoch, original_batches = trainer.train_epoch, run.sampler.batches

    def train_epoch(epoch):
        records.append({"epoch": epoch, "at_start": run.sampler.storage.clone()})
        return original_epoch(epoch)

    def batches(rng):
        fresh, _ = evaluation.extract_embeddings(
            run.model, eval_loader(run.data["evaluation"], run.opt), run.device, progress=False
        )
        records[-1] |= {"drawn_from": run.sampler.storage.clone(), "fresh": fresh}
        return original_batches(rng)

    trainer.train_epoch, run.sampler.batches = train_epoch, batches
    return records


@pytest.fixture
def fit(tmp_path, make_opt, no_plots):
    def train(*argv: str) -> list[dict]:
        opt = make_opt("--save_path", str(tmp_path), "--no_progress", "--kernels", "0", "--no_train_metrics",
                       "--evaluation_metrics", "e_recall@1", "--data_batchmatch_bigbs", "120", *argv)  # fmt: skip
        trainer = Trainer(build_run(opt), default_hooks(opt))
        records = record_storage(trainer)
        trainer.fit()
        return records

    return train


@pytest.mark.parametrize("sampler", STORAGE_SAMPLERS)
def test_full_refresh_replaces_storage_with_a_fresh_embedding(sampler, fit):
    records = fit("--data_sampler", sampler, "--n_epochs", "2", "--data_idx_full_prec")
    first, second = records
    # Epoch 1 draws from the initial storage (a fresh embedding); its steps then overwrite entries
    # with train-mode embeddings, which the refresh at the start of epoch 2 replaces.
    torch.testing.assert_close(first["drawn_from"], first["fresh"], rtol=0, atol=1e-6)
    assert not torch.allclose(second["at_start"], second["fresh"], atol=1e-3)
    torch.testing.assert_close(second["drawn_from"], second["fresh"], rtol=0, atol=1e-6)


def test_without_the_flag_storage_is_not_refreshed(fit):
    records = fit("--data_sampler", "greedy_coreset", "--n_epochs", "2")
    second = records[1]
    assert torch.equal(second["drawn_from"], second["at_start"])  # only the per-step replacements
    assert not torch.allclose(second["drawn_from"], second["fresh"], atol=1e-3)


def test_full_refresh_with_momentum_by_hand(fit):
    m, lr = 0.6, 0.7
    records = fit("--data_sampler", "d2_coreset", "--n_epochs", "3", "--data_idx_full_prec",
                  "--data_mb_mom", str(m), "--data_mb_lr", str(lr))  # fmt: skip
    assert [r["epoch"] for r in records] == [1, 2, 3]
    torch.testing.assert_close(records[0]["drawn_from"], records[0]["fresh"], rtol=0, atol=1e-6)
    delta = torch.zeros_like(records[0]["fresh"])
    for r in records[1:]:  # old = the storage after the previous epoch's step-wise replacements
        delta = m * delta + (1 - m) * (r["fresh"] - r["at_start"])
        torch.testing.assert_close(r["drawn_from"], r["fresh"] + lr * delta, rtol=0, atol=1e-5)
    assert delta.abs().max() > 1e-2  # the momentum term is not negligible here


def test_resume_continues_from_the_saved_storage(fit, tmp_path, monkeypatch):
    """The checkpoint holds the storage (and the momentum term): a resumed run does not re-embed at its start,
    refreshes at the same epochs (2 and 3) and draws its batches from the same storage as the run that was not
    interrupted."""
    args = ["--data_sampler", "greedy_coreset", "--data_idx_full_prec", "--data_mb_mom", "0.5"]
    whole = fit(*args, "--n_epochs", "3")
    fit(*args, "--n_epochs", "1")
    run = sorted((tmp_path / "digits").iterdir())[-1]
    calls = []
    import datasampler._storage as storage

    original, init = storage.StorageMixin.full_storage_update, storage.StorageMixin.init_storage
    monkeypatch.setattr(storage.StorageMixin, "full_storage_update",
                        lambda self, emb: calls.append("refresh") or original(self, emb))  # fmt: skip
    monkeypatch.setattr(storage.StorageMixin, "init_storage", lambda self, emb: calls.append("init") or init(self, emb))
    records = fit(*args, "--n_epochs", "3", "--resume", str(run))
    assert [r["epoch"] for r in records] == [2, 3] and calls == ["refresh", "refresh"]
    for resumed, uninterrupted in zip(records, whole[1:]):
        torch.testing.assert_close(resumed["drawn_from"], uninterrupted["drawn_from"], rtol=0, atol=1e-6)
