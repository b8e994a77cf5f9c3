"""Forward + backward time of every Roth-suite criterion next to pytorch-metric-learning's counterpart.

    python bench/losses.py                  # 1 thread, B = 112, d = 128, C = 100 (about 90 s on 2 CPU cores)
    python bench/losses.py --threads 1 0    # also torch's default thread count (0 = default)
    python bench/losses.py --min_run_time 1 # longer timing per cell (tighter medians)
    python bench/losses.py --no_fail        # exit 0 even when a criterion is flagged

Inputs: random L2-normalised float32 embeddings [B, d] with requires_grad, labels 56 classes x 2 (shuffled),
C = 100 classes for the proxy / class-weight losses. Tuples (triplets, pairs, N-pair and lifted structures) are
mined once outside the timed region and handed to ours and to PML alike. Each cell is the median over
``--rounds`` rounds of ``torch.utils.benchmark.Timer`` timings of ``loss(...).backward()``, after ``--warmup``
untimed calls of each side; ours and PML alternate round by round so that load from other processes hits both
alike; ratio = ours / PML. A row whose ratio exceeds 1.2 (``--max_ratio``) is marked ``<< SLOWER``, listed on
a final line, and makes the script exit with status 1 (unless ``--no_fail``).

Notes on pairing (the ratio compares like with like where PML has the same loss):
  * multisimilarity: ours mines inside its forward (the authors' code does), so PML's time is
    MultiSimilarityMiner + MultiSimilarityLoss.
  * angular: ours is the Roth suite's N-pair + lambda * angular + l2 loss; PML's AngularLoss is the angular
    term alone (PML has no combined loss), so PML's time is AngularLoss + NPairsLoss on the same tuples.
  * snr: PML's TripletMarginLoss on SNRDistance + ZeroMeanRegularizer (the same loss, see tests).
  * lifted: PML's LiftedStructureLoss (it enumerates the same pair structure itself).
  * histogram: PML's HistogramLoss with n_bins = --loss_histogram_nbins - 1 (intervals vs nodes; same loss).
  * softtriplet: PML's SoftTripleLoss has no centre regulariser, so ours is timed with
    --loss_softtriplet_reg_weight 0 (the same loss as PML's).
  * quadruplet, adversarial_separation: PML has none ('-').
"""

from __future__ import annotations

import argparse
import importlib
import math
import pathlib
import statistics
import sys
import warnings

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pytorch_metric_learning import distances, losses, miners, reducers, regularizers  # noqa: E402
from torch.utils import benchmark  # noqa: E402

import batch_mining  # noqa: E402
import criteria  # noqa: E402
import parameters  # noqa: E402

warnings.filterwarnings("ignore", message="Using a non-tuple sequence")  # raised inside PML 2.9's HistogramLoss
B, D, C = 112, 128, 100
MAX_RATIO = 1.2  # a criterion slower than this times its PML counterpart is flagged
ROTH = (
    "triplet",
    "margin",
    "contrastive",
    "proxyanchor",
    "multisimilarity",
    "softmax",
    "arcface",
    "proxynca",
    "npair",
    "angular",
    "lifted",
    "snr",
    "histogram",
    "softtriplet",
    "quadruplet",
    "adversarial_separation",
)


def make_opt(*argv: str):
    """Options as a run builds them (embedding dimension D); the C train classes go to criteria.select."""
    return parameters.parse_args(["--embed_dim", str(D), *argv])


