"""The vMF paper code's Hydra commands (tests/data/vmf_seed_commands.txt: its README and run.sh), pasted with
``python -m vmf_embeddings.main`` replaced by ``python main.py``: every key reads against the seed's conf/ defaults,
the seven dataset commands build (--dry_run) on generated data folders, run.sh's five baselines train one epoch
and their ``mode=get_embeddings`` lines evaluate the trained runs; bad keys and values are one line."""

from __future__ import annotations

import json
import pathlib
import re
import shlex

import pytest

import hydra_commands
import main
import parameters
from datasets import synthetic
from utilities.errors import UserError

DATA = pathlib.Path(__file__).resolve().parent / "data" / "vmf_seed_commands.txt"


def commands(source: str) -> list[list[str]]:
    out = []
    for line in DATA.read_text().splitlines():
        if line.startswith(f"{source}: "):
            command = line.split(": ", 1)[1].replace("python -m vmf_embeddings.main", "python main.py")
            out.append(shlex.split(command)[2:])
    return out


def key(argv: list[str], name: str):
    return next((a.split("=", 1)[1] for a in argv if a.startswith(name + "=")), None)


TRAIN = [c for c in commands("README.md") if key(c, "mode") is None]
EXTRACT = [c for c in commands("README.md") if key(c, "mode") == "get_embeddings"]
RUN_SH = commands("run.sh")
DATASET_FLAG = {"sop": "online_products"}


def test_the_commands_are_the_seeds():
    assert [key(c, "dataset") for c in TRAIN] == ["mnist", "fashion_mnist", "cifar10", "cifar100", "cars196",
                                                  "cub200", "sop"]  # fmt: skip
    assert len(EXTRACT) == 7 and len(RUN_SH) == 10


@pytest.mark.parametrize("argv", TRAIN, ids=lambda a: key(a, "dataset"))
def test_seed_train_command_reads_its_values_and_the_seed_defaults(argv):
    """The command's own values where it sets them; the seed's conf/ values where it does not."""
    opt = parameters.parse_args(argv)
    dataset = key(argv, "dataset")
    assert opt.dataset == DATASET_FLAG.get(dataset, dataset) and opt.group == key(argv, "name")
    assert opt.lr == float(key(argv, "mode.learning_rate")) and opt.momentum == float(key(argv, "mode.momentum"))
    assert opt.nesterov == (key(argv, "mode.nesterov") == "True")
    assert opt.temp_lr == float(key(argv, "mode.temp_learning_rate"))
    assert opt.decay == float(key(argv, "mode.weight_decay") or 0.0)  # conf/mode/train.yaml: weight_decay 0
    assert opt.embed_dim == int(key(argv, "arch.params.embedding_dim"))
    assert opt.n_episodes == int(key(argv, "sampler.n_episodes")) and opt.data_sampler == "episodic"
    assert (opt.episode_classes, opt.episode_samples) == (int(key(argv, "sampler.n_classes")),
                                                          int(key(argv, "sampler.n_samples")))  # fmt: skip
    assert opt.kappa_confidence == float(key(argv, "arch.params.kappa_confidence") or 0.4)
    assert opt.init_temp == float(key(argv, "arch.params.init_temp") or 0.0)
    assert opt.learn_temp and opt.loss == "vmf_softmax" and opt.loss_vmf_softmax_n_samples == 10
    # conf/config.yaml and conf/mode/train.yaml, and what the seed's main.py fixes
    assert (opt.seed, opt.kernels, opt.n_epochs, opt.early_stop_patience) == (1234, 4, 1000, 35)
    assert (opt.optim, opt.scheduler, opt.plateau_factor, opt.plateau_patience) == ("sgd", "plateau", 0.5, 15)
    assert opt.split_protocol == "vmf" and opt.decay_exclude_1d
    closed = dataset in ("mnist", "fashion_mnist", "cifar10", "cifar100")
    assert opt.storage_metrics == ["accuracy" if closed else "vmf_recall@1"]
    if key(argv, "arch") == "resnet50":  # conf/arch/resnet50.yaml: pretrained False, first_conv_3x3 True
        assert opt.arch == "resnet50" and opt.not_pretrained == (key(argv, "arch.params.pretrained") != "True")
        assert opt.first_conv_3x3 == (key(argv, "arch.params.first_conv_3x3") != "False")
        assert opt.set_bn_eval == (key(argv, "arch.params.set_bn_eval") == "True")
    else:
        assert opt.arch == "mnist_cnn" and opt.not_pretrained
    assert opt.command.startswith("python main.py name=") and "# read as: python main.py --dataset" in opt.command


