"""example_runs.sh, the whole benchmark in one file (Roth et al. 2020, the vMF paper, EL-nivMF), runnable in parts.

The commands are what ``bash example_runs.sh --list [words]`` prints (no parsing of the bash here). They are counted
per paper and dataset and read by the real flag parser; the Roth lines reproduce the Roth suite's sample-run script
(tests/data/roth_sample_runs.sh) group by group, the vMF softmax lines are the seed README's commands
(tests/data/vmf_seed_commands.txt) and the baselines derive from them, the EL-nivMF recipes pin the paper's numbers.
The selection words, --list, --dry_run, the order of execution, stopping at a failure and bad input are checked with
a stand-in ``python`` that only records its calls; two small selections dry-run for real through bash on generated
data folders, and every line (slow) in this process. The EL-nivMF seed README command runs on digits.
"""

from __future__ import annotations

import collections
import functools
import os
import pathlib
import shlex
import subprocess
import sys
import warnings

import pytest

import hydra_commands
import main
import parameters
from datasets import synthetic

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "example_runs.sh"
ROTH_SCRIPT = ROOT / "tests" / "data" / "roth_sample_runs.sh"
VMF_SEED = ROOT / "tests" / "data" / "vmf_seed_commands.txt"

DATA = "/data"
# The Roth script's own W&B project and GPU, so that its lines and these compare as they are.
ENV = {"parent_folder": DATA, "project": "RevisitDML", "gpu": "0"}
PAPERS = ("roth", "vmf", "elnivmf")
DATASETS = ("cub200", "cars196", "online_products", "in_shop", "mnist", "fashion_mnist", "cifar10", "cifar100")
VMF_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "cars196", "cub200", "online_products")
VMF_METHODS = ("vmf_softmax", "unnormalized_sce", "normalized_sce", "hyperbolic_sce", "arcface")
COUNTS = {  # the papers' own lines; then In-Shop, in none of the papers (roth 3 groups x 5 seeds, vmf 1, elnivmf 2)
    "roth": {"cub200": 115, "cars196": 115, "online_products": 105, "in_shop": 15},  # 23 / 23 / 21 groups x 5 seeds
    "vmf": {d: 5 for d in VMF_DATASETS} | {"in_shop": 1},  # 5 methods each
    "elnivmf": {"cub200": 2, "cars196": 8, "online_products": 1, "in_shop": 2},  # 4 recipes, SOP, 6 ablations
}


