"""parameters.py: the flag set, its defaults (explicit > dataset > loss > Roth suite), the pasted original flags,
metric checks, and that options flow one way (parse_args builds them; nothing later writes into them)."""

from __future__ import annotations

import pytest

import criteria
import metrics
import parameters
from utilities.errors import UserError


def test_help_is_grouped():
    text = parameters.build_parser().format_help()
    for group in ["Basic training", "Data and batches", "Architecture", "Losses", "Batch mining", "Evaluation",
                  "Logging"]:  # fmt: skip
        assert group + ":" in text


def test_original_codes_flags_and_roth_default_metrics_are_accepted():
    """Pasted commands of the Roth suite / EL-nivMF code parse: ignored flags warn, --use_float16 is --amp fp16."""
    roth_metrics = ["e_recall@1", "e_recall@2", "e_recall@4", "nmi", "f1", "mAP_1000", "mAP_lim", "mAP_c",
                    "dists@intra", "dists@inter", "dists@intra_over_inter", "rho_spectrum@0", "rho_spectrum@-1",
                    "rho_spectrum@1", "rho_spectrum@2", "rho_spectrum@10"]  # fmt: skip
    with pytest.warns(UserWarning) as caught:
        opt = parameters.parse_args(["--use_float16", "--online_backend", "wandb", "--loss_oproxy_unique",
                                     "--loss_proxyvmf_learnable_temp", "1", "--evaluation_metrics", *roth_metrics,
                                     "--augmentation", "big"])  # fmt: skip
    text = " ".join(str(w.message) for w in caught)
    assert "--loss_oproxy_unique" in text and "rho_spectrum@0" in text and "--online_backend" not in text
    assert opt.amp == "fp16" and opt.augmentation == "big"
    assert opt.evaluation_metrics == [m for m in roth_metrics if m != "rho_spectrum@0"]


def test_flag_precedence_explicit_over_dataset_over_loss():
    """Unset flags: the dataset's defaults, then the loss's (the EL-nivMF code's), then the Roth suite's."""
    roth = parameters.parse_args(["--dataset", "cars196"])
    assert (roth.arch, roth.bs) == ("resnet50_frozen_normalize", 112)
    nivmf = parameters.parse_args(["--dataset", "cars196", "--loss", "proxyvmf_panc"])
    assert (nivmf.arch, nivmf.bs, nivmf.storage_metrics) == ("resnet50_frozen", 64, ["c_recall@1"])
    digits = parameters.parse_args(["--loss", "proxyvmf_panc"])
    assert (digits.arch, digits.bs) == ("mnist_cnn", 60)
    explicit = parameters.parse_args(
        ["--dataset", "cars196", "--loss", "proxyvmf_panc", "--arch", "resnet18", "--bs", "8"]
    )
    assert (explicit.arch, explicit.bs) == ("resnet18", 8)


@pytest.mark.parametrize(
    "loss, own",
    [
        ("margin", []),
        ("unnormalized_softmax", ["accuracy", "ece", "ece_rms"]),
        ("hyperbolic_softmax", ["accuracy", "ece", "ece_rms", "poincare_recall@1", "poincare_map_at_r"]),
        ("vmf_softmax", ["accuracy", "ece", "ece_rms", "vmf_recall@1", "vmf_map_at_r", "vmf_mean_kappa"]),
        ("proxyvmf_panc", ["norms@5", "norms@50", "norms@95", "unc_auroc_cos", "unc_auroc_l2", "unc_spearman",
                           "unc_recall_area", "unc_nw_acc@10", "unc_nw_ll@10"]),
    ],
)  # fmt: skip
def test_a_loss_metrics_are_its_default_evaluation_metrics(loss, own):
    """Losses compute losses: a loss's own metrics are ordinary metrics, on by default through its flag defaults."""
    opt = parameters.parse_args(["--loss", loss])
    assert opt.evaluation_metrics == [*metrics.DEFAULT_EVALUATION_METRICS, *own]
    explicit = parameters.parse_args(["--loss", loss, "--evaluation_metrics", "c_recall@1"])
    assert explicit.evaluation_metrics == ["c_recall@1", *(m for m in explicit.storage_metrics if m != "c_recall@1")]
    # a dataset with its own protocol metrics (In-Shop's recalls) keeps them and the loss's own after them
    in_shop = parameters.parse_args(["--loss", loss, "--dataset", "in_shop", "--source_path", "/data"])
    recalls = [f"c_recall@{k}" for k in (1, 10, 20, 30, 40, 50)]
    assert in_shop.evaluation_metrics == [*recalls, "e_recall@1", "map_at_r", *own]


def test_storage_metrics_are_added_to_the_evaluation_metrics():
    opt = parameters.parse_args(["--loss", "vmf_softmax", "--evaluation_metrics", "e_recall@1",
                                 "--storage_metrics", "vmf_recall@1", "accuracy"])  # fmt: skip
    assert opt.evaluation_metrics == ["e_recall@1", "vmf_recall@1", "accuracy"]


@pytest.mark.parametrize(
    "loss, metric, view",
    [("margin", "accuracy", "probabilities"), ("softmax", "vmf_recall@1", "samples"),
     ("vmf_softmax", "poincare_recall@1", "poincare"), ("arcface", "vmf_mean_kappa", "kappa")],
)  # fmt: skip
def test_a_metric_needs_a_loss_that_gives_its_view(loss, metric, view):
    """One line naming the metric, what it needs, and the losses that give it."""
    with pytest.raises(UserError) as err:
        parameters.parse_args(["--loss", loss, "--storage_metrics", metric])
    message = str(err.value)
    assert f"metric '{metric}'" in message and metrics.VIEWS[view] in message and "\n" not in message
    givers = [n for n in criteria.names() if criteria.get_class(n).provides(view)]
    assert givers and all(name in message for name in givers)


def test_unknown_storage_metric_lists_every_metric_form():
    with pytest.raises(UserError) as err:
        parameters.parse_args(["--loss", "vmf_softmax", "--storage_metrics", "bogus"])
    assert "--storage_metrics" in str(err.value) and "vmf_recall@1" in str(err.value)


@pytest.mark.parametrize("loss", criteria.names())
def test_every_loss_parses_with_its_own_defaults(loss):
    """Each loss's flag defaults (its miner, its metrics) pass the checks they are subject to."""
    opt = parameters.parse_args(["--loss", loss])
    assert opt.batch_mining == criteria.default_miner(loss)
    for name in opt.evaluation_metrics:
        view = metrics.select(name).requires.needed_view
        assert view is None or criteria.get_class(loss).provides(view), (loss, name)
