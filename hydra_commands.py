"""The vMF paper code's Hydra commands, pasted: ``python main.py name=... mode.learning_rate=... dataset=mnist``.

The seed (google-research/vmf_embeddings, Scott et al. 2021) is run as ``python -m vmf_embeddings.main`` with Hydra
overrides ``key=value``; replace that by ``python main.py`` and the same overrides run here. ``to_flags(argv)``
reads them against the seed configuration's defaults (its ``conf/`` files: the config groups ``mode``, ``dataset``,
``method``, ``arch``, ``sampler`` and the top-level ``name``, ``random_seed``, ``num_workers``), adds what the
seed's ``main.py`` fixes in code (SGD, ReduceLROnPlateau x0.5 after 15 epochs on the validation metric, early
stopping after ``mode.patience`` epochs, no weight decay on biases, the paper's splits and its model selection),
and returns this suite's flags. ``name`` becomes the run group, so the run folder is
``<save_path>/<dataset>/<name>_s<random_seed>``; ``mode=get_embeddings`` evaluates that run folder
(``--evaluate``), as the seed's extraction step reads its training run's folder. Flags of this suite may follow
the overrides (``... dataset=mnist --dry_run``).

An unknown key, a value of the wrong type, or a config-group option the seed does not have is one line.
"""

from __future__ import annotations

import math

from utilities.errors import UserError

# The seed's conf/ defaults (vmf_embeddings/conf: config.yaml and the files of each config group).
TOP_DEFAULTS = {"name": "run_1", "random_seed": 1234, "num_workers": 4, "mode": "train", "dataset": "mnist",
                "method": "unnormalized_sce", "arch": "n_digit_mnist", "sampler": "episodic"}  # fmt: skip
GROUP_DEFAULTS = {
    "mode": {
        "train": {"learning_rate": 0.001, "temp_learning_rate": 0.0001, "momentum": 0.0, "weight_decay": 0.0,
                  "nesterov": False, "epochs": 1000, "patience": 35},  # fmt: skip
        "get_embeddings": {"batch_size": 128},
    },
    "dataset": {name: {"params.dataset_path": "."}
                for name in ("mnist", "fashion_mnist", "cifar10", "cifar100", "cars196", "cub200", "sop")},  # fmt: skip
    "method": {
        "vmf_softmax": {"params.n_samples": 10},
        "unnormalized_sce": {},
        "normalized_sce": {},
        "hyperbolic_sce": {"params.c": 1e-5},
        "arcface": {"params.m": 0.5},
    },
    "arch": {
        "n_digit_mnist": {"params.embedding_dim": 3, "params.n_classes": 10, "params.use_vmf": False,
                          "params.learn_temp": False, "params.init_temp": 0.0, "params.kappa_confidence": 0.4,
                          "params.n_digits": 1},  # fmt: skip
        "resnet50": {"params.n_classes": 10, "params.embedding_dim": 128, "params.set_bn_eval": False,
                     "params.pretrained": False, "params.first_conv_3x3": True, "params.use_vmf": False,
                     "params.learn_temp": False, "params.init_temp": 0.0, "params.kappa_confidence": 0.4},  # fmt: skip
    },
    "sampler": {
        "episodic": {"n_episodes": 250, "n_classes": 10, "n_samples": 13},
        "random": {"batch_size": 128},
    },
}
DATASETS = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "cifar10": "cifar10", "cifar100": "cifar100",
            "cars196": "cars196", "cub200": "cub200", "sop": "online_products"}  # fmt: skip
CLOSED_SET = ("mnist", "fashion_mnist", "cifar10", "cifar100")  # the seed selects on validation accuracy there
LOSSES = {"vmf_softmax": "vmf_softmax", "unnormalized_sce": "unnormalized_softmax", "normalized_sce": "cosine_softmax",
          "hyperbolic_sce": "hyperbolic_softmax", "arcface": "arcface"}  # fmt: skip