def script(*words: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """``bash example_runs.sh <words>`` from the checkout, with ENV (then ``env``) in its environment."""
    full = {k: v for k, v in os.environ.items() if k not in ENV} | ENV | (env or {})
    return subprocess.run(["bash", str(SCRIPT), *words], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def argvs(stdout: str) -> tuple[tuple[str, ...], ...]:
    """``python main.py ...`` lines -> their arguments."""
    lines = stdout.splitlines()
    assert all(line.startswith("python main.py ") for line in lines), lines[:3]
    return tuple(tuple(shlex.split(line)[2:]) for line in lines)


@functools.cache
def listed(*words: str) -> tuple[tuple[str, ...], ...]:
    proc = script("--list", *words)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return argvs(proc.stdout)


@functools.cache
def parsed(argv: tuple[str, ...]):
    with warnings.catch_warnings():  # the Softmax lines' unused miner is ignored with a warning
        warnings.simplefilter("ignore")
        return parameters.parse_args(list(argv))


def dataset_of(argv) -> str:
    return parsed(tuple(argv)).dataset


def own(paper: str, *datasets: str) -> tuple[tuple[str, ...], ...]:
    """The paper's own lines (its datasets, In-Shop left out)."""
    return tuple(a for a in listed(paper, *datasets) if dataset_of(a) != "in_shop")


def hydra_key(argv, name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in argv if a.startswith(name + "=")), None)


def flag(argv, name: str) -> str:
    return argv[argv.index(name) + 1]


@functools.cache
def every_line() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(paper, argv) of every line, in the file's order."""
    paper_of = {a: paper for paper in PAPERS for a in listed(paper)}
    return tuple((paper_of[a], a) for a in listed())


# ---------------------------------------------------------------------------------------------------------------
# What the file holds


def test_counts_per_paper_and_dataset():
    # the papers' own lines in this order, then the In-Shop section; nothing else
    assert listed() == tuple(a for paper in PAPERS for a in own(paper)) + listed("in_shop")
    assert collections.Counter(p for p, _ in every_line()) == {p: sum(c.values()) for p, c in COUNTS.items()}
    assert len(listed()) == 335 + 35 + 11 + 18 and len(listed("in_shop")) == 18
    for paper, counts in COUNTS.items():
        assert collections.Counter(dataset_of(a) for a in listed(paper)) == counts, paper
    assert len({flag(a, "--group") for a in own("roth")}) == 67
    assert collections.Counter(flag(a, "--seed") for a in own("roth")) == {s: 67 for s in "01234"}


def test_every_line_parses_and_has_its_own_run_folder():
    folders = set()
    for _, argv in every_line():
        opt = parsed(argv)
        assert opt.source_path == DATA, argv
        if not hydra_commands.is_hydra(list(argv)):  # the seed's Hydra commands: no W&B project, the default GPU
            assert opt.project == ENV["project"] and opt.gpu == [0], argv
        folders.add((opt.dataset, opt.group, opt.seed))
    assert len(folders) == len(every_line())


# ---------------------------------------------------------------------------------------------------------------
# Roth et al. 2020: the sample-run script's configurations

STRAY = "--group CUBreg_SNR_Distance _3"  # the original's typo (five lines): the group is CUBreg_SNR_Distance


def roth_original() -> dict[tuple[str, str], tuple[str, ...]]:
    """(group, seed) -> arguments of the original line, its data path DATA, the typo fixed."""
    lines = [line for line in ROTH_SCRIPT.read_text().splitlines() if line.startswith("python main.py")]
    assert len(lines) == 336 and sum(STRAY in line for line in lines) == 5
    out = {}
    for line in lines[1:]:  # the first line is an unnamed test run of the author's, not part of the benchmark
        argv = tuple(shlex.split(line.replace("$datapath", DATA).replace(STRAY, "--group CUBreg_SNR_Distance"))[2:])
        out[(flag(argv, "--group"), flag(argv, "--seed"))] = argv
    return out


def flags_of(argv) -> dict[str, tuple[str, ...]]:
    """``--flag values ...`` -> {flag: values}."""
    out, name = {}, None
    for a in argv:
        if a.startswith("--"):
            name = a
            out[name] = ()
        else:
            out[name] += (a,)
    return out


def test_roth_lines_reproduce_the_sample_run_script():
    """Every (group, seed) of the original is here once, with the same flags and values; the only differences:
    --source_path for --source, and --dataset cub200 written out where the original names none (its default)."""
    original = roth_original()
    ours = {(flag(a, "--group"), flag(a, "--seed")): a for a in own("roth")}
    assert len(ours) == len(own("roth")) == len(original) == 335 and sorted(ours) == sorted(original)
    for key, argv in original.items():
        want = flags_of(argv)
        want["--source_path"] = want.pop("--source")
        want.setdefault("--dataset", ("cub200",))
        assert flags_of(ours[key]) == want, key
        got = vars(parsed(ours[key])) | {"command": None}
        assert got == vars(parsed(argv)) | {"command": None}, key  # read by the real parser: the same options


def test_roth_groups_per_dataset():
    prefixes = {"cub200": ("CUB_", "CUBreg_"), "cars196": ("CARS_", "CARreg_"), "online_products": ("SOP_", "SOPreg_")}
    for dataset, n_groups in (("cub200", 23), ("cars196", 23), ("online_products", 21)):
        groups = {flag(a, "--group") for a in listed("roth", dataset)}
        assert len(groups) == n_groups and all(g.startswith(prefixes[dataset]) for g in groups)
    assert "CUBreg_SNR_Distance" in {flag(a, "--group") for a in listed("roth", "cub200")}
    assert all("_3" not in argv for argv in listed("roth"))
    assert {flag(a, "--group") for a in listed("roth", "in_shop")} == {
        "INSHOP_Margin_b12_Distance", "INSHOP_Triplet_Semihard", "INSHOP_Npair"}  # fmt: skip  # no stray "_3" argument


# ---------------------------------------------------------------------------------------------------------------
# vMF softmax (Scott et al. 2021): the seed's commands and the baselines


def seed_train_commands() -> list[tuple[str, ...]]:
    """The seed README's seven training commands, ``python -m vmf_embeddings.main`` dropped."""
    out = []
    for line in VMF_SEED.read_text().splitlines():
        if line.startswith("README.md: ") and "mode=get_embeddings" not in line:
            out.append(tuple(shlex.split(line.split(": ", 1)[1])[3:]))
    return out


def test_vmf_softmax_lines_are_the_seed_commands():
    """The seed README's command of each dataset exactly (order included), plus the data folder."""
    ours = [a for a in own("vmf") if hydra_key(a, "method") == "vmf_softmax"]
    assert ours == [(*seed, f"dataset.params.dataset_path={DATA}") for seed in seed_train_commands()]


def baseline_of(seed: tuple[str, ...], method: str) -> tuple[str, ...]:
    learn_temp = "True" if method in ("vmf_softmax", "normalized_sce", "arcface") else "False"
    use_vmf = "True" if method == "vmf_softmax" else "False"
    new = {"name": f"{hydra_key(seed, 'dataset')}_{method}", "method": method, "arch.params.use_vmf": use_vmf,
           "arch.params.learn_temp": learn_temp}  # fmt: skip
    return tuple(f"{k}={new[k]}" if (k := a.split("=", 1)[0]) in new else a for a in seed)


@pytest.mark.parametrize("dataset", VMF_DATASETS)
def test_vmf_baselines_are_the_datasets_command_with_another_method(dataset):
    """Per dataset: the five methods in order, each the vmf_softmax command with method, use_vmf, learn_temp and
    name changed (learning rates: the vmf row's, not the paper's tuned ones; the file says so)."""
    (seed,) = [s for s in seed_train_commands() if hydra_commands.DATASETS[hydra_key(s, "dataset")] == dataset]
    ours = listed("vmf", dataset)
    assert ours == tuple((*baseline_of(seed, m), f"dataset.params.dataset_path={DATA}") for m in VMF_METHODS)
    for method, argv in zip(VMF_METHODS, ours):
        opt = parsed(argv)
        assert opt.loss == hydra_commands.LOSSES[method] and opt.dataset == dataset
        assert opt.group == f"{hydra_key(seed, 'dataset')}_{method}" and opt.seed == 1234
        assert opt.lr == float(hydra_key(seed, "mode.learning_rate")) and opt.source_path == DATA
    text = SCRIPT.read_text()
    assert "NOT the paper's tuned ones" in text and "appendix" in text


# ---------------------------------------------------------------------------------------------------------------
# EL-nivMF (Kirchhof et al. 2022): the recipes


def commands() -> list[list[str]]:
    """The EL-nivMF paper's lines."""
    return [list(a) for a in own("elnivmf")]


def to_digits(argv: list[str], source: str) -> list[str]:
    argv = list(argv)
    for name, value in [("--dataset", "digits"), ("--source_path", source)]:
        if name in argv:
            argv[argv.index(name) + 1] = value
        else:
            argv += [name, value]
    return argv


def test_example_runs_has_all_recipes():
    cmds = commands()
    joined = [" ".join(c) for c in cmds]
    assert len(cmds) == 11
    for dataset in ["cub200", "cars196", "online_products"]:
        assert any(f"--dataset {dataset}" in c for c in joined)
    for loss in ["proxyvmf_panc", "proxyvmf", "proxyvmf_kl", "proxynca_nivmf", "proxynca_l2", "proxynca_cos"]:
        assert any(f"--loss {loss} " in c for c in joined)


# The paper's recipes (docs/protocols.md; = the original example_runs.sh): group -> (dataset, embed_dim, n_epochs, tau, gamma, proxylrmulti,
# conclrmulti, concentration, init_norm_multiplier, guidance_w)
RECIPES = {
    "Cub200_Prob_RN50_dim128": ("cub200", 128, 250, [25, 50], 0.3, 5000, 20000, 6, 30, 3),
    "Cub200_Prob_RN50_dim512": ("cub200", 512, 250, [31], 0.1, 5000, 20000, 18, 50, 5),
    "Cars196_Prob_RN50_dim128": ("cars196", 128, 300, [60, 80], 0.1, 7500, 7500, 9, 12, 0.3),
    "Cars196_Prob_RN50_dim512": ("cars196", 512, 300, [105, 170], 0.2, 5000, 20000, 22, 10, 0.1),
}
RECIPE_FIELDS = ("dataset", "embed_dim", "n_epochs", "tau", "gamma", "loss_proxyvmf_proxylrmulti",
                 "loss_proxyvmf_conclrmulti", "loss_proxyvmf_concentration", "loss_proxyvmf_init_norm_multiplier",
                 "loss_proxyvmf_guidance_w")  # fmt: skip
# common to the four: ResNet50 with frozen BN (no output normalisation), bs 64, 2 per class, Adam lr 1e-5, warm
# start, S = 5, T0 = 0.003 with lr x200, selection on c_recall@1
COMMON = {"loss": "proxyvmf_panc", "arch": "resnet50_frozen", "bs": 64, "samples_per_class": 2, "optim": "adam",
          "lr": 1e-5, "loss_proxyvmf_warmstart": True, "loss_proxyvmf_n_samples": 5, "loss_proxyvmf_temp": 0.003,
          "loss_proxyvmf_templrmulti": 200, "storage_metrics": ["c_recall@1"], "no_train_metrics": True,
          "log_online": True, "seed": 0}  # fmt: skip


def recipe_commands() -> dict[str, list[str]]:
    return {a[a.index("--group") + 1]: a for a in commands() if a[a.index("--group") + 1] in RECIPES}


def test_recipe_table_is_complete():
    assert sorted(recipe_commands()) == sorted(RECIPES)


@pytest.mark.parametrize("group", sorted(RECIPES))
def test_recipe_pins_the_papers_hyperparameters(group, make_opt):
    """Each recipe line of example_runs.sh, parsed by the real flag parser, has the paper's numbers
    (docs/protocols.md, EL-nivMF recipes)."""
    opt = make_opt(*recipe_commands()[group])
    got = {f: getattr(opt, f) for f in (*RECIPE_FIELDS, *COMMON)}
    want = dict(zip(RECIPE_FIELDS, RECIPES[group])) | COMMON
    assert got == want
    assert "_normalize" not in opt.arch and opt.group == group


# The section 4.3 ablations: group -> (loss, rho); the CARS196 R128 recipe without the guidance and W&B.
ABLATIONS = {"Cars196_ELvMF_dim128": ("proxyvmf", 1.0), "Cars196_BvMF_dim128": ("proxyvmf", 0.5),
             "Cars196_KL_dim128": ("proxyvmf_kl", None), "Cars196_nivMF_dim128": ("proxynca_nivmf", None),
             "Cars196_L2_dim128": ("proxynca_l2", None), "Cars196_cos_dim128": ("proxynca_cos", None)}  # fmt: skip


def test_ablations_and_sop_recipe_keep_their_settings(make_opt):
    by_group = {a[a.index("--group") + 1]: a for a in commands()}
    assert set(by_group) == set(RECIPES) | set(ABLATIONS) | {"SOP_Prob_RN50_dim512"}
    cars = make_opt(*by_group["Cars196_Prob_RN50_dim128"])
    # the ablation lines leave the guidance, W&B and the number of samples (the loss's own default) out
    shared = [f for f in (*RECIPE_FIELDS, *COMMON)
              if f not in ("loss", "loss_proxyvmf_guidance_w", "log_online", "loss_proxyvmf_n_samples")]  # fmt: skip
    for group, (loss, rho) in ABLATIONS.items():
        opt = make_opt(*by_group[group])
        assert opt.loss == loss and not opt.log_online and "--loss_proxyvmf_guidance_w" not in by_group[group]
        assert {f: getattr(opt, f) for f in shared} == {f: getattr(cars, f) for f in shared}, group
        if rho is not None:
            assert opt.loss_proxyvmf_rho == rho
    sop, cub512 = make_opt(*by_group["SOP_Prob_RN50_dim512"]), make_opt(*by_group["Cub200_Prob_RN50_dim512"])
    assert (sop.dataset, sop.n_epochs, sop.tau, sop.gamma, sop.loss_proxyvmf_subsample_p) == (
        "online_products", 100, [50, 80], 0.1, 0.1)  # fmt: skip
    same = [f for f in (*RECIPE_FIELDS, *COMMON) if f not in ("dataset", "n_epochs", "tau", "gamma")]
    assert {f: getattr(sop, f) for f in same} == {f: getattr(cub512, f) for f in same}


@pytest.mark.parametrize("argv", commands(), ids=lambda a: a[a.index("--group") + 1])
def test_example_command_dry_runs_on_digits(argv, tmp_path):
    argv = to_digits(argv, str(tmp_path)) + ["--dry_run", "--not_pretrained", "--save_path", str(tmp_path)]
    assert main.main(argv) == 0


# ---------------------------------------------------------------------------------------------------------------
# Running in parts: selection, --list, --dry_run, failures, bad input


def expected(papers=(), datasets=()) -> tuple[tuple[str, ...], ...]:
    return tuple(
        a for p, a in every_line() if (not papers or p in papers) and (not datasets or dataset_of(a) in datasets)
    )


@pytest.mark.parametrize("paper", [None, *PAPERS])
def test_selection_by_paper_and_dataset(paper):
    """A line is selected when its paper is among the paper words (or none is given) and its dataset among the
    dataset words (or none is given); a selection that matches no line is an error (see below)."""
    papers = (paper,) if paper else ()
    for dataset in (None, *DATASETS):
        datasets = (dataset,) if dataset else ()
        want = expected(papers, datasets)
        if want:
            assert listed(*papers, *datasets) == want, (paper, dataset)
        else:
            assert script("--list", *papers, *datasets).returncode == 2, (paper, dataset)


def test_selection_of_several_words():
    assert len(listed("roth", "cub200")) == 115
    assert all(flag(a, "--group").startswith(("CUB_", "CUBreg_")) for a in listed("roth", "cub200"))
    assert listed("vmf", "mnist", "cifar10") == expected(("vmf",), ("mnist", "cifar10"))
    assert listed("cars196", "elnivmf", "sop", "roth") == expected(("roth", "elnivmf"), ("cars196", "online_products"))
    assert listed("sop") == listed("online_products") == expected((), ("online_products",))
    assert listed("roth", "sop") == listed("roth", "online_products")
    assert listed("cub200", "roth") == listed("roth", "cub200") == listed("roth", "cub200", "roth", "cub200")


def test_variables_come_from_the_environment_with_defaults():
    unset = {k: v for k, v in os.environ.items() if k not in ENV}
    proc = subprocess.run(["bash", str(SCRIPT), "--list", "elnivmf", "cub200", "vmf"], cwd=ROOT, env=unset,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    for argv in argvs(proc.stdout):
        opt = parsed(argv)
        assert opt.source_path == "../../Datasets"
        if hydra_key(argv, "name") is None:
            assert (opt.project, opt.gpu) == ("ProbDML", [0])
    proc = script("--list", "roth", "sop", env={"parent_folder": "/my data", "project": "P2", "gpu": "1 2"})
    for argv in argvs(proc.stdout):
        opt = parsed(argv)
        assert (opt.source_path, opt.project, opt.gpu) == ("/my data", "P2", [1, 2])


@pytest.fixture
def recording_python(tmp_path):
    """A stand-in ``python`` first on PATH: appends its arguments (quoted, one call a line) to ``calls.txt`` and
    exits 0, or 3 from call number $FAIL_AT on. ``run(*words, fail_at=None)`` -> (process, calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    shim = bin_dir / "python"
    shim.write_text('#!/usr/bin/env bash\nprintf "%q " python "$@" >> "$CALLS"\necho >> "$CALLS"\n'
                    'if [[ -n ${FAIL_AT-} && $(wc -l < "$CALLS") -ge $FAIL_AT ]]; then exit 3; fi\n')  # fmt: skip
    shim.chmod(0o755)

    def run(*words: str, fail_at: int | None = None):
        log.unlink(missing_ok=True)
        env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(log)}
        proc = script(*words, env=env | ({"FAIL_AT": str(fail_at)} if fail_at else {}))
        calls = argvs(log.read_text()) if log.exists() else ()
        return proc, calls

    return run


def test_the_script_runs_what_it_lists_in_order(recording_python):
    proc, calls = recording_python("elnivmf", "cars196")
    assert proc.returncode == 0, proc.stderr
    assert calls == listed("elnivmf", "cars196") and len(calls) == 8
    assert proc.stdout.count("example_runs.sh [") == 8 and "example_runs.sh [8/8]: python main.py" in proc.stdout
    proc, calls = recording_python("--dry_run", "vmf", "cifar100")
    assert proc.returncode == 0 and calls == tuple((*a, "--dry_run") for a in listed("vmf", "cifar100"))
    list_dry = script("--list", "--dry_run", "vmf", "cifar100")
    assert argvs(list_dry.stdout) == calls  # --list prints exactly what runs


def test_a_failing_line_stops_the_script(recording_python):
    proc, calls = recording_python("roth", "online_products", fail_at=2)
    assert proc.returncode == 3 and calls == listed("roth", "online_products")[:2]
    assert "line 2/105" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "words, fragment",
    [
        (["nope"], "unknown word 'nope'"),
        (["roth", "CUB200"], "unknown word 'CUB200'"),
        (["--dryrun", "vmf"], "unknown word '--dryrun'"),
        (["--list", "sop", "mnist2"], "unknown word 'mnist2'"),
        (["roth", "cub 200"], "unknown word 'cub 200'"),
        (["elnivmf", "mnist"], "no line is for paper(s) elnivmf and dataset(s) mnist"),
        (["--dry_run", "roth", "cifar10", "cifar100"], "no line is for paper(s) roth and dataset(s) cifar10 cifar100"),
    ],
)
def test_bad_input_is_one_line_and_runs_nothing(words, fragment, recording_python):
    proc, calls = recording_python(*words)
    assert proc.returncode == 2 and proc.stdout == "" and calls == ()
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("example_runs.sh: error: ") and fragment in line
    assert ("valid: --list, --dry_run, papers roth, vmf, elnivmf" in line) or (
        "lines exist for roth: cub200 cars196 online_products in_shop; vmf: " in line)  # fmt: skip


def test_the_file_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


# ---------------------------------------------------------------------------------------------------------------
# In-Shop: in none of the three papers; the published In-Shop commands where they exist, the papers' settings else

# The Proxy Anchor code's README command for In-Shop (tjddus9597/Proxy-Anchor-CVPR2020) and the defaults of its
# train.py that the command leaves unset; then what each is in this suite's flags.
PROXY_ANCHOR_README = (
    "--gpu-id 0 --loss Proxy_Anchor --model bn_inception --embedding-size 512 --batch-size 180 "
    "--lr 6e-4 --dataset Inshop --warm 1 --bn-freeze 0 --lr-decay-step 20 --lr-decay-gamma 0.25"
)
PROXY_ANCHOR_DEFAULTS = {"--epochs": "60", "--optimizer": "adamw", "--weight-decay": "1e-4", "--alpha": "32",
                         "--mrg": "0.1"}  # fmt: skip


def test_in_shop_proxy_anchor_line_is_the_proxy_anchor_command():
    theirs = flags_of(shlex.split(PROXY_ANCHOR_README)) | {k: (v,) for k, v in PROXY_ANCHOR_DEFAULTS.items()}
    (line,) = [a for a in listed("elnivmf", "in_shop") if flag(a, "--loss") == "proxyanchor"]
    opt = parsed(line)
    n_epochs, step = int(theirs["--epochs"][0]), int(theirs["--lr-decay-step"][0])
    assert opt.arch == "bninception_normalize" and theirs["--model"] == ("bn_inception",)
    assert theirs["--bn-freeze"] == ("0",) and "_frozen" not in opt.arch  # BatchNorm trains
    assert (opt.embed_dim, opt.bs, opt.lr) == tuple(float(theirs[k][0]) for k in
                                                    ("--embedding-size", "--batch-size", "--lr"))  # fmt: skip
    assert (opt.warmup, opt.n_epochs, opt.gamma) == (int(theirs["--warm"][0]), n_epochs,
                                                     float(theirs["--lr-decay-gamma"][0]))  # fmt: skip
    assert opt.tau == list(range(step, n_epochs, step)) and opt.scheduler == "step"  # StepLR(step) as MultiStepLR
    assert (opt.optim, opt.decay) == (theirs["--optimizer"][0], float(theirs["--weight-decay"][0]))
    assert (opt.loss_proxyanchor_alpha, opt.loss_proxyanchor_delta) == (float(theirs["--alpha"][0]),
                                                                        float(theirs["--mrg"][0]))  # fmt: skip
    assert opt.loss_proxyanchor_lrmulti == 100 and opt.data_sampler == "random"  # proxies at lr x100; no m-per-class
    assert opt.dataset == "in_shop"


def test_in_shop_lines_are_the_papers_settings_on_in_shop():
    """vMF softmax: the seed's SOP command read in flag form; EL-nivMF: the untuned SOP recipe without proxy
    subsampling; the Roth groups: the Roth suite's batch settings, 40 epochs with a decay at 25 (the DML baselines'
    In-Shop schedule). Only the dataset, the group, W&B and the dataset's default metrics differ."""
    (vmf,) = listed("vmf", "in_shop")
    (sop,) = [a for a in listed("vmf", "online_products") if hydra_key(a, "method") == "vmf_softmax"]
    differ = {k for k, v in vars(parsed(vmf)).items() if v != vars(parsed(sop))[k]}
    assert differ == {"dataset", "group", "project", "evaluation_metrics", "command"}
    (nivmf,) = [a for a in listed("elnivmf", "in_shop") if flag(a, "--loss") == "proxyvmf_panc"]
    (sop,) = listed("elnivmf", "online_products")
    differ = {k for k, v in vars(parsed(nivmf)).items() if v != vars(parsed(sop))[k]}
    assert differ == {"dataset", "group", "loss_proxyvmf_subsample_p", "evaluation_metrics", "command"}
    assert parsed(nivmf).loss_proxyvmf_subsample_p == 1.0
    assert "unc_auroc_cos" in parsed(nivmf).evaluation_metrics and "c_recall@50" in parsed(nivmf).evaluation_metrics
    for argv in listed("roth", "in_shop"):
        opt = parsed(argv)
        assert (opt.n_epochs, opt.tau, opt.bs, opt.samples_per_class, opt.embed_dim) == (40, [25], 112, 2, 128)
        assert opt.arch.startswith("resnet50_frozen") and opt.lr == 1e-5


# ---------------------------------------------------------------------------------------------------------------
# Dry runs for real, on generated data folders


@pytest.fixture(scope="module")
def torch_home(stand_in_hub, tmp_path_factory) -> str:
    """A TORCH_HOME whose hub/ is the stand-in weights' hub folder (torch.hub.get_dir() is $TORCH_HOME/hub)."""
    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub").symlink_to(stand_in_hub, target_is_directory=True)
    return str(home)


def python_on_path(tmp_path: pathlib.Path, patch_cifar_md5: bool = False) -> str:
    """A PATH whose ``python`` is this interpreter; with ``patch_cifar_md5`` it first turns torchvision's CIFAR md5
    check off (the generated CIFAR files are not the originals), then runs the script as ``python`` would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    code = ("import runpy, sys, torchvision.datasets.cifar as c; c.check_integrity = lambda *a, **k: True; "
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")  # fmt: skip
    run = f"exec {shlex.quote(sys.executable)} -c {shlex.quote(code)} \"$@\"" if patch_cifar_md5 else (
        f'exec {shlex.quote(sys.executable)} "$@"')  # fmt: skip
    (bin_dir / "python").write_text(f"#!/usr/bin/env bash\n{run}\n")
    (bin_dir / "python").chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def start_dry_run(words: list[str], data: str, torch_home: str, tmp_path, patch_cifar_md5: bool = False):
    """``bash example_runs.sh --dry_run <words>`` started in the background, on the data folders under ``data``."""
    env = {"parent_folder": data, "TORCH_HOME": torch_home, "PATH": python_on_path(tmp_path, patch_cifar_md5),
           "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}  # fmt: skip
    full = {k: v for k, v in os.environ.items() if k not in ENV} | ENV | env
    return subprocess.Popen(["bash", str(SCRIPT), "--dry_run", *words], cwd=ROOT, env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def check_dry_run(proc: subprocess.Popen, words: list[str], timeout: float) -> None:
    """Every selected line built its run and stopped: exit 0, one ``dry run: dataset ...`` line per line."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    n = len(listed(*words))
    assert out.count("dry run: dataset ") == n and f"example_runs.sh [{n}/{n}]" in out
    for dataset in {dataset_of(a) for a in listed(*words)}:
        assert f"dry run: dataset {dataset} " in out


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("example_runs_data"))
    synthetic.make_online_products(root, n_classes=120, per_class=2, size=16)  # 120 train images >= --bs 64
    synthetic.make_mnist(root, name="mnist", per_class=16)  # one episode (10 x 13) after the 85/15 split
    return root


