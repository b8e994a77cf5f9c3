"""Work with a trained run: ``python main.py --evaluate <run folder> [--checkpoint ...] [--embed <folder>]``.

``evaluate_run(opt)`` rebuilds the run's model and loss from its options (``parameters.run_options``: the run's
``config.json`` with the flags given winning) and a checkpoint (``--checkpoint best`` (the first storage
metric's, the default), ``best_<metric>``, ``last`` or a path), then either

* evaluates ``--evaluation_metrics`` (default: the run's; the loss's own metrics included) on the run's
  evaluation splits, or on another dataset given with ``--dataset`` / ``--source_path``, or
* with ``--embed <image folder>``, embeds every image below that folder.

Everything goes to ``<run folder>/evaluation/<checkpoint name>/`` (``metrics.json``: split -> metric -> value,
``embeddings_<split>.npz``, ``retrieval_<split>.png``, ``embeddings_<folder name>.npz``); the run's training files
are never touched. On the run's own splits and checkpoint it reproduces the values the run recorded then.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

import datasets
import evaluation
from datasets import IMAGE_EXTENSIONS
from training import checkpoint, run_folder
from training.build import build_model_and_loss, eval_loader, evaluation_splits, pick_device
from training.plots import retrieval_figure
from training.recording import metrics_table, write_embeddings
from utilities import seeding
from utilities.errors import UserError
from utilities.precision import autocast

log = logging.getLogger("dml")


def checkpoint_path(run_dir: Path, choice: str, first_metric: str) -> tuple[Path, str]:
    """(file, name) of ``--checkpoint``: best / best_<metric> / last / a path (absolute, or relative to the run)."""
    if choice == "best":
        choice = "best_" + first_metric
    if choice == "last":
        path = run_dir / checkpoint.LAST
    elif choice.startswith("best_") and not choice.endswith(".pth"):
        path = run_dir / checkpoint.metric_filename(choice[len("best_") :].replace("_at_", "@"))
    else:
        path = Path(choice) if Path(choice).is_file() else run_dir / choice
    if not path.is_file():
        have = ", ".join(sorted(p.name for p in run_dir.glob("checkpoint_*.pth"))) or "none"
        raise UserError(f"--checkpoint {choice}: no {path.name} in {run_dir} (checkpoints there: {have}); use best, "
                        "best_<storage metric>, last or a .pth path")  # fmt: skip
    name = path.stem.removeprefix("checkpoint_")
    return path, name


def image_files(folder: Path) -> list[Path]:
    """Every image below ``folder`` (recursively, sorted by relative path); a one-line error when there is none."""
    if not folder.is_dir():
        raise UserError(f"--embed {folder}: no such folder; pass a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise UserError(f"--embed {folder}: no images there ({', '.join(IMAGE_EXTENSIONS)}, searched recursively)")
    return files


def restore(opt, state: dict, path: Path, device: torch.device):
    """(model, criterion) of the run with the checkpoint's weights and the loss's own parameters."""
    facts = state.get("facts")
    if facts is None:
        raise UserError(f"{path} records no classes or input shape (a checkpoint of an older version of the suite); "
                        "train the run again to evaluate it")  # fmt: skip
    model, _, criterion = build_model_and_loss(opt, int(facts["n_classes"]), tuple(facts["input_shape"]), device)
    try:
        model.load_state_dict(state["model"])
        criterion.load_state_dict(state["criterion"])
    except (KeyError, RuntimeError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        first = next((line for line in lines if line.startswith(("Missing", "Unexpected", "size mismatch"))), lines[0])
        raise UserError(f"{path} does not fit the run's architecture ({opt.arch}, --embed_dim {opt.embed_dim}, "
                        f"loss {opt.loss}): {first[:200]}") from None  # fmt: skip
    model.eval()
    criterion.eval()
    return model, criterion


def evaluate_splits(opt, model, criterion, out: Path, device: torch.device, run_config: dict) -> dict:
    """Metrics, embeddings and retrieval figures of every evaluation split; returns split -> metric -> value."""
    data = datasets.select(opt.dataset, opt)
    prefix = "" if opt.dataset == run_config["dataset"] else f"{opt.dataset}_"  # another dataset's splits
    results = {}
    metric_device = device if device.type == "cuda" and not opt.evaluate_on_cpu else "cpu"
    for split, dataset in evaluation_splits(data, opt).items():
        emb, labels = evaluation.extract_embeddings(model, eval_loader(dataset, opt, shard=False), device,
                                                    amp=opt.amp, progress=not opt.no_progress)  # fmt: skip
        views = evaluation.loss_views(criterion, emb, closed_set=dataset.closed_set, seed=opt.seed)
        name = prefix + split
        results[name] = evaluation.compute_metrics(emb, labels, opt.evaluation_metrics, device=metric_device,
                                                   views=views, queries=dataset.query, gallery=dataset.gallery)  # fmt: skip
        write_embeddings(out / f"embeddings_{name}.npz", emb, labels, criterion, dataset)
        if split != "training":
            retrieval_figure(out, name, dataset, emb, labels, criterion, opt.storage_metrics[0])
    return results


def embed_folder(opt, model, criterion, files: list[Path], folder: Path, out: Path, input_shape, device) -> Path:
    """``embeddings_<folder name>.npz``: relative ``paths``, ``embeddings``, ``norms`` (+ the loss's per-image
    concentration); a corrupt image is reported by name and skipped."""
    encode = datasets.image_encoder(opt.dataset, opt, tuple(input_shape))
    kept, tensors, skipped = [], [], []
    for path in tqdm(files, desc="Reading images", disable=opt.no_progress, leave=False):
        try:
            with Image.open(path) as image:
                tensors.append(encode(image.convert("RGB")))
            kept.append(path.relative_to(folder).as_posix())
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
            skipped.append(path)
            log.warning(f"skipped corrupt image {path} ({type(err).__name__})")
    if not tensors:
        raise UserError(f"--embed {folder}: none of its {len(files)} images could be read")
    batch = max(opt.bs, 128)
    chunks = []
    with torch.no_grad(), autocast(opt.amp, device):
        for s in range(0, len(tensors), batch):
            chunks.append(model(torch.stack(tensors[s : s + batch]).to(device)).float().cpu())
    path = out / f"embeddings_{folder.name}.npz"
    write_embeddings(path, torch.cat(chunks), None, criterion, paths=kept)
    log.info(f"embedded {len(kept)} images of {folder}" + (f" ({len(skipped)} corrupt, skipped)" if skipped else "")
             + f": {path}")  # fmt: skip
    return path


def evaluate_run(opt) -> Path:
    """``--evaluate``: see the module docstring; returns the evaluation folder."""
    run_dir = Path(opt.evaluate)
    run_config = json.loads((run_dir / "config.json").read_text())
    path, name = checkpoint_path(run_dir, opt.checkpoint, opt.storage_metrics[0])
    folder = Path(opt.embed) if opt.embed else None
    files = image_files(folder) if folder is not None else []
    seeding.set_seed(opt.seed)
    device = pick_device(opt)
    run_folder.setup_logging(None)
    state = checkpoint.load(path, device)
    model, criterion = restore(opt, state, path, device)
    out = run_dir / "evaluation" / name
    out.mkdir(parents=True, exist_ok=True)
    if folder is not None:
        embed_folder(opt, model, criterion, files, folder, out, state["facts"]["input_shape"], device)
        return out
    results = evaluate_splits(opt, model, criterion, out, device, run_config)
    (out / "metrics.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    epoch = state.get("epoch", state.get("train_state", {}).get("epoch", "?"))
    log.info(metrics_table(epoch, results, opt.evaluation_metrics))
    log.info(f"evaluation of {path.name} (epoch {epoch}): {out}")
    return out