def make_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(B, D, generator=g), dim=1).requires_grad_(True)
    labels = torch.arange(B // 2).repeat_interleave(2)[torch.randperm(B, generator=g)]
    return x, labels


def mine(name: str, opt, x, labels, seed: int = 1):
    miner = batch_mining.select(name, opt)
    if hasattr(miner, "generator"):
        miner.generator = torch.Generator().manual_seed(seed)
    return miner(x.detach(), labels)


def npair_for_pml(labels: torch.Tensor):
    """One (anchor, positive) per class; PML's NPairsLoss takes the other pairs' positives as negatives."""
    a, p = [], []
    for c in labels.unique().tolist():
        idx = torch.nonzero(labels == c).squeeze(1)
        a.append(idx[0])
        p.append(idx[1])
    a, p = torch.stack(a), torch.stack(p)
    neg = torch.zeros(len(a), len(labels), dtype=torch.bool)
    for i in range(len(a)):
        neg[i, p[torch.arange(len(a)) != i]] = True
    return a, p, neg


def cases(x, labels):
    """name -> (ours: () -> loss, pml: () -> loss or None). Tuples are mined here, outside the timed region."""
    opt = make_opt()
    t = torch.as_tensor(mine("distance", opt, x, labels)).reshape(-1, 3)
    ta, tp, tn = t[:, 0], t[:, 1], t[:, 2]
    lp2 = distances.LpDistance(power=2, normalize_embeddings=False)
    lp = distances.LpDistance(normalize_embeddings=False)
    dot = distances.DotProductSimilarity()
    out = {}

    crit = criteria.select("triplet", opt, batch_mining.select("distance", opt), n_classes=C)
    pml = losses.TripletMarginLoss(margin=opt.loss_triplet_margin, distance=lp2, reducer=reducers.MeanReducer())
    out["triplet"] = (lambda c=crit: c(x, labels, triplets=t), lambda p=pml: p(x, labels, indices_tuple=(ta, tp, tn)))

    crit = criteria.select("contrastive", opt, batch_mining.select("distance", opt), n_classes=C)
    pml = losses.ContrastiveLoss(
        pos_margin=opt.loss_contrastive_pos_margin,
        neg_margin=opt.loss_contrastive_neg_margin,
        distance=lp,
        reducer=reducers.MeanReducer(),
    )
    out["contrastive"] = (
        lambda c=crit: c(x, labels, triplets=t),
        lambda p=pml: p(x, labels, indices_tuple=(ta, tp, ta, tn)),
    )

    crit = criteria.select("margin", opt, batch_mining.select("distance", opt), n_classes=C)
    pml = losses.MarginLoss(
        margin=opt.loss_margin_margin, nu=opt.loss_margin_nu, learn_beta=True, num_classes=C, distance=lp
    )
    pml.beta = torch.nn.Parameter(crit.beta.detach().clone())
    out["margin"] = (lambda c=crit: c(x, labels, triplets=t), lambda p=pml: p(x, labels, indices_tuple=(ta, tp, tn)))

    crit = criteria.select("proxyanchor", opt, n_classes=C)
    pml = losses.ProxyAnchorLoss(
        num_classes=C, embedding_size=D, margin=opt.loss_proxyanchor_delta, alpha=opt.loss_proxyanchor_alpha
    )
    pml.proxies = torch.nn.Parameter(crit.proxies.detach().clone())
    out["proxyanchor"] = (lambda c=crit: c(x, labels), lambda p=pml: p(x, labels))

    crit = criteria.select("multisimilarity", opt, n_classes=C)
    ms_miner = miners.MultiSimilarityMiner(epsilon=opt.loss_multisimilarity_margin, distance=dot)
    ms_loss = losses.MultiSimilarityLoss(
        alpha=opt.loss_multisimilarity_pos_weight,
        beta=opt.loss_multisimilarity_neg_weight,
        base=opt.loss_multisimilarity_thresh,
        distance=dot,
    )
    out["multisimilarity"] = (
        lambda c=crit: c(x, labels),
        lambda: ms_loss(x, labels, indices_tuple=ms_miner(x.detach(), labels)),
    )

    crit = criteria.select("softmax", opt, n_classes=C)
    pml = losses.NormalizedSoftmaxLoss(num_classes=C, embedding_size=D, temperature=opt.loss_softmax_temperature)
    pml.W = torch.nn.Parameter(crit.class_map.detach().T.clone())
    out["softmax"] = (lambda c=crit: c(x, labels), lambda p=pml: p(x, labels))

    crit = criteria.select("arcface", opt, n_classes=C)
    pml = losses.ArcFaceLoss(
        num_classes=C,
        embedding_size=D,
        margin=math.degrees(opt.loss_arcface_angular_margin),
        scale=opt.loss_arcface_feature_scale,
    )
    pml.W = torch.nn.Parameter(crit.class_map.detach().T.clone())
    out["arcface"] = (lambda c=crit: c(x, labels), lambda p=pml: p(x, labels))

    crit = criteria.select("proxynca", opt, n_classes=C)
    pml = losses.ProxyNCALoss(C, D, softmax_scale=9)
    pml.proxies = torch.nn.Parameter(crit.proxies.detach().clone())
    out["proxynca"] = (lambda c=crit: c(x, labels), lambda p=pml: p(x, labels))

    na, np_, nneg = npair_for_pml(labels)
    crit = criteria.select("npair", opt, batch_mining.select("npair", opt), n_classes=C)
    pml = losses.NPairsLoss(
        distance=distances.DotProductSimilarity(normalize_embeddings=False),
        embedding_regularizer=regularizers.LpRegularizer(),
        embedding_reg_weight=opt.loss_npair_l2,
    )
    out["npair"] = (
        lambda c=crit: c(x, labels, tuples=(na, np_, nneg)),
        lambda p=pml: p(x, labels, indices_tuple=(na, np_, na, np_)),
    )

    tuples = mine("npair", opt, x, labels)
    crit = criteria.select("angular", opt, batch_mining.select("npair", opt), n_classes=C)
    ang = losses.AngularLoss(alpha=opt.loss_angular_alpha)
    npl = losses.NPairsLoss(
        distance=distances.DotProductSimilarity(normalize_embeddings=False),
        embedding_regularizer=regularizers.LpRegularizer(),
        embedding_reg_weight=opt.loss_angular_npair_l2,
    )
    aa, ap = tuples[0], tuples[1]
    a2, n2 = torch.nonzero(labels[:, None] != labels[None, :], as_tuple=True)
    out["angular"] = (
        lambda c=crit: c(x, labels, tuples=tuples),
        lambda: (
            npl(x, labels, indices_tuple=(aa, ap, aa, ap))
            + opt.loss_angular_npair_ang_weight * ang(x, labels, indices_tuple=(aa, ap, a2, n2))
        ),
    )

    lifted_tuples = mine("lifted", opt, x, labels)
    crit = criteria.select("lifted", opt, batch_mining.select("lifted", opt), n_classes=C)
    pml = losses.LiftedStructureLoss(
        neg_margin=opt.loss_lifted_neg_margin,
        pos_margin=0,
        distance=lp,
        embedding_regularizer=regularizers.LpRegularizer(),
        embedding_reg_weight=opt.loss_lifted_l2,
    )
    out["lifted"] = (lambda c=crit: c(x, labels, tuples=lifted_tuples), lambda p=pml: p(x, labels))

    snr_opt = make_opt()
    crit = criteria.select("snr", snr_opt, batch_mining.select("random", snr_opt), n_classes=C)
    tr = torch.as_tensor(mine("random", snr_opt, x, labels)).reshape(-1, 3)
    pml = losses.TripletMarginLoss(
        margin=snr_opt.loss_snr_margin,
        distance=distances.SNRDistance(normalize_embeddings=False),
        embedding_regularizer=regularizers.ZeroMeanRegularizer(),
        embedding_reg_weight=snr_opt.loss_snr_reg_lambda,
    )
    out["snr"] = (
        lambda c=crit: c(x, labels, triplets=tr),
        lambda p=pml: p(x, labels, indices_tuple=(tr[:, 0], tr[:, 1], tr[:, 2])),
    )

    crit = criteria.select("histogram", opt, n_classes=C)
    pml = losses.HistogramLoss(n_bins=opt.loss_histogram_nbins - 1)
    out["histogram"] = (lambda c=crit: c(x, labels), lambda p=pml: p(x, labels))

    crit = criteria.select("softtriplet", make_opt("--loss_softtriplet_reg_weight", "0"), n_classes=C)  # PML: no regulariser
    pml = losses.SoftTripleLoss(
        C,
        D,
        centers_per_class=opt.loss_softtriplet_n_centroids,
        la=opt.loss_softtriplet_lambda,
        gamma=opt.loss_softtriplet_gamma,
        margin=opt.loss_softtriplet_margin_delta,
    )
    pml.fc = torch.nn.Parameter(crit.intra_class_centroids.detach().clone())
    out["softtriplet"] = (lambda c=crit: c(x, labels), lambda p=pml: p(x, labels))

    crit = criteria.select("quadruplet", opt, batch_mining.select("distance", opt), n_classes=C)
    fourth = crit.draw_fourth(labels, t)
    out["quadruplet"] = (lambda c=crit: c(x, labels, triplets=t, fourth=fourth), None)

    crit = criteria.select("adversarial_separation", opt, batch_mining.select("distance", opt), n_classes=C)
    out["adversarial_separation"] = (lambda c=crit: c(x, labels, triplets=t), None)
    assert set(out) == set(ROTH)
    return out


def _timer(fn, threads: int, warmup: int) -> benchmark.Timer:
    def step():
        fn().backward()

    for _ in range(warmup):  # untimed: allocator, autograd graph caches, lazy inits
        step()
    return benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=threads)