def test_small_selections_dry_run(small_data, torch_home, tmp_path):
    """``--dry_run elnivmf sop`` (a flag line: pretrained ResNet50, the SOP folder) and ``--dry_run vmf mnist`` (the
    Hydra lines, dataset.params.dataset_path=$parent_folder), both at once: six processes of about 5 s each."""
    selections = [["elnivmf", "sop"], ["vmf", "mnist"]]
    procs = [start_dry_run(words, small_data, torch_home, tmp_path / "_".join(words)) for words in selections]
    for proc, words in zip(procs, selections):
        check_dry_run(proc, words, timeout=600)


@pytest.fixture(scope="module")
def all_data(tmp_path_factory) -> str:
    """Every dataset of the file, big enough for each line's batch or episode."""
    root = str(tmp_path_factory.mktemp("example_runs_all_data"))
    synthetic.make_cub200(root, per_class=2, size=16)
    synthetic.make_cars196(root, per_class=2, size=16)
    synthetic.make_online_products(root, n_classes=120, per_class=2, size=16)  # 120 train images >= --bs 112
    synthetic.make_in_shop(root, n_items=400, per_item=2, size=16)  # 400 train images >= --bs 180
    for name in ("mnist", "fashion_mnist"):
        synthetic.make_mnist(root, name=name, per_class=16)
    synthetic.make_cifar(root, name="cifar10", per_class=31)  # 10 x 26
    synthetic.make_cifar(root, name="cifar100", per_class=4)  # 32 x 8
    return root


