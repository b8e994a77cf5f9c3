"""The flat flag set, assembled from the core groups and each component's own flags.

Flag names and defaults follow the Roth et al. 2020 suite and the EL-nivMF code, so
their commands paste unchanged. Flags left unset take the dataset's defaults (see
``datasets.defaults``); flags given explicitly always win.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import architectures
import batch_mining
import criteria
import datasampler
import datasets
import hydra_commands
import metrics
from utilities.errors import UserError
from utilities.flag_types import Number, fraction, non_negative_float, non_negative_int, positive_float, positive_int

DEFAULT_EVALUATION_METRICS = metrics.DEFAULT_EVALUATION_METRICS
# --dataset when a command names a data folder (--source_path) but no dataset: the Roth suite's default. With no
# data folder the default stays the embedded, offline `digits`.
DATA_FOLDER_DEFAULT_DATASET = "cub200"


class FlagParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and grouped help."""

    def error(self, message: str):
        raise UserError(f"{message} (see python main.py --help)")


def basic_training_parameters(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Basic training")
    g.add_argument("--dataset", default="digits", type=str,
                   help="dataset name (digits, embedded, unless --source_path is given: then cub200, the Roth suite's "
                        "default): " + ", ".join(datasets.names()))  # fmt: skip
    g.add_argument(
        "--source_path",
        default=os.path.join(os.getcwd(), "..", "..", "Datasets"),
        type=str,
        help="parent folder holding the dataset folders (cub200/, cars196/, online_products/, ...)",
    )
    g.add_argument(
        "--save_path",
        default=os.path.join(os.getcwd(), "Training_Results"),
        type=str,
        help="where run folders go: <save_path>/<dataset>/<group>_s<seed>/",
    )
    g.add_argument(
        "--savename",
        default="group_plus_seed",
        type=str,
        help="run folder name; the default 'group_plus_seed' gives <group>_s<seed>",
    )
    g.add_argument(
        "--seed",
        default=1,
        type=Number(int, low=0, high=2**32 - 1),
        help="seed of python, numpy, torch and data-loader workers",
    )
    g.add_argument("--n_epochs", default=150, type=positive_int(), help="training epochs")
    g.add_argument("--kernels", default=6, type=non_negative_int(), help="data-loader worker processes")
    g.add_argument("--bs", default=112, type=positive_int(), help="mini-batch size")
    g.add_argument("--lr", default=0.00001, type=positive_float(), help="learning rate of the backbone")
    g.add_argument(
        "--fc_lr",
        default=-1,
        type=Number(float, low=0, low_open=True, also=(-1,)),
        help="learning rate of the embedding head (-1: --lr)",
    )
    g.add_argument("--decay", default=0.0004, type=non_negative_float(), help="weight decay of backbone and head")
    g.add_argument(
        "--decay_exclude_1d",
        action="store_true",
        help="no weight decay on biases and every parameter with dim <= 1 (BatchNorm, scalars; criterion parameters "
        "too), as the vMF paper's code",
    )
    g.add_argument("--optim", default="adam", choices=["adam", "adamw", "sgd"], help="optimiser")
    g.add_argument("--momentum", default=0.9, type=fraction(high_open=True), help="SGD momentum")
    g.add_argument("--nesterov", action="store_true", help="SGD with Nesterov momentum")
    g.add_argument(
        "--scheduler",
        default="step",
        choices=["step", "none", "plateau"],
        help="step: MultiStepLR(--tau, --gamma); plateau: ReduceLROnPlateau on the first storage metric",
    )
    g.add_argument(
        "--tau", default=[1000], nargs="+", type=positive_int(), help="epochs at which MultiStepLR decays the lr"
    )
    g.add_argument("--gamma", default=0.3, type=positive_float(), help="lr decay factor of the scheduler")
    g.add_argument(
        "--plateau_factor", default=0.5, type=fraction(low_open=True, high_open=True), help="ReduceLROnPlateau factor"
    )
    g.add_argument(
        "--plateau_patience", default=15, type=non_negative_int(), help="ReduceLROnPlateau patience (epochs)"
    )
    g.add_argument(
        "--early_stop_patience",
        default=-1,
        type=Number(int, low=-1),
        help="stop after this many evaluations without improvement of the first storage metric (-1: off)",
    )
    g.add_argument(
        "--warmup",
        default=0,
        type=non_negative_int(),
        help="epochs training only head and criterion (frozen backbone, its BatchNorm statistics fixed)",
    )
    g.add_argument(
        "--gpu", default=[0], nargs="+", type=non_negative_int(), help="GPU id(s); the CPU is used when CUDA is absent"
    )
    g.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"],
                   help="mixed-precision autocast on GPU (bf16 falls back to fp16 + GradScaler where the GPU lacks "
                        "bf16; losses and metrics stay float32)")  # fmt: skip
    g.add_argument("--channels_last", default="auto", choices=["auto", "on", "off"],
                   help="channels-last memory format of the network and its input (auto: on CUDA)")  # fmt: skip
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the backbone (head, miners and losses stay eager); the first steps compile")  # fmt: skip
    g.add_argument("--cudnn_benchmark", action="store_true",
                   help="CUDA: cuDNN autotuning (benchmark on, deterministic off): faster, not bitwise reproducible")  # fmt: skip
    g.add_argument("--resume", default="", type=str, help="run folder to resume from its last checkpoint")
    g.add_argument("--checkpoint_every", default=0, type=non_negative_int(),
                   help="also save checkpoint_last.pth every N training steps (0: at epoch ends only; a SIGTERM or "
                        "SIGINT always saves the position before stopping), bounding the work a kill -9 loses")  # fmt: skip
    g.add_argument("--dry_run", action="store_true", help="build data, model, loss and optimiser, then stop")