def time_pair_ms(
    ours_fn, pml_fn, threads: int, min_run_time: float, rounds: int = 9, warmup: int = 5
) -> tuple[float, float | None]:
    """Median ms per forward+backward of ours and PML, measured in alternating rounds so that load changes on
    a shared machine hit both sides alike."""
    timers = [_timer(ours_fn, threads, warmup)] + ([_timer(pml_fn, threads, warmup)] if pml_fn is not None else [])
    numbers = []
    for t in timers:  # calls per round: about min_run_time / rounds seconds each
        per_call = t.timeit(3).median
        numbers.append(max(1, int(min_run_time / rounds / max(per_call, 1e-6))))
    samples = [[] for _ in timers]
    for r in range(rounds):
        order = range(len(timers)) if r % 2 == 0 else reversed(range(len(timers)))  # ABBA: no side always first
        for i in order:
            samples[i].append(timers[i].timeit(numbers[i]).median)
    medians = [statistics.median(s) * 1e3 for s in samples]
    return medians[0], (medians[1] if len(medians) > 1 else None)


def roth_table(threads=(1,), min_run_time: float = 0.5, rounds: int = 9, warmup: int = 5,
               max_ratio: float = MAX_RATIO) -> list[dict]:  # fmt: skip
    """Print (and return) the ours-vs-PML forward+backward timing table of the Roth-suite criteria; rows slower
    than ``max_ratio`` times PML get ``"slow": True`` and a marker."""
    torch.manual_seed(0)
    x, labels = make_batch()
    table = cases(x, labels)
    rows = []
    for n in threads:
        n_eff = n if n > 0 else torch.get_num_threads()
        print(f"\nRoth-suite criteria, forward+backward, B={B} d={D} C={C}, {n_eff} thread(s), median ms "
              f"({rounds} alternating rounds after {warmup} warm-up calls)")  # fmt: skip
        print(f"{'criterion':<24} {'ours ms':>9} {'PML ms':>9} {'ours/PML':>9}")
        for name in ROTH:
            ours_fn, pml_fn = table[name]
            ours, pml = time_pair_ms(ours_fn, pml_fn, n_eff, min_run_time, rounds, warmup)
            ratio = ours / pml if pml else None
            slow = ratio is not None and ratio > max_ratio
            rows.append({"criterion": name, "threads": n_eff, "ours_ms": ours, "pml_ms": pml, "ratio": ratio,
                         "slow": slow})  # fmt: skip
            pml_s = f"{pml:9.3f}" if pml is not None else f"{'-':>9}"
            ratio_s = f"{ratio:9.2f}" if ratio is not None else f"{'-':>9}"
            mark = f"  << SLOWER than {max_ratio:g}x PML" if slow else ""
            print(f"{name:<24} {ours:9.3f} {pml_s} {ratio_s}{mark}", flush=True)
    slow = [f"{r['criterion']} ({r['ratio']:.2f}x, {r['threads']} thr)" for r in rows if r["slow"]]
    print(f"\nover {max_ratio:g}x PML: " + (", ".join(slow) if slow else "none"))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads per table (0: default)")
    parser.add_argument("--min_run_time", type=float, default=0.5, help="seconds of timing per cell")
    parser.add_argument("--rounds", type=int, default=9, help="alternating ours/PML timing rounds per cell")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls of each side before timing")
    parser.add_argument("--max_ratio", type=float, default=MAX_RATIO, help="flag rows slower than this x PML")
    parser.add_argument("--no_fail", action="store_true", help="exit 0 even when some row is flagged")
    args = parser.parse_args(argv)
    rows = roth_table(tuple(args.threads), args.min_run_time, args.rounds, args.warmup, args.max_ratio)
    # bench/_proxyvmf_scale.py (another part of the suite) may add the proxyvmf scaling table.
    if (ROOT / "bench" / "_proxyvmf_scale.py").is_file():
        proxyvmf_table = getattr(importlib.import_module("bench._proxyvmf_scale"), "proxyvmf_table", None)
        if callable(proxyvmf_table):
            proxyvmf_table()
    if any(r["slow"] for r in rows) and not args.no_fail:
        sys.exit(1)


if __name__ == "__main__":
    main()