@functools.cache
def listed_at(data: str, *words: str) -> tuple[tuple[str, ...], ...]:
    """``--list <words>`` with $parent_folder at ``data``."""
    proc = script("--list", *words, env={"parent_folder": data})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return argvs(proc.stdout)


@pytest.mark.slow  # 381 lines, about 0.3 s each in-process
@pytest.mark.parametrize("index", range(sum(sum(c.values()) for c in COUNTS.values())))
def test_every_line_dry_runs(index, all_data, stand_in_weights, tmp_path, monkeypatch, capsys):
    """Every line of the file, as ``--list`` prints it on the generated data folders, builds its run in this process
    (the bash loop itself is covered above). torchvision's CIFAR md5 check is off: the generated files are not the
    originals."""
    import torchvision.datasets.cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    argv = listed_at(all_data)[index]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main.main([*argv, "--dry_run"]) == 0, capsys.readouterr().err[-3000:]
    assert f"dry run: dataset {dataset_of(argv)} " in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------
# The EL-nivMF code's README command (the "seed command" of docs/protocols.md), its shell variables filled in, as
# users paste it; the only changes made: --dataset digits, --source_path, --n_epochs and --gpu.
SEED_README = ("--loss proxyvmf_panc --seed 0 --gpu $gpu --source_path $parent_folder --project $project --log_online "
               "--group Cars196_Prob_RN50_dim128 --dataset cars196 --n_epochs 300 --tau 60 80 --gamma 0.1 "
               "--no_train_metrics --embed_dim 128 --loss_proxyvmf_proxylrmulti 7500 --loss_proxyvmf_conclrmulti 7500 "
               "--loss_proxyvmf_concentration 9 --loss_proxyvmf_temp 0.003 --loss_proxyvmf_templrmulti 200 "
               "--loss_proxyvmf_warmstart --loss_proxyvmf_n_samples 5 --loss_proxyvmf_guidance_w 0.3")  # fmt: skip