# Open-set (retrieval) selection metric of each method: the seed's validation Recall@1 in the method's geometry.
RETRIEVAL_METRIC = {"vmf_softmax": "vmf_recall@1", "unnormalized_sce": "e_recall@1", "normalized_sce": "c_recall@1",
                    "hyperbolic_sce": "poincare_recall@1", "arcface": "c_recall@1"}  # fmt: skip
ARCFACE_WARMUP = {"mnist": 20, "fashion_mnist": 20, "cifar10": 60, "cifar100": 100}  # margin 0 meanwhile (seed)
PLATEAU_FACTOR, PLATEAU_PATIENCE = 0.5, 15  # fixed in the seed's main.py
SAVE_PATH = "Training_Results"


def is_hydra(argv: list[str]) -> bool:
    """Whether ``argv`` starts as a Hydra command line (a ``key=value`` token before any ``--flag``)."""
    return bool(argv) and "=" in argv[0] and not argv[0].startswith("-")


def split(argv: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra overrides, this suite's flags after them, e.g. ``--dry_run`` or ``--save_path``)."""
    first_flag = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    return argv[:first_flag], argv[first_flag:]


def overrides(tokens: list[str]) -> dict[str, str]:
    """``key=value`` tokens -> {key: value}; anything else is one line naming it."""
    out = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key or key.startswith(("+", "~")):
            raise UserError(f"'{token}' in a vMF (Hydra) command: only key=value overrides of the seed's configuration "
                            "are read here, followed by this suite's --flags if any")  # fmt: skip
        out[key] = value
    return out


def typed(key: str, text: str, like):
    """``text`` as the type of the seed default ``like`` (bool, int, float or str); wrong type: one line."""
    if isinstance(like, bool):
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise UserError(f"{key}={text}: expected True or False")
    if isinstance(like, (int, float)):
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"{key}={text}: expected a number") from None
        if not math.isfinite(value):
            raise UserError(f"{key}={text}: expected a finite number")
        if isinstance(like, int):
            if value != int(value):
                raise UserError(f"{key}={text}: expected an integer")
            return int(value)
        return value
    return text


def configuration(given: dict[str, str]) -> dict:
    """The seed's full configuration for these overrides: {'name': ..., 'mode': ..., 'mode.learning_rate': ...}."""
    cfg = dict(TOP_DEFAULTS)
    for key in ("name", "random_seed", "num_workers"):
        if key in given:
            cfg[key] = typed(key, given[key], TOP_DEFAULTS[key])
    for group, options in GROUP_DEFAULTS.items():
        choice = given.get(group, TOP_DEFAULTS[group])
        if choice not in options:
            raise UserError(f"{group}={choice}: the seed's configuration has no such {group}; choose one of: "
                            f"{', '.join(options)}")  # fmt: skip
        cfg[group] = choice
        cfg |= {f"{group}.{k}": v for k, v in options[choice].items()}
    for key, text in given.items():
        if key in TOP_DEFAULTS:
            continue
        if key not in cfg:
            raise UserError(f"unknown key '{key}' in the vMF (Hydra) command (with {key.split('.')[0]}="
                            f"{cfg.get(key.split('.')[0], '?')}); the seed's configuration has: "
                            f"{', '.join(k for k in cfg if k.startswith(key.split('.')[0] + '.')) or 'no such group'}")  # fmt: skip
        cfg[key] = typed(key, text, cfg[key])
    return cfg