def data_parameters(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Data and batches")
    g.add_argument(
        "--data_sampler", default="class_random", type=str, help="batch sampler: " + ", ".join(datasampler.names())
    )
    g.add_argument("--samples_per_class", default=2, type=positive_int(), help="images per class in a batch")
    g.add_argument("--use_tv_split", action="store_true", help="carve a validation split out of the train classes")
    g.add_argument(
        "--tv_split_by_samples",
        action="store_true",
        help="split train/val by samples within each class instead of by classes",
    )
    g.add_argument(
        "--tv_split_perc",
        default=0.8,
        type=fraction(low_open=True, high_open=True),
        help="share of train classes (or samples) kept for training",
    )
    g.add_argument(
        "--augmentation",
        default="base",
        choices=["base", "big", "adv", "red", "none"],
        help="train-time augmentation (Roth suite): base crop+flip, big at 256 px, adv + colour jitter/grayscale, "
        "red resize+random crop, none",
    )
    g.add_argument("--image_size", default=224, type=Number(int, low=8), help="crop size of image datasets")
    g.add_argument("--decode_cache", default="none", type=str,
                   help="photo datasets: decode every image once into a memory-mapped uint8 cache in this folder "
                        "('auto': $XDG_CACHE_HOME or ~/.cache, under dml_decode_cache; 'none', the default: decode "
                        "every epoch as the Roth suite); train batches then travel as uint8 and are normalised on "
                        "the device (docs/scale.md#training-fast-on-one-gpu)")  # fmt: skip
    g.add_argument("--decode_cache_size", default="resize", choices=["resize", "full"],
                   help="resize: cache the test transform's Resize(image_size*256/224) output (test, red and none "
                        "exact, random crops interpolated from it); full: the decoded size (all exact, 2-4x larger)")  # fmt: skip
    datasets.add_args(g)
    datasampler.add_args(g)


def model_parameters(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Architecture")
    g.add_argument(
        "--arch",
        default="resnet50_frozen_normalize",
        type=str,
        help="backbone[_frozen][_normalize]: " + ", ".join(architectures.names()) + ", timm_<model>",
    )
    g.add_argument("--embed_dim", default=128, type=positive_int(), help="embedding dimension")
    g.add_argument("--not_pretrained", action="store_true", help="random init instead of ImageNet weights")
    architectures.add_args(g)


def loss_parameters(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Losses")
    g.add_argument("--loss", default="margin", type=str, help="criterion: " + ", ".join(criteria.names()))
    criteria.add_args(g)
    m = parser.add_argument_group("Batch mining")
    m.add_argument(
        "--batch_mining",
        default=None,
        type=str,
        help="batch miner (default: the loss's own, e.g. distance for margin): " + ", ".join(batch_mining.names()),
    )
    batch_mining.add_args(m)


def evaluation_parameters(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Evaluation")
    g.add_argument(
        "--evaluation_metrics",
        nargs="+",
        default=list(DEFAULT_EVALUATION_METRICS),
        type=str,
        help="metrics logged per split; families: " + ", ".join(metrics.names()),
    )
    g.add_argument(
        "--storage_metrics",
        nargs="+",
        default=["e_recall@1"],
        type=str,
        help="a checkpoint is kept for each improvement of each of these on the selection split",
    )
    g.add_argument(
        "--evaltypes",
        nargs="+",
        default=["discriminative"],
        type=str,
        help="embeddings evaluated ('discriminative': the network output)",
    )
    g.add_argument(
        "--evaluate_on_gpu",
        action="store_true",
        help="Roth suite flag, kept for its commands: the k-NN search runs on the GPU (torch) whenever training does",
    )
    g.add_argument("--evaluate_on_cpu", action="store_true", help="metrics (k-NN, k-means) on the CPU even on a GPU")
    g.add_argument("--no_train_metrics", action="store_true", help="skip metrics on the training data")
    g.add_argument("--eval_every", default=1, type=positive_int(), help="evaluate every N epochs (and after the last)")
    metrics.add_args(g)


def trained_run_parameters(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Working with a trained run")
    g.add_argument("--evaluate", default="", type=str, metavar="RUN_FOLDER",
                   help="evaluate a run folder's checkpoint instead of training: its options, with the flags given "
                        "here winning (e.g. --dataset/--source_path, --evaluation_metrics); writes "
                        "<run folder>/evaluation/<checkpoint name>/")  # fmt: skip
    g.add_argument(
        "--checkpoint",
        default="best",
        type=str,
        help="with --evaluate: best (the first storage metric's), best_<metric>, last, or a .pth path",
    )
    g.add_argument("--embed", default="", type=str, metavar="IMAGE_FOLDER",
                   help="with --evaluate: also embed every image below this folder (recursively) into "
                        "embeddings_<folder name>.npz")  # fmt: skip


def logging_parameters(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Logging")
    g.add_argument(
        "--log_online",
        action="store_true",
        help="also log to Weights & Biases (key from WANDB_API_KEY; offline without network)",
    )
    g.add_argument("--project", default="Sample_Project", type=str, help="W&B project")
    g.add_argument("--group", default="Sample_Group", type=str, help="run group; seeds of one group share it")
    g.add_argument("--wandb_key", default=None, type=str, help=argparse.SUPPRESS)
    g.add_argument("--no_progress", action="store_true", help="no progress bars")


# Flags of the original codes (Roth suite, EL-nivMF) that this suite has no use for: accepted
# so that pasted commands run, and reported as ignored. value: why / what to use instead.
IGNORED_ORIGINAL_FLAGS = {
    "--temp_ned": "unused by the EL-nivMF losses",
    "--loss_proxyvmf_learnable_temp": "the temperature is always learned (--loss_proxyvmf_templrmulti 0 freezes it)",
    "--loss_proxyvmf_prenorm": "unused by the EL-nivMF losses",
    "--loss_proxyvmf_mode": "unused by the EL-nivMF losses",
    "--loss_proxyvmf_loss": "choose the family member with --loss (proxyvmf_panc, proxyvmf, proxyvmf_kl, ...)",
    "--loss_proxynca_dim": "the original's reduction axis; only its default (1: per image) is implemented",
    "--loss_oproxy_lrmulti_hyper": "unused by oproxy",
    "--loss_oproxy_proxy_div": "unused by oproxy",
    "--loss_oproxy_init_dev": "unused by oproxy",
    "--loss_oproxy_euclidean": "unused by oproxy",
    "--loss_oproxy_detach_proxies": "unused by oproxy",
    "--loss_oproxy_unique": "unused by oproxy",
}


def compatibility_parameters(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Flags of the original codes (accepted; ignored or translated)")
    g.add_argument("--use_float16", action="store_true", help="EL-nivMF code: the same as --amp fp16")
    g.add_argument("--online_backend", default="wandb", choices=["wandb"], help="Roth suite: W&B is the only backend")
    g.add_argument("--comet_api_key", default=None, type=str, help=argparse.SUPPRESS)
    for flag, why in IGNORED_ORIGINAL_FLAGS.items():
        g.add_argument(flag, nargs="?", const="1", default=None, metavar="VALUE", help=f"ignored: {why}")


def build_parser() -> FlagParser:
    """The full flag parser, grouped for ``--help``."""
    parser = FlagParser(
        prog="main.py",
        usage="python main.py [--dataset NAME] [--loss NAME] [--arch NAME] [flags ...]",
        description="Train and evaluate deep metric learning models. Unset flags take the dataset's defaults "
        "(and the loss's, e.g. the EL-nivMF code's for proxyvmf_*; shown below for the chosen --dataset and --loss).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    basic_training_parameters(parser)
    data_parameters(parser)
    model_parameters(parser)
    loss_parameters(parser)
    evaluation_parameters(parser)
    trained_run_parameters(parser)
    logging_parameters(parser)
    compatibility_parameters(parser)
    return parser


def check_options(opt: argparse.Namespace) -> None:
    """Cross-flag checks; each failure is one line saying what to change."""
    if opt.resume:
        last = Path(opt.resume) / "checkpoint_last.pth"
        if not Path(opt.resume).is_dir():
            raise UserError(f"--resume {opt.resume}: no such run folder; pass <save_path>/<dataset>/<group>_s<seed>")
        if not last.is_file():
            raise UserError(f"--resume {opt.resume}: no checkpoint_last.pth there; pass a run folder of this suite")
    if opt.wandb_key is not None or opt.comet_api_key is not None:
        raise UserError("API keys are not accepted as flags (they must not reach configs or logs); "
                        "set WANDB_API_KEY in the environment instead")  # fmt: skip
    for flag, why in IGNORED_ORIGINAL_FLAGS.items():
        if getattr(opt, flag[2:]) is not None:
            warnings.warn(f"{flag} (a flag of the original code) is ignored: {why}", stacklevel=2)
    if opt.use_float16:
        opt.amp = "fp16" if opt.amp == "none" else opt.amp
    if opt.bs % opt.samples_per_class:
        raise UserError(
            f"--bs {opt.bs} is not divisible by --samples_per_class {opt.samples_per_class}; change one of them"
        )
    criteria.get_class(opt.loss)
    datasampler.REGISTRY.get(opt.data_sampler)
    architectures.REGISTRY.get(architectures.parse_name(opt.arch)[0]) if not opt.arch.startswith("timm_") else None
    if opt.batch_mining is not None:
        batch_mining.REGISTRY.get(opt.batch_mining)
    criteria.check_miner(opt.loss, opt.batch_mining)
    if "rho_spectrum@0" in opt.evaluation_metrics:  # in the Roth suite's default list; a vector, not a number
        warnings.warn("rho_spectrum@0 (the whole spectrum, not a number) is skipped; rho_spectrum@k with k != 0 "
                      "gives the KL divergences", stacklevel=2)  # fmt: skip
        opt.evaluation_metrics = [m for m in opt.evaluation_metrics if m != "rho_spectrum@0"]
    metrics.validate(opt.evaluation_metrics)
    metrics.validate(opt.storage_metrics, "--storage_metrics")
    missing = [m for m in opt.storage_metrics if m not in opt.evaluation_metrics]
    if missing:
        opt.evaluation_metrics = list(opt.evaluation_metrics) + missing
    check_metric_views(opt.loss, opt.evaluation_metrics)
    if opt.evaltypes != ["discriminative"]:
        raise UserError(f"--evaltypes {' '.join(opt.evaltypes)} is not supported; use discriminative")


def check_metric_views(loss: str, names: list[str]) -> None:
    """Every metric that reads a view of the loss (class probabilities, vMF samples, ...) needs a loss giving it."""
    cls = criteria.get_class(loss)
    for name in names:
        view = metrics.select(name).requires.needed_view
        if view is not None and not cls.provides(view):
            givers = [n for n in criteria.names() if criteria.get_class(n).provides(view)]
            raise UserError(f"metric '{name}' needs the {metrics.VIEWS[view]}, which loss '{loss}' does not give; "
                            f"drop it from --evaluation_metrics / --storage_metrics or use a loss that gives it: "
                            f"{', '.join(givers)}")  # fmt: skip


def explicit_flags(argv: list[str]) -> set[str]:
    """The option names (``dest``) that ``argv`` sets explicitly (not by a default)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def run_options(argv: list[str], given: argparse.Namespace, command: str) -> argparse.Namespace:
    """``--evaluate <run folder>``: the run's options (its ``config.json``) with the flags given explicitly winning.

    The network's weights come from the checkpoint (so no pretrained weights are needed), and nothing is logged
    online. Flags the suite gained after the run was trained take their defaults.
    """
    run_dir = Path(given.evaluate)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"--evaluate {run_dir}: not a run folder of this suite (no config.json there); pass "
                        "<save_path>/<dataset>/<group>_s<seed>")  # fmt: skip
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"--evaluate {run_dir}: cannot read config.json ({err}); is the run folder intact?") from None
    defaults = vars(build_parser().parse_args([]))
    explicit = explicit_flags(argv)
    values = defaults | {k: v for k, v in config.items() if k in defaults}
    values |= {k: getattr(given, k) for k in explicit}
    values |= {"not_pretrained": True, "log_online": False, "resume": "", "dry_run": False}
    opt = argparse.Namespace(**values)
    metrics.validate(opt.evaluation_metrics)
    check_metric_views(opt.loss, opt.evaluation_metrics)
    opt.command = command
    return opt


def combined_defaults(loss_defaults: dict, data_defaults: dict) -> dict:
    """The loss's defaults, then the dataset's over them; where both name default ``--evaluation_metrics``, the
    dataset's list (its protocol's metrics, e.g. In-Shop's recalls) followed by what the loss adds to the suite's
    default list (e.g. the uncertainty metrics of the EL-nivMF family)."""
    out = loss_defaults | data_defaults
    if "evaluation_metrics" in loss_defaults and "evaluation_metrics" in data_defaults:
        added = [m for m in loss_defaults["evaluation_metrics"] if m not in metrics.DEFAULT_EVALUATION_METRICS]
        out["evaluation_metrics"] = data_defaults["evaluation_metrics"] + [
            m for m in added if m not in data_defaults["evaluation_metrics"]]  # fmt: skip
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``), apply dataset defaults, check flags; with ``--evaluate`` the
    options are the run's (``run_options``). A vMF (Hydra) command line is read by ``hydra_commands``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    pasted = "python main.py " + " ".join(argv)
    if hydra_commands.is_hydra(argv):  # the vMF paper code's Hydra overrides, pasted
        argv = hydra_commands.to_flags(argv)
        pasted += "  # read as: python main.py " + " ".join(argv)
    parser = build_parser()
    without_help = [a for a in argv if a not in ("-h", "--help")]
    explicit = explicit_flags(without_help)
    if "source_path" in explicit and "dataset" not in explicit:
        # A data folder but no --dataset: the Roth suite's default, so its sample runs train CUB200 as there.
        parser.set_defaults(dataset=DATA_FOLDER_DEFAULT_DATASET)
    # Dataset defaults go in before the real parse, so --help shows the values that apply.
    first, _ = parser.parse_known_args(without_help)
    parser.set_defaults(**combined_defaults(criteria.get_class(first.loss).flag_defaults,
                                            datasets.defaults(first.dataset)))  # fmt: skip
    opt = parser.parse_args(argv)
    if opt.evaluate:
        return run_options(argv, opt, pasted)
    if opt.checkpoint != "best" or opt.embed:
        raise UserError("--checkpoint and --embed work on a trained run: add --evaluate <run folder>")
    if opt.batch_mining is not None and not criteria.get_class(opt.loss).accepts:
        # The Roth suite builds the miner and lets a loss that uses none ignore it: its Softmax runs pass one.
        warnings.warn(f"--batch_mining {opt.batch_mining} is ignored: loss '{opt.loss}' uses no batch miner",
                      stacklevel=2)  # fmt: skip
        opt.batch_mining = None
    if opt.batch_mining is None:
        opt.batch_mining = criteria.default_miner(opt.loss)
    check_options(opt)
    opt.command = pasted
    return opt
