"""Training-step overhead per loss: a full step of this suite's loop minus the backbone's forward/backward, next to
the same for pytorch-metric-learning's counterpart loss (and miner) in a plain torch step.

    python bench/step_overhead.py                   # every row, 1 thread, thread CPU time (about 75 s on 2 cores)
    python bench/step_overhead.py --quick           # 3 rounds of 3 steps: a smoke run, noisy numbers
    python bench/step_overhead.py --losses proxyanchor triplet:semihard   # LOSS or LOSS:MINER rows
    python bench/step_overhead.py --clock wall      # time.perf_counter instead of the thread's CPU time
    python bench/step_overhead.py --no_fail         # exit 0 even when a ratio exceeds --max_ratio

Inputs (small, the Roth defaults otherwise): batches of B = 112 digits-sized images [1, 8, 8] (random normal, as
the digits normalisation leaves them), 56 classes x 2 (``--bs 112 --samples_per_class 2``, grouped as the
class-balanced sampler yields them) out of C = 100 train classes, the suite's ``mnist_cnn`` (Roth's
``_frozen[_normalize]`` variant of each loss's sample run: unnormalised for npair, angular, lifted and the vMF
losses), ``--embed_dim 128``, Adam at ``--lr 1e-5``, ``--decay 4e-4``; the loss's own flags at their defaults.

Four sides are timed per row, on the same batches, each with its own copy of the same initial network:

* **ours step**: ``training.loop.Trainer.train_epoch`` itself, on a ``training.build.Run`` assembled from
  ``training.build``'s builders (``build_model_and_loss``, ``param_groups``, ``build_optimizer``,
  ``build_scheduler``, ``precision.grad_scaler``: the parts ``build_run`` makes, without loading a dataset) whose
  ``train_loader`` is a list of ``--steps`` + 1 prepared batches (no data loading). A hook records the clock at
  every ``after_step`` event; one step = the time between two consecutive events: fetching the next batch, the
  forward pass, the loss with its miner (inside the loop's per-step
  ``shared_rng``), the backward pass, the loss value (``.item()``), the gradient check, the optimiser step over the
  suite's param groups, the per-step bookkeeping (progress-bar postfix, position record, hooks). The epoch's start
  and end lie outside every interval; ``Trainer.start`` is not run (no run folder, no ``prepare`` / warm start of
  the loss: vmf_softmax keeps its initial scale).
* **PML step** (the plain step): the same network (a copy), PML's loss (+ its miner),
  ``opt.zero_grad(set_to_none=True)``, backward, ``torch.optim.Adam`` with the same groups (backbone, head: the
  suite's ``model_param_groups``; the loss's own parameters such as proxies in a group of their own at the lr and
  weight decay the suite gives them); nothing else (no checks, no logging).
* **ours plain**: this suite's criterion (+ miner) in that same plain step, with the suite's optimiser groups: the
  loss's own cost without the loop's per-step work (the column that tells a loss from the loop).
* **backbone**: the network's forward and ``embeddings.sum().backward()`` alone (gradients reset untimed).

overhead = median step - median backbone of the same row (miners, loss forward and backward, optimiser step,
checks and bookkeeping); ours/PML = ours overhead / PML overhead (the gate), plain/PML = ours plain overhead / PML
overhead. Medians over ``--rounds`` rounds of ``--steps`` steps per side after one untimed warm-up round; the sides
take turns within a round, the order rotating round by round, so that load from other processes hits them alike.
``--clock cpu`` (default) is the thread's CPU time (``time.thread_time``: waiting for a core on a shared machine
does not count), ``wall`` is ``time.perf_counter``; one torch thread (``--threads``). A row whose ours/PML exceeds
``--max_ratio`` (1.0) + ``--tolerance`` (0) is listed on the final line and makes the script exit with status 1
(unless ``--no_fail``).

Pairings (those of ``bench/losses.py``, with the miner inside the timed step on both sides):
  * distance miner: PML's ``DistanceWeightedMiner`` (same cut-offs); semihard: PML's ``TripletMarginMiner``
    (``type_of_triplets="semihard"``, the loss's margin); another triplet miner (``--losses triplet:softhard``):
    PML has none, the PML step runs this suite's; contrastive takes the triplets as pairs (a, p, a, n).
  * multisimilarity: ours mines inside its forward; PML: ``MultiSimilarityMiner`` + ``MultiSimilarityLoss``.
  * npair: PML's ``NPairsLoss`` on the labels (it keeps one positive pair per class itself).
  * angular: PML has no N-pair miner: the PML step runs this suite's ``npair`` miner, then ``NPairsLoss`` +
    lambda * ``AngularLoss`` on its pairs (the negatives: all other-class items), as ``bench/losses.py``.
  * lifted: PML's ``LiftedStructureLoss`` enumerates the pairs itself (no miner); snr: ``TripletMarginLoss`` on
    ``SNRDistance`` + ``ZeroMeanRegularizer``; histogram: ``n_bins = --loss_histogram_nbins - 1``; softtriplet:
    ours with ``--loss_softtriplet_reg_weight 0`` (PML's ``SoftTripleLoss`` has no centre regulariser).
  * vmf_softmax, proxyvmf_panc, quadruplet, adversarial_separation: PML has none ('-'; the gate skips them).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytorch_metric_learning  # noqa: E402
import torch  # noqa: E402
from pytorch_metric_learning import distances, losses, miners, reducers, regularizers  # noqa: E402

import batch_mining  # noqa: E402
import parameters  # noqa: E402
from bench.losses import B, C, D  # noqa: E402  (B = 112, d = 128, C = 100: the loss bench's sizes)
from training.build import (  # noqa: E402
    Run,
    build_model_and_loss,
    build_optimizer,
    build_scheduler,
    exclude_1d_from_decay,
    model_param_groups,
    param_groups,
)
from training.hooks import Hook  # noqa: E402
from training.loop import Trainer  # noqa: E402
from utilities import precision  # noqa: E402

INPUT_SHAPE = (1, 8, 8)  # digits-sized images
PER_CLASS = 2
MAX_RATIO = 1.0
HEADLINE = ("vmf_softmax", "proxyvmf_panc", "proxyanchor", "arcface", "multisimilarity")
# The Roth-suite criteria of bench/losses.py with the miners of the Roth suite's sample runs (example_runs.sh).
ROTH = ("margin:distance", "triplet:distance", "triplet:semihard", "contrastive:distance", "snr:distance",
        "quadruplet:distance", "adversarial_separation:distance", "npair:npair", "angular:npair", "lifted:lifted",
        "proxynca", "softmax", "histogram", "softtriplet")  # fmt: skip
ROWS = HEADLINE + ROTH
UNNORMALISED = {"npair", "angular", "lifted", "vmf_softmax", "proxyvmf_panc"}  # Roth: resnet50_frozen (no _normalize)
EXTRA_FLAGS = {"softtriplet": ["--loss_softtriplet_reg_weight", "0"]}  # as bench/losses.py: PML has no regulariser


def split_row(row: str) -> tuple[str, str | None]:
    """``"triplet:semihard"`` -> ("triplet", "semihard"); ``"proxyanchor"`` -> ("proxyanchor", None)."""
    loss, _, miner = row.partition(":")
    return loss, miner or None


def make_opt(loss: str, miner: str | None):
    arch = "mnist_cnn_frozen" if loss in UNNORMALISED else "mnist_cnn_frozen_normalize"
    argv = ["--loss", loss, "--arch", arch, "--embed_dim", str(D), "--bs", str(B), "--samples_per_class",
            str(PER_CLASS), "--lr", "0.00001", "--no_progress", "--not_pretrained", *EXTRA_FLAGS.get(loss, [])]  # fmt: skip
    if miner:
        argv += ["--batch_mining", miner]
    return parameters.parse_args(argv)


def make_batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``n`` training batches ``(images [B, 1, 8, 8], labels [B], indices [B])``: B / 2 classes x 2, grouped."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        labels = torch.randperm(C, generator=g)[: B // PER_CLASS].repeat_interleave(PER_CLASS)
        out.append((torch.randn(B, *INPUT_SHAPE, generator=g), labels, torch.arange(B)))
    return out


def build_suite_run(opt, batches: list) -> Run:
    """A ``Run`` from ``training.build``'s builders (``build_run`` without a dataset: C classes, 8x8 inputs) whose
    training loader is the list ``batches``."""
    device = torch.device("cpu")
    model, miner, criterion = build_model_and_loss(opt, C, INPUT_SHAPE, device)
    optimizer = build_optimizer(param_groups(model, criterion, opt), opt)
    return Run(opt=opt, rank=0, world_size=1, device=device, data={}, n_classes=C, input_shape=INPUT_SHAPE,
               model=model, miner=miner, criterion=criterion, sampler=None, train_loader=batches, eval_splits={},
               selection_split="testing", optimizer=optimizer, scheduler=build_scheduler(optimizer, opt),
               scaler=precision.grad_scaler(opt.amp, device))  # fmt: skip


# ------------------------------------------------------------------------------------------------ PML counterparts
def pml_counterpart(loss: str, miner: str | None, opt, crit):
    """(PML loss module, step function ``(embeddings, labels) -> loss``), or None where PML has no counterpart.
    Parameters (proxies, class weights, beta, centres) start as copies of ours."""
    lp2 = distances.LpDistance(power=2, normalize_embeddings=False)
    lp = distances.LpDistance(normalize_embeddings=False)
    dot = distances.DotProductSimilarity()

    def tuple_miner():
        if miner == "distance":
            return miners.DistanceWeightedMiner(cutoff=opt.miner_distance_lower_cutoff,
                                                nonzero_loss_cutoff=opt.miner_distance_upper_cutoff)  # fmt: skip
        if miner == "semihard":
            return miners.TripletMarginMiner(margin=crit.miner_margin(opt), type_of_triplets="semihard")
        ours = batch_mining.select(miner, opt, margin=crit.miner_margin(opt))  # PML has none: this suite's

        def suite_miner(x, y):
            t = ours(x.detach(), y)
            return t[:, 0], t[:, 1], t[:, 2]

        return suite_miner

    def mined(pml_loss, pml_miner):
        return pml_loss, lambda x, y: pml_loss(x, y, indices_tuple=pml_miner(x, y))

    def plain(pml_loss):
        return pml_loss, lambda x, y: pml_loss(x, y)

    if loss == "triplet":
        pml = losses.TripletMarginLoss(margin=opt.loss_triplet_margin, distance=lp2, reducer=reducers.MeanReducer())
        return mined(pml, tuple_miner())
    if loss == "contrastive":  # PML converts the miner's triplets to pairs (a, p, a, n)
        pml = losses.ContrastiveLoss(pos_margin=opt.loss_contrastive_pos_margin,
                                     neg_margin=opt.loss_contrastive_neg_margin, distance=lp,
                                     reducer=reducers.MeanReducer())  # fmt: skip
        return mined(pml, tuple_miner())
    if loss == "margin":
        pml = losses.MarginLoss(margin=opt.loss_margin_margin, nu=opt.loss_margin_nu, learn_beta=True, num_classes=C,
                                distance=lp)  # fmt: skip
        pml.beta = torch.nn.Parameter(crit.beta.detach().clone())
        return mined(pml, tuple_miner())
    if loss == "snr":
        pml = losses.TripletMarginLoss(margin=opt.loss_snr_margin,
                                       distance=distances.SNRDistance(normalize_embeddings=False),
                                       embedding_regularizer=regularizers.ZeroMeanRegularizer(),
                                       embedding_reg_weight=opt.loss_snr_reg_lambda)  # fmt: skip
        return mined(pml, tuple_miner())
    if loss == "proxyanchor":
        pml = losses.ProxyAnchorLoss(num_classes=C, embedding_size=D, margin=opt.loss_proxyanchor_delta,
                                     alpha=opt.loss_proxyanchor_alpha)  # fmt: skip
        pml.proxies = torch.nn.Parameter(crit.proxies.detach().clone())
        return plain(pml)
    if loss == "multisimilarity":
        ms_miner = miners.MultiSimilarityMiner(epsilon=opt.loss_multisimilarity_margin, distance=dot)
        pml = losses.MultiSimilarityLoss(alpha=opt.loss_multisimilarity_pos_weight,
                                         beta=opt.loss_multisimilarity_neg_weight,
                                         base=opt.loss_multisimilarity_thresh, distance=dot)  # fmt: skip
        return mined(pml, ms_miner)
    if loss == "softmax":
        pml = losses.NormalizedSoftmaxLoss(num_classes=C, embedding_size=D, temperature=opt.loss_softmax_temperature)
        pml.W = torch.nn.Parameter(crit.class_map.detach().T.clone())
        return plain(pml)
    if loss == "arcface":
        pml = losses.ArcFaceLoss(num_classes=C, embedding_size=D, margin=math.degrees(opt.loss_arcface_angular_margin),
                                 scale=opt.loss_arcface_feature_scale)  # fmt: skip
        pml.W = torch.nn.Parameter(crit.class_map.detach().T.clone())
        return plain(pml)
    if loss == "proxynca":
        pml = losses.ProxyNCALoss(C, D, softmax_scale=9)
        pml.proxies = torch.nn.Parameter(crit.proxies.detach().clone())
        return plain(pml)
    if loss == "npair":  # PML keeps one positive pair per class itself
        pml = losses.NPairsLoss(distance=distances.DotProductSimilarity(normalize_embeddings=False),
                                embedding_regularizer=regularizers.LpRegularizer(),
                                embedding_reg_weight=opt.loss_npair_l2)  # fmt: skip
        return plain(pml)
    if loss == "angular":  # PML has no N-pair miner: ours, then PML's N-pair + angular losses on its pairs
        npair_miner = batch_mining.select("npair", opt)
        npl = losses.NPairsLoss(distance=distances.DotProductSimilarity(normalize_embeddings=False),
                                embedding_regularizer=regularizers.LpRegularizer(),
                                embedding_reg_weight=opt.loss_angular_npair_l2)  # fmt: skip
        ang = losses.AngularLoss(alpha=opt.loss_angular_alpha)
        weight = opt.loss_angular_npair_ang_weight

        def angular_step(x, y):
            tuples = npair_miner(x.detach(), y)
            a, p = tuples[0], tuples[1]
            a2, n2 = torch.nonzero(y[:, None] != y[None, :], as_tuple=True)
            return npl(x, y, indices_tuple=(a, p, a, p)) + weight * ang(x, y, indices_tuple=(a, p, a2, n2))

        return torch.nn.ModuleList([npl, ang]), angular_step
    if loss == "lifted":  # PML enumerates the lifted structure itself
        pml = losses.LiftedStructureLoss(neg_margin=opt.loss_lifted_neg_margin, pos_margin=0, distance=lp,
                                         embedding_regularizer=regularizers.LpRegularizer(),
                                         embedding_reg_weight=opt.loss_lifted_l2)  # fmt: skip
        return plain(pml)
    if loss == "histogram":
        return plain(losses.HistogramLoss(n_bins=opt.loss_histogram_nbins - 1))
    if loss == "softtriplet":
        pml = losses.SoftTripleLoss(C, D, centers_per_class=opt.loss_softtriplet_n_centroids,
                                    la=opt.loss_softtriplet_lambda, gamma=opt.loss_softtriplet_gamma,
                                    margin=opt.loss_softtriplet_margin_delta)  # fmt: skip
        pml.fc = torch.nn.Parameter(crit.intra_class_centroids.detach().clone())
        return plain(pml)
    return None  # vmf_softmax, proxyvmf_panc, quadruplet, adversarial_separation


def pml_optimizer(model: torch.nn.Module, pml_loss: torch.nn.Module, run: Run) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` with the suite's groups for the network (backbone, head: ``model_param_groups``) and the
    PML loss's parameters in a group of their own at the lr and weight decay the suite gives the loss's own."""
    opt = run.opt
    groups = model_param_groups(model, opt)
    groups = exclude_1d_from_decay(groups) if opt.decay_exclude_1d else groups
    params = [p for p in pml_loss.parameters() if p.requires_grad]
    own = run.criterion.param_groups()
    if params:
        lr, decay = (own[0]["lr"], own[0].get("weight_decay", 0.0)) if own else (opt.lr, 0.0)
        groups.append({"params": params, "lr": lr, "weight_decay": decay, "name": "pml_loss"})
    return torch.optim.Adam(groups)