def flags_of(cfg: dict) -> list[str]:
    """This suite's flags for a full seed configuration."""
    dataset, method, arch = cfg["dataset"], cfg["method"], cfg["arch"]
    params = {k.split(".", 2)[2]: v for k, v in cfg.items() if k.startswith("arch.params.")}
    if params.get("n_digits", 1) != 1:
        raise UserError(f"arch.params.n_digits={params['n_digits']}: only single-digit MNIST (n_digits=1) is offered")
    flags = ["--dataset", DATASETS[dataset], "--source_path", str(cfg["dataset.params.dataset_path"]),
             "--group", str(cfg["name"]), "--seed", str(cfg["random_seed"]), "--kernels", str(cfg["num_workers"]),
             "--embed_dim", str(params["embedding_dim"]), "--init_temp", str(params["init_temp"]),
             "--kappa_confidence", str(params["kappa_confidence"]),
             "--learn_temp" if params["learn_temp"] else "--no_learn_temp"]  # fmt: skip
    if arch == "n_digit_mnist":
        flags += ["--arch", "mnist_cnn", "--not_pretrained"]
    else:
        flags += ["--arch", "resnet50"] + (["--set_bn_eval"] if params["set_bn_eval"] else [])
        flags += (["--first_conv_3x3"] if params["first_conv_3x3"] else []) + ([] if params["pretrained"] else
                                                                              ["--not_pretrained"])  # fmt: skip
    loss = LOSSES[method]
    flags += ["--loss", loss]
    if method == "vmf_softmax":
        flags += ["--loss_vmf_softmax_n_samples", str(cfg["method.params.n_samples"])]
    if method == "hyperbolic_sce":
        flags += ["--loss_hyperbolic_softmax_c", str(cfg["method.params.c"])]
    if cfg["sampler"] == "episodic":
        flags += ["--data_sampler", "episodic", "--n_episodes", str(cfg["sampler.n_episodes"]),
                  "--episode_classes", str(cfg["sampler.n_classes"]), "--episode_samples", str(cfg["sampler.n_samples"])]  # fmt: skip
    else:
        flags += ["--data_sampler", "random", "--bs", str(cfg["sampler.batch_size"])]
    flags += ["--split_protocol", "vmf", "--storage_metrics",
              "accuracy" if dataset in CLOSED_SET else RETRIEVAL_METRIC[method]]  # fmt: skip
    if cfg["mode"] == "get_embeddings":
        run = f"{SAVE_PATH}/{DATASETS[dataset]}/{cfg['name']}_s{cfg['random_seed']}"  # --save_path's default
        return ["--evaluate", run, "--bs", str(cfg["mode.batch_size"])] + flags
    lr, momentum = cfg["mode.learning_rate"], cfg["mode.momentum"]
    flags += ["--optim", "sgd", "--lr", str(lr), "--momentum", str(momentum), "--decay", str(cfg["mode.weight_decay"]),
              "--decay_exclude_1d", "--temp_lr", str(cfg["mode.temp_learning_rate"]), "--n_epochs", str(cfg["mode.epochs"]),
              "--scheduler", "plateau", "--plateau_factor", str(PLATEAU_FACTOR), "--plateau_patience",
              str(PLATEAU_PATIENCE), "--early_stop_patience", str(cfg["mode.patience"])]  # fmt: skip
    if cfg["mode.nesterov"] and 0 < momentum < 1:  # the seed's condition for Nesterov momentum
        flags.append("--nesterov")
    if method == "arcface":  # the seed's ArcFace: learned scale exp(-temp) at the temperature lr, class weights at lr
        flags += ["--loss_arcface_angular_margin", str(cfg["method.params.m"]), "--loss_arcface_lr", str(lr),
                  "--loss_arcface_feature_scale", str(math.exp(-params["init_temp"])),
                  "--loss_arcface_warmup_epochs", str(ARCFACE_WARMUP.get(dataset, 0))]  # fmt: skip
        if params["learn_temp"]:
            flags.append("--loss_arcface_learn_scale")
    return flags


def to_flags(argv: list[str]) -> list[str]:
    """This suite's flags for a pasted vMF (Hydra) command line (see the module docstring); flags of this suite
    after the overrides (``--dry_run``, ``--save_path``, ...) come last, so they win."""
    hydra, flags = split(argv)
    return flags_of(configuration(overrides(hydra))) + flags