ALLOWED = ("--dataset", "--source_path", "--n_epochs", "--gpu")


def seed_argv(source: str, n_epochs: int = 1) -> list[str]:
    # the seed's placeholders: parent_folder="path_to_parent_folder", gpu="gpu_id"; project="W&B project name" would
    # word-split unquoted in the shell, so it takes a one-word name
    argv = shlex.split(SEED_README.replace("$parent_folder", "path_to_parent_folder").replace("$project", "proj")
                       .replace("$gpu", "gpu_id"))  # fmt: skip
    new = {"--dataset": "digits", "--source_path": source, "--n_epochs": str(n_epochs), "--gpu": "0"}
    out = [new.get(argv[i - 1], a) if i and argv[i - 1] in new else a for i, a in enumerate(argv)]
    changed = {argv[i - 1] for i, (a, b) in enumerate(zip(argv, out)) if a != b}
    assert changed == set(ALLOWED) and len(out) == len(argv)  # nothing else differs from the seed
    return out


UNC_COLUMNS = ["norms@5", "norms@50", "norms@95", "unc_auroc_cos", "unc_auroc_l2", "unc_recall_area",
               "unc_nw_acc@10", "unc_nw_ll@10"]  # fmt: skip


def offline_wandb(tmp_path, monkeypatch):
    """No key (so the logger falls back offline: training/wandb_logger.py reads WANDB_API_KEY from the environment
    only) and, should the machine have network, an unroutable server: nothing can go online."""
    for k in list(os.environ):
        if k.startswith("WANDB"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    for k in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(k, str(tmp_path / "wandb_home"))
    monkeypatch.chdir(tmp_path)  # the default --save_path is Training_Results under the working directory


def check_run(run, metrics, wandb=True):
    import csv
    import math

    assert (run / "embeddings_testing.npz").is_file()
    assert (run / "uncertainty_rejection.png").is_file() and (run / "uncertainty_grid.png").is_file()
    with open(run / "metrics_testing.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert all(math.isfinite(float(row[m])) for m in metrics), {m: row.get(m) for m in metrics}
    if wandb:
        assert "W&B: logging offline (WANDB_API_KEY is not set)" in (run / "log.txt").read_text()
        assert list((run / "wandb").glob("offline-run-*"))


def test_the_seed_command_is_the_cars196_r128_recipe():
    """The file's Cars196 R128 line is the seed command plus flags the seed command leaves at their defaults
    (docs/protocols.md, EL-nivMF recipes); every value the seed command gives is the same."""
    seed = flags_of(shlex.split(SEED_README.replace("$parent_folder", DATA).replace("$project", ENV["project"])
                                .replace("$gpu", ENV["gpu"])))  # fmt: skip
    ours = flags_of(recipe_commands()["Cars196_Prob_RN50_dim128"])
    added = {k: v for k, v in ours.items() if k not in seed}
    assert {k: v for k, v in ours.items() if k in seed} == seed
    assert added == {"--arch": ("resnet50_frozen",), "--bs": ("64",), "--samples_per_class": ("2",),
                     "--optim": ("adam",), "--lr": ("1e-5",), "--storage_metrics": ("c_recall@1",),
                     "--loss_proxyvmf_init_norm_multiplier": ("12",)}  # fmt: skip


@pytest.mark.slow  # 20-60 s on 2 shared CPU cores (W&B start, 128-d training, plots of 35 metrics)
def test_seed_readme_command_runs_on_digits_with_offline_wandb(tmp_path, monkeypatch):
    """The seed's command with only the four allowed changes, run in a temp cwd: the default save_path lands there,
    W&B falls back offline, and the family's default metrics include the uncertainty metrics."""
    offline_wandb(tmp_path, monkeypatch)
    assert main.main(seed_argv(str(tmp_path))) == 0
    check_run(tmp_path / "Training_Results" / "digits" / "Cars196_Prob_RN50_dim128_s0", ["c_recall@1", *UNC_COLUMNS])


def test_seed_readme_command_fast_variant(tmp_path, monkeypatch):
    """The same command and W&B fallback, made cheap: 16-d embeddings, 2 samples, four metrics."""
    offline_wandb(tmp_path, monkeypatch)
    metrics = ["c_recall@1", "unc_auroc_cos", "unc_recall_area", "norms@50"]
    argv = seed_argv(str(tmp_path)) + ["--embed_dim", "16", "--loss_proxyvmf_n_samples", "2",
                                       "--evaluation_metrics", *metrics]  # fmt: skip
    assert main.main(argv) == 0
    check_run(tmp_path / "Training_Results" / "digits" / "Cars196_Prob_RN50_dim128_s0", metrics)