# ------------------------------------------------------------------------------------------------------ timing
def clocks() -> tuple[float, float]:
    return time.thread_time(), time.perf_counter()


class StepClock(Hook):
    """The clocks at every ``after_step`` event of the loop: consecutive marks bound one full step."""

    def __init__(self):
        self.marks: list[tuple[float, float]] = []

    def after_step(self, trainer, epoch: int, step: int, loss: float) -> None:
        self.marks.append(clocks())


class Case:
    """One row: this suite's run (``Trainer`` + hook) and, on copies of the same initial network, the backbone alone,
    this suite's criterion in the plain step, and the PML step (None where PML has no counterpart)."""

    def __init__(self, row: str, steps: int, seed: int = 0):
        loss, miner = split_row(row)
        self.name = loss
        opt = make_opt(loss, miner)
        self.miner = opt.batch_mining or "-"
        batches = make_batches(steps + 1, seed)
        self.batches = batches[1:]  # the steps the hook's intervals end with
        torch.manual_seed(seed)
        run = build_suite_run(opt, batches)
        self.clock = StepClock()
        self.trainer = Trainer(run, [self.clock])
        self.backbone = copy.deepcopy(run.model).train()
        model, crit = copy.deepcopy(run.model).train(), copy.deepcopy(run.criterion).train()
        self.plain = (model, crit, build_optimizer(param_groups(model, crit, opt), opt))
        counterpart = pml_counterpart(loss, opt.batch_mining, opt, run.criterion)
        self.pml = None
        if counterpart is not None:
            pml_loss, pml_fn = counterpart
            model = copy.deepcopy(run.model).train()
            self.pml = (model, pml_fn, pml_optimizer(model, pml_loss, run))

    def ours(self) -> list[tuple[float, float]]:
        """One epoch of the loop over the prepared batches: the (cpu, wall) seconds of each step but the first."""
        self.clock.marks = []
        self.trainer.train_epoch(1)
        marks = self.clock.marks
        return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]

    def plain_steps(self, model, loss_fn, optimizer) -> list[tuple[float, float]]:
        """The plain step (PML's side, and ours without the loop): forward, loss, zero_grad, backward, step."""
        out = []
        for images, labels, _ in self.batches:
            c0, w0 = clocks()
            embeddings = model(images)
            loss = loss_fn(embeddings, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            c1, w1 = clocks()
            out.append((c1 - c0, w1 - w0))
        return out

    def backbone_steps(self) -> list[tuple[float, float]]:
        out = []
        params = list(self.backbone.parameters())
        for images, _, _ in self.batches:
            for p in params:  # outside the timed region (the steps reset theirs inside: part of their overhead)
                p.grad = None
            c0, w0 = clocks()
            self.backbone(images).sum().backward()
            c1, w1 = clocks()
            out.append((c1 - c0, w1 - w0))
        return out

    def measure(self, rounds: int, clock: str) -> dict:
        """Median ms per step of each side (``clock``: cpu or wall), after one untimed round of each."""
        sides = {"ours": self.ours, "plain": lambda: self.plain_steps(*self.plain), "backbone": self.backbone_steps}
        if self.pml is not None:
            sides["pml"] = lambda: self.plain_steps(*self.pml)
        for fn in sides.values():  # warm-up: allocator, autograd caches, Adam's state, lazy inits
            fn()
        samples = {k: [] for k in sides}
        names = list(sides)
        for r in range(rounds):  # the order rotates: each side takes every position in turn
            for k in names[r % len(names) :] + names[: r % len(names)]:
                samples[k] += [s[0 if clock == "cpu" else 1] for s in sides[k]()]
        ms = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
        over = {k: ms[k] - ms["backbone"] for k in ms if k != "backbone"}

        def ratio(k: str) -> float | None:
            return over[k] / over["pml"] if "pml" in over and over["pml"] > 0 else None

        return {"loss": self.name, "miner": self.miner, "ours_ms": ms["ours"], "pml_ms": ms.get("pml"),
                "backbone_ms": ms["backbone"], "ours_overhead_ms": over["ours"], "pml_overhead_ms": over.get("pml"),
                "ratio": ratio("ours"), "plain_overhead_ms": over["plain"], "plain_ratio": ratio("plain")}  # fmt: skip


COLUMNS = ("loss", "miner", "ours step ms", "PML step ms", "backbone ms", "ours overhead ms", "PML overhead ms",
           "ours/PML", "ours plain overhead ms", "plain/PML")  # fmt: skip


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_line(r: dict) -> str:
    cells = [r["loss"], r["miner"], fmt(r["ours_ms"], 3), fmt(r["pml_ms"], 3), fmt(r["backbone_ms"], 3),
             fmt(r["ours_overhead_ms"], 3), fmt(r["pml_overhead_ms"], 3), fmt(r["ratio"], 2),
             fmt(r["plain_overhead_ms"], 3), fmt(r["plain_ratio"], 2)]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def label(r: dict) -> str:
    return r["loss"] if r["miner"] == "-" else f"{r['loss']}:{r['miner']}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--losses", nargs="+", default=list(ROWS), metavar="LOSS[:MINER]",
                        help="rows to time (default: the headline losses, then the Roth-suite ones): "
                        + " ".join(ROWS))  # fmt: skip
    parser.add_argument("--rounds", type=int, default=16, help="timing rounds per row (sides take turns)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per side and round")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 3 steps (a smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="thread CPU time or wall clock")
    parser.add_argument("--max_ratio", type=float, default=MAX_RATIO, help="flag rows whose ours/PML exceeds this")
    parser.add_argument("--tolerance", type=float, default=0.0, help="added to --max_ratio (run-to-run spread)")
    parser.add_argument("--no_fail", action="store_true", help="exit 0 even when a row is flagged")
    args = parser.parse_args(argv)
    known = {split_row(r)[0] for r in ROWS}
    for row in args.losses:
        if split_row(row)[0] not in known:
            parser.error(f"--losses {row}: not a row of this bench ({', '.join(ROWS)})")
    rounds, steps = (3, 3) if args.quick else (args.rounds, args.steps)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        rows = run_table(args.losses, rounds, steps, args.clock)
    finally:
        torch.set_num_threads(threads)
    limit = args.max_ratio + args.tolerance
    slow = [f"{label(r)} ({r['ratio']:.2f}x)" for r in rows if r["ratio"] is not None and r["ratio"] > limit]
    print(f"\nover {limit:g}x PML's overhead: " + (", ".join(slow) if slow else "none"))
    return 1 if slow and not args.no_fail else 0


def run_table(names: list[str], rounds: int, steps: int, clock: str) -> list[dict]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, pytorch-metric-learning {pytorch_metric_learning.__version__}, "
          f"{torch.get_num_threads()} thread(s), {os.cpu_count()} cores, load average {load:.2f} at start")  # fmt: skip
    print(f"B={B} ({B // PER_CLASS} classes x {PER_CLASS}) of {'x'.join(map(str, INPUT_SHAPE))} images, C={C}, "
          f"mnist_cnn, d={D}; median ms per step ({clock} clock) over {rounds} alternating rounds of {steps} steps")  # fmt: skip
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    rows = []
    for name in names:
        r = Case(name, steps).measure(rounds, clock)
        rows.append(r)
        print(table_line(r), flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.2f} at the end; overhead = step - backbone (forward + embeddings.sum().backward())")
    return rows


if __name__ == "__main__":
    sys.exit(main())