@pytest.fixture(scope="module")
def seed_data(tmp_path_factory) -> pathlib.Path:
    """The seed's default dataset_path is '.': a working directory holding every dataset's tiny copy."""
    root = tmp_path_factory.mktemp("vmf_cwd")
    # enough images for one episode of each command after the 85/15 split (10 x 13, 10 x 26, 32 x 8)
    for name in ("mnist", "fashion_mnist"):
        synthetic.make_mnist(str(root), name=name, per_class=16)
    synthetic.make_cifar(str(root), name="cifar10", per_class=31)
    synthetic.make_cifar(str(root), name="cifar100", per_class=4)
    synthetic.make_cub200(str(root), per_class=2, size=16)
    synthetic.make_cars196(str(root), per_class=2, size=16)
    synthetic.make_online_products(str(root), n_classes=60, per_class=2, size=16)
    return root


@pytest.fixture
def in_seed_data(seed_data, monkeypatch):
    import torchvision.datasets.cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)  # stand-in files
    monkeypatch.chdir(seed_data)
    return seed_data


@pytest.mark.parametrize("argv", TRAIN, ids=lambda a: key(a, "dataset"))
def test_seed_train_command_builds(argv, in_seed_data, stand_in_weights, capsys):
    assert main.main([*argv, "--dry_run"]) == 0, capsys.readouterr().err
    dataset = key(argv, "dataset")
    assert f"dry run: dataset {DATASET_FLAG.get(dataset, dataset)}" in capsys.readouterr().out


def test_run_sh_baselines_train_then_extract(in_seed_data, no_plots, capsys):
    """run.sh: five one-epoch MNIST runs (one per method), each followed by its ``mode=get_embeddings`` line, which
    evaluates the run folder named by name and random_seed and writes its embeddings."""
    for train, extract in zip(RUN_SH[0::2], RUN_SH[1::2]):
        assert key(train, "name") == key(extract, "name") and key(extract, "mode") == "get_embeddings"
        assert main.main([*train, "sampler.n_episodes=3", "num_workers=0"]) == 0, capsys.readouterr().err
        run = in_seed_data / "Training_Results" / "mnist" / f"{key(train, 'name')}_s1234"
        config = json.loads((run / "config.json").read_text())
        method = key(train, "method")
        assert config["loss"] == hydra_commands.LOSSES[method] and config["n_epochs"] == 1
        assert main.main([*extract, "num_workers=0"]) == 0, capsys.readouterr().err
        (out,) = (run / "evaluation").iterdir()
        results = json.loads((out / "metrics.json").read_text())
        assert "accuracy" in results["testing"] and (out / "embeddings_testing.npz").is_file()
        if method == "vmf_softmax":
            assert "vmf_recall@1" in results["testing"]


@pytest.mark.parametrize("argv", EXTRACT, ids=lambda a: key(a, "name"))
def test_seed_extraction_commands_name_their_training_run(argv):
    """``mode=get_embeddings`` evaluates <save_path>/<dataset>/<name>_s<random_seed> (the seed reads the run
    folder of the same name, dataset, method and dimension). The seed README's CUB200 line says dataset=cars196,
    name=cars196_vmf_softmax: pasted, it evaluates the CARS196 run, as the seed would."""
    flags = hydra_commands.to_flags(argv)
    dataset = key(argv, "dataset")
    run = flags[flags.index("--evaluate") + 1]
    assert run == f"Training_Results/{DATASET_FLAG.get(dataset, dataset)}/{key(argv, 'name')}_s1234"


def test_every_seed_key_maps_to_a_flag():
    """Each key of each conf/ group option, set to its own default, reads; so does every key the commands use."""
    used = {a.split("=")[0] for c in commands("README.md") + RUN_SH for a in c}
    for group, options in hydra_commands.GROUP_DEFAULTS.items():
        for option, keys in options.items():
            argv = [f"{group}={option}"] + [f"{group}.{k}={v}" for k, v in keys.items()]
            if group == "mode" and option == "get_embeddings":
                argv.append("name=some_run")
            flags = hydra_commands.to_flags(argv)
            assert "--dataset" in flags
            used -= {a.split("=")[0] for a in argv}
    used -= set(hydra_commands.TOP_DEFAULTS)
    assert not used, f"keys of the seed's commands without a reading: {used}"


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["mode.learnin_rate=0.1"], "unknown key 'mode.learnin_rate'"),
        (["arch=n_digit_mnist", "arch.params.set_bn_eval=True"], "unknown key 'arch.params.set_bn_eval'"),
        (["mode.learning_rate=fast"], "mode.learning_rate=fast: expected a number"),
        (["sampler.n_episodes=2.5"], "sampler.n_episodes=2.5: expected an integer"),
        (["mode.nesterov=yes"], "mode.nesterov=yes: expected True or False"),
        (["method=triplet"], "method=triplet: the seed's configuration has no such method"),
        (["dataset=mnist", "--n_epochs", "3", "mode.epochs=2"], "unrecognized arguments: mode.epochs=2"),
        (["dataset=mnist", "oops"], "'oops' in a vMF (Hydra) command"),
        (["arch.params.n_digits=2"], "only single-digit MNIST"),
    ],
)
def test_bad_hydra_input_is_one_line(argv, fragment, capsys):
    with pytest.raises(UserError, match=re.escape(fragment)):
        parameters.parse_args(argv)
    assert main.main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1
