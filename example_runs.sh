#!/usr/bin/env bash
# The whole benchmark in one file: every training command of the three papers this suite reproduces, by paper and
# dataset. Run it from the checkout (each line is a `python main.py ...` command).
#
#   roth     Roth et al. 2020, "Revisiting Training Strategies and Generalization Performance in DML": the Roth
#            suite's own baseline benchmark (every criterion it reports), seeds 0..4: 67 groups x 5 seeds = 335
#            lines; cub200 23 groups (115 lines), cars196 23 (115), online_products 21 (105).
#   vmf      Scott et al. 2021, "von Mises-Fisher Loss" (vMF softmax) and its four baselines on seven datasets, in the
#            seed code's Hydra form (python main.py key=value ...): 7 x 5 = 35 lines, one seed each (1234).
#   elnivmf  Kirchhof et al. 2022, "A Non-isotropic Probabilistic Take on Proxy-based DML" (EL-nivMF): the paper's
#            recipes (cub200 2, cars196 2), an untuned SOP recipe (1) and the section 4.3 ablations (cars196 6): 11.
#   in_shop  In-Shop Clothes Retrieval, in none of the papers: their headline methods by analogy and the published
#            In-Shop recipes (roth 15, vmf 1, elnivmf 2 lines; see the section at the end).
#
# Usage: bash example_runs.sh [--dry_run] [--list] [word ...]
#   Words select lines: papers roth, vmf, elnivmf; datasets cub200, cars196, online_products (alias sop), in_shop, mnist,
#   fashion_mnist, cifar10, cifar100. A line runs when its paper is among the paper words given (or no paper word
#   is given) and its dataset among the dataset words given (or no dataset word is given):
#     bash example_runs.sh roth cub200              # the 23 CUB200 groups x 5 seeds of the Roth benchmark
#     bash example_runs.sh vmf mnist cifar10        # vMF softmax and its baselines on MNIST and CIFAR10
#     bash example_runs.sh sop                      # every paper's SOP lines
#   --list      print the selected commands (one per line, variables filled in, as they would run); run nothing
#   --dry_run   run each selected line with this suite's --dry_run (build data, model, loss, optimiser; stop)
#   --help      print this header
#   An unknown word, or words that select no line, is one line on stderr and exit code 2; nothing runs then.
#   The lines run one after another; the first that fails stops the script with its exit code.
#
# Variables, overridable from the environment (parent_folder=/data gpu=1 bash example_runs.sh roth):
#   parent_folder  the folder holding the datasets (cub200/, cars196/, online_products/, mnist/, cifar10/, ...;
#                  docs/protocols.md, "Dataset preparation")
#   project        the W&B project of --log_online (offline without WANDB_API_KEY)
#   gpu            the GPU id(s) of --gpu (word-split: gpu="0 1" gives --gpu 0 1)

set -euo pipefail

parent_folder=${parent_folder:-../../Datasets}
project=${project:-ProbDML}
gpu=${gpu:-0}

# ---------------------------------------------------------------------------------------------------------------
# Selection (the words), then every line is registered with job <paper> <dataset> <command ...> and run at the end.
PAPERS="roth vmf elnivmf"
DATASETS="cub200 cars196 online_products in_shop mnist fashion_mnist cifar10 cifar100"
VALID="valid: --list, --dry_run, papers ${PAPERS// /, }, datasets ${DATASETS// /, } (sop = online_products)"
list=0 dry_run=0 want_papers="" want_datasets=""
for word in "$@"; do
  case $word in
    --list) list=1 ;;
    --dry_run) dry_run=1 ;;
    -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    sop) want_datasets+=" online_products" ;;
    *)
      if [[ " $PAPERS " == *" $word "* ]]; then want_papers+=" $word"
      elif [[ " $DATASETS " == *" $word "* ]]; then want_datasets+=" $word"
      else echo "example_runs.sh: error: unknown word '$word'; $VALID" >&2; exit 2
      fi ;;
  esac
done

declare -A has=()  # paper -> its datasets (for the message when the words select nothing)
selected=()        # the selected command lines, quoted as the shell reads them back
job() {  # job <paper> <dataset> <command ...>: one line of the benchmark, kept if the words select it
  local paper=$1 dataset=$2 line
  shift 2
  [[ " ${has[$paper]-} " == *" $dataset "* ]] || has[$paper]+=" $dataset"
  [[ -z $want_papers || "$want_papers " == *" $paper "* ]] || return 0
  [[ -z $want_datasets || "$want_datasets " == *" $dataset "* ]] || return 0
  printf -v line '%q ' "$@"
  selected+=("${line% }")
}

# ===============================================================================================================
# Roth et al. 2020: the baseline benchmark, exactly the configurations of the Roth suite's own sample-run script
# (ICML2020_RevisitDML_SampleRuns.sh, kept verbatim in tests/data/roth_sample_runs.sh), one line per group, run for
# seeds 0..4 (every group's seed 0 first, then seed 1, ...; the original runs each group's five seeds in a row).
# Changed from the original: --source_path for its --source, the data folder $parent_folder for its $datapath, the
# W&B project $project for RevisitDML (project=RevisitDML to log as it does) and $gpu for its GPU 0; the CUB200
# lines name --dataset cub200 (the original names none: the Roth suite's default); CUBreg_SNR_Distance without the
# original's stray "_3" after the group name (there the Roth suite's parser stops on "unrecognized arguments: _3").
# The Softmax lines keep the original's --batch_mining distance: softmax uses no miner, so this suite ignores it
# with a one-line warning, as the Roth suite does. The "_3" at the end of CUBreg_Margin_b12_Distance_3 and
# CUBreg_Triplet_Distance_3 is part of those group names in the original and stays.
# ===============================================================================================================
roth_seeds="0 1 2 3 4"

### CUB200-2011: 23 groups x 5 seeds
for seed in $roth_seeds; do
  cub=(--dataset cub200 --kernels 6 --source_path "$parent_folder" --n_epochs 150 --log_online --project "$project" --seed "$seed" --gpu $gpu --bs 112 --samples_per_class 2)
  job roth cub200 python main.py "${cub[@]}" --group CUB_Npair --loss npair --batch_mining npair --arch resnet50_frozen
  job roth cub200 python main.py "${cub[@]}" --group CUB_GenLifted --loss lifted --batch_mining lifted --arch resnet50_frozen
  job roth cub200 python main.py "${cub[@]}" --group CUB_ProxyNCA --loss proxynca --arch resnet50_frozen_normalize
  job roth cub200 python main.py "${cub[@]}" --group CUB_Histogram --loss histogram --arch resnet50_frozen_normalize --loss_histogram_nbins 65
  job roth cub200 python main.py "${cub[@]}" --group CUB_Contrastive --loss contrastive --batch_mining distance --arch resnet50_frozen_normalize
  job roth cub200 python main.py "${cub[@]}" --group CUB_SoftTriple --loss softtriplet --arch resnet50_frozen_normalize
  job roth cub200 python main.py "${cub[@]}" --group CUB_Angular --loss angular --batch_mining npair --arch resnet50_frozen
  job roth cub200 python main.py "${cub[@]}" --group CUB_ArcFace --loss arcface --arch resnet50_frozen_normalize
  job roth cub200 python main.py "${cub[@]}" --group CUB_Triplet_Random --loss triplet --batch_mining random --arch resnet50_frozen_normalize
  job roth cub200 python main.py "${cub[@]}" --group CUB_Triplet_Semihard --loss triplet --batch_mining semihard --arch resnet50_frozen_normalize
  job roth cub200 python main.py "${cub[@]}" --group CUB_Triplet_Softhard --loss triplet --batch_mining softhard --arch resnet50_frozen_normalize
  job roth cub200 python main.py "${cub[@]}" --group CUB_Triplet_Distance --loss triplet --batch_mining distance --arch resnet50_frozen_normalize
  job roth cub200 python main.py "${cub[@]}" --group CUB_Quadruplet_Distance --loss quadruplet --batch_mining distance --arch resnet50_frozen_normalize
  job roth cub200 python main.py "${cub[@]}" --group CUB_Margin_b06_Distance --loss margin --batch_mining distance --arch resnet50_frozen_normalize --loss_margin_beta 0.6
  job roth cub200 python main.py "${cub[@]}" --group CUB_Margin_b12_Distance --loss margin --batch_mining distance --arch resnet50_frozen_normalize
  job roth cub200 python main.py "${cub[@]}" --group CUB_SNR_Distance --loss snr --batch_mining distance --arch resnet50_frozen_normalize
  job roth cub200 python main.py "${cub[@]}" --group CUB_MS --loss multisimilarity --arch resnet50_frozen_normalize
  job roth cub200 python main.py "${cub[@]}" --group CUB_Softmax --loss softmax --batch_mining distance --arch resnet50_frozen_normalize
  job roth cub200 python main.py "${cub[@]}" --group CUBreg_Contrastive --loss contrastive --batch_mining rho_distance --arch resnet50_frozen_normalize --miner_rho_distance_cp 0.4
  job roth cub200 python main.py "${cub[@]}" --group CUBreg_Margin_b06_Distance --loss margin --batch_mining rho_distance --arch resnet50_frozen_normalize --loss_margin_beta 0.6 --miner_rho_distance_cp 0.4
  job roth cub200 python main.py "${cub[@]}" --group CUBreg_Margin_b12_Distance_3 --loss margin --batch_mining rho_distance --arch resnet50_frozen_normalize --miner_rho_distance_cp 0.35
  job roth cub200 python main.py "${cub[@]}" --group CUBreg_Triplet_Distance_3 --loss triplet --batch_mining rho_distance --arch resnet50_frozen_normalize --miner_rho_distance_cp 0.4
  job roth cub200 python main.py "${cub[@]}" --group CUBreg_SNR_Distance --loss snr --batch_mining rho_distance --arch resnet50_frozen_normalize --miner_rho_distance_cp 0.3
done

### CARS196: 23 groups x 5 seeds
for seed in $roth_seeds; do
  cars=(--dataset cars196 --kernels 6 --source_path "$parent_folder" --n_epochs 150 --log_online --project "$project" --seed "$seed" --gpu $gpu --bs 112 --samples_per_class 2)
  job roth cars196 python main.py "${cars[@]}" --group CARS_Npair --loss npair --batch_mining npair --arch resnet50_frozen
  job roth cars196 python main.py "${cars[@]}" --group CARS_GenLifted --loss lifted --batch_mining lifted --arch resnet50_frozen
  job roth cars196 python main.py "${cars[@]}" --group CARS_ProxyNCA --loss proxynca --arch resnet50_frozen_normalize
  job roth cars196 python main.py "${cars[@]}" --group CARS_Histogram --loss histogram --arch resnet50_frozen_normalize --loss_histogram_nbins 65
  job roth cars196 python main.py "${cars[@]}" --group CARS_Contrastive --loss contrastive --batch_mining distance --arch resnet50_frozen_normalize
  job roth cars196 python main.py "${cars[@]}" --group CARS_SoftTriple --loss softtriplet --arch resnet50_frozen_normalize
  job roth cars196 python main.py "${cars[@]}" --group CARS_Angular --loss angular --batch_mining npair --arch resnet50_frozen
  job roth cars196 python main.py "${cars[@]}" --group CARS_ArcFace --loss arcface --arch resnet50_frozen_normalize
  job roth cars196 python main.py "${cars[@]}" --group CARS_Triplet_Random --loss triplet --batch_mining random --arch resnet50_frozen_normalize
  job roth cars196 python main.py "${cars[@]}" --group CARS_Triplet_Semihard --loss triplet --batch_mining semihard --arch resnet50_frozen_normalize
  job roth cars196 python main.py "${cars[@]}" --group CARS_Triplet_Softhard --loss triplet --batch_mining softhard --arch resnet50_frozen_normalize
  job roth cars196 python main.py "${cars[@]}" --group CARS_Triplet_Distance --loss triplet --batch_mining distance --arch resnet50_frozen_normalize
  job roth cars196 python main.py "${cars[@]}" --group CARS_Quadruplet_Distance --loss quadruplet --batch_mining distance --arch resnet50_frozen_normalize
  job roth cars196 python main.py "${cars[@]}" --group CARS_Margin_b06_Distance --loss margin --batch_mining distance --arch resnet50_frozen_normalize --loss_margin_beta 0.6
  job roth cars196 python main.py "${cars[@]}" --group CARS_Margin_b12_Distance --loss margin --batch_mining distance --arch resnet50_frozen_normalize
  job roth cars196 python main.py "${cars[@]}" --group CARS_SNR_Distance --loss snr --batch_mining distance --arch resnet50_frozen_normalize
  job roth cars196 python main.py "${cars[@]}" --group CARS_MS --loss multisimilarity --arch resnet50_frozen_normalize
  job roth cars196 python main.py "${cars[@]}" --group CARS_Softmax --loss softmax --batch_mining distance --arch resnet50_frozen_normalize
  job roth cars196 python main.py "${cars[@]}" --group CARreg_Contrastive --loss contrastive --batch_mining rho_distance --arch resnet50_frozen_normalize --miner_rho_distance_cp 0.35
  job roth cars196 python main.py "${cars[@]}" --group CARreg_Margin_b06_Distance --loss margin --batch_mining rho_distance --arch resnet50_frozen_normalize --loss_margin_beta 0.6 --miner_rho_distance_cp 0.35
  job roth cars196 python main.py "${cars[@]}" --group CARreg_Margin_b12_Distance --loss margin --batch_mining rho_distance --arch resnet50_frozen_normalize --miner_rho_distance_cp 0.35
  job roth cars196 python main.py "${cars[@]}" --group CARreg_Triplet_Distance --loss triplet --batch_mining rho_distance --arch resnet50_frozen_normalize --miner_rho_distance_cp 0.35
  job roth cars196 python main.py "${cars[@]}" --group CARreg_SNR_Distance --loss snr --batch_mining rho_distance --arch resnet50_frozen_normalize --miner_rho_distance_cp 0.35
done

### Stanford Online Products: 21 groups x 5 seeds (100 epochs; the original gives four groups 2 data workers, --kernels 2)
for seed in $roth_seeds; do
  sop=(--dataset online_products --source_path "$parent_folder" --n_epochs 100 --log_online --project "$project" --seed "$seed" --gpu $gpu --bs 112 --samples_per_class 2)
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOP_Npair --loss npair --batch_mining npair --arch resnet50_frozen
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOP_GenLifted --loss lifted --batch_mining lifted --arch resnet50_frozen
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOP_Histogram --loss histogram --arch resnet50_frozen_normalize --loss_histogram_nbins 11
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOP_Contrastive --loss contrastive --batch_mining distance --arch resnet50_frozen_normalize
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOP_Angular --loss angular --batch_mining npair --arch resnet50_frozen
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOP_ArcFace --loss arcface --arch resnet50_frozen_normalize
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOP_Triplet_Random --loss triplet --batch_mining random --arch resnet50_frozen_normalize
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOP_Triplet_Semihard --loss triplet --batch_mining semihard --arch resnet50_frozen_normalize
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOP_Triplet_Softhard --loss triplet --batch_mining softhard --arch resnet50_frozen_normalize
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOP_Triplet_Distance --loss triplet --batch_mining distance --arch resnet50_frozen_normalize
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOP_Quadruplet_Distance --loss quadruplet --batch_mining distance --arch resnet50_frozen_normalize
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOP_Margin_b06_Distance --loss margin --batch_mining distance --arch resnet50_frozen_normalize --loss_margin_beta 0.6
  job roth online_products python main.py "${sop[@]}" --kernels 2 --group SOP_Margin_b12_Distance --loss margin --batch_mining distance --arch resnet50_frozen_normalize
  job roth online_products python main.py "${sop[@]}" --kernels 2 --group SOP_SNR_Distance --loss snr --batch_mining distance --arch resnet50_frozen_normalize
  job roth online_products python main.py "${sop[@]}" --kernels 2 --group SOP_MS --loss multisimilarity --arch resnet50_frozen_normalize
  job roth online_products python main.py "${sop[@]}" --kernels 2 --group SOP_Softmax --loss softmax --batch_mining distance --arch resnet50_frozen_normalize --loss_softmax_lr 0.002
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOPreg_Contrastive --loss contrastive --batch_mining rho_distance --arch resnet50_frozen_normalize --miner_rho_distance_cp 0.15
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOPreg_Margin_b06_Distance --loss margin --batch_mining rho_distance --arch resnet50_frozen_normalize --loss_margin_beta 0.6 --miner_rho_distance_cp 0.15
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOPreg_Margin_b12_Distance --loss margin --batch_mining rho_distance --arch resnet50_frozen_normalize --miner_rho_distance_cp 0.15
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOPreg_Triplet_Distance --loss triplet --batch_mining rho_distance --arch resnet50_frozen_normalize --miner_rho_distance_cp 0.15
  job roth online_products python main.py "${sop[@]}" --kernels 6 --group SOPreg_SNR_Distance --loss snr --batch_mining rho_distance --arch resnet50_frozen_normalize --miner_rho_distance_cp 0.15
done

# ===============================================================================================================
# vMF softmax (Scott et al. 2021) and its baselines, written in the seed code's own Hydra form (python main.py
# key=value ..., read by hydra_commands.py; docs/protocols.md, "The seed's commands, pasted"): per dataset, one line
# per method, one seed each (the seed's default random_seed 1234; add random_seed=<n> for others). Each line has its
# own name=<dataset>_<method> and trains the run folder Training_Results/<dataset>/<name>_s1234.
#   vmf_softmax: the seed README's command for the dataset exactly, plus dataset.params.dataset_path=$parent_folder
#     (the folder holding the datasets; the seed's default is the working directory).
#   Baselines: the same command with method=<baseline> and arch.params.use_vmf=False; arch.params.learn_temp=True
#     for normalized_sce (cosine softmax) and arcface (learned scale), False for unnormalized_sce and hyperbolic_sce.
#   NOTE: the baselines' learning rates here are the vmf_softmax row's (mode.learning_rate and
#   mode.temp_learning_rate), NOT the paper's tuned ones: the paper's appendix lists the tuned learning rate of each
#   method and dataset; set them from it before comparing against its numbers.
# The seed's commands name no GPU: these lines use this suite's default --gpu 0 (CUDA_VISIBLE_DEVICES picks another).
# ===============================================================================================================
vmf_methods="vmf_softmax unnormalized_sce normalized_sce hyperbolic_sce arcface"
vmf_keys() {  # vmf_keys <method>: the arch keys of the method (use_vmf, learn_temp)
  case $1 in
    vmf_softmax) use_vmf=True learn_temp=True ;;
    normalized_sce | arcface) use_vmf=False learn_temp=True ;;
    unnormalized_sce | hyperbolic_sce) use_vmf=False learn_temp=False ;;
  esac
}

### MNIST: 5 methods
for m in $vmf_methods; do
  vmf_keys "$m"
  job vmf mnist python main.py name=mnist_$m mode.learning_rate=1.0 mode.nesterov=True mode.momentum=0.99 mode.temp_learning_rate=0.001 arch=n_digit_mnist arch.params.embedding_dim=3 arch.params.n_classes=10 arch.params.use_vmf=$use_vmf arch.params.learn_temp=$learn_temp sampler=episodic sampler.n_episodes=250 sampler.n_classes=10 sampler.n_samples=13 method=$m dataset=mnist dataset.params.dataset_path="$parent_folder"
done

### FashionMNIST: 5 methods
for m in $vmf_methods; do
  vmf_keys "$m"
  job vmf fashion_mnist python main.py name=fashion_mnist_$m mode.learning_rate=0.05 mode.nesterov=False mode.momentum=0.99 mode.temp_learning_rate=0.001 arch=n_digit_mnist arch.params.embedding_dim=3 arch.params.n_classes=10 arch.params.use_vmf=$use_vmf arch.params.learn_temp=$learn_temp sampler=episodic sampler.n_episodes=250 sampler.n_classes=10 sampler.n_samples=13 method=$m dataset=fashion_mnist dataset.params.dataset_path="$parent_folder"
done

### CIFAR10: 5 methods
for m in $vmf_methods; do
  vmf_keys "$m"
  job vmf cifar10 python main.py name=cifar10_$m mode.learning_rate=0.5 mode.nesterov=False mode.momentum=0.9 mode.temp_learning_rate=0.001 mode.weight_decay=0.0001 arch=resnet50 arch.params.embedding_dim=128 arch.params.n_classes=10 arch.params.use_vmf=$use_vmf arch.params.learn_temp=$learn_temp sampler=episodic sampler.n_episodes=250 sampler.n_classes=10 sampler.n_samples=26 method=$m dataset=cifar10 dataset.params.dataset_path="$parent_folder"
done

### CIFAR100: 5 methods
for m in $vmf_methods; do
  vmf_keys "$m"
  job vmf cifar100 python main.py name=cifar100_$m mode.learning_rate=0.1 mode.nesterov=True mode.momentum=0.99 mode.temp_learning_rate=0.01 mode.weight_decay=0.0001 arch=resnet50 arch.params.embedding_dim=128 arch.params.n_classes=100 arch.params.use_vmf=$use_vmf arch.params.learn_temp=$learn_temp sampler=episodic sampler.n_episodes=250 sampler.n_classes=32 sampler.n_samples=8 method=$m dataset=cifar100 dataset.params.dataset_path="$parent_folder"
done

### CARS196: 5 methods
for m in $vmf_methods; do
  vmf_keys "$m"
  job vmf cars196 python main.py name=cars196_$m mode.learning_rate=0.0001 mode.nesterov=False mode.momentum=0.9 mode.temp_learning_rate=0.01 mode.weight_decay=0.0001 arch=resnet50 arch.params.embedding_dim=512 arch.params.n_classes=83 arch.params.set_bn_eval=True arch.params.pretrained=True arch.params.first_conv_3x3=False arch.params.use_vmf=$use_vmf arch.params.learn_temp=$learn_temp arch.params.kappa_confidence=0.7 sampler=episodic sampler.n_episodes=100 sampler.n_classes=32 sampler.n_samples=4 method=$m dataset=cars196 dataset.params.dataset_path="$parent_folder"
done

### CUB200-2011: 5 methods
for m in $vmf_methods; do
  vmf_keys "$m"
  job vmf cub200 python main.py name=cub200_$m mode.learning_rate=0.001 mode.nesterov=False mode.momentum=0.9 mode.temp_learning_rate=0.01 mode.weight_decay=0.0001 arch=resnet50 arch.params.embedding_dim=512 arch.params.n_classes=85 arch.params.set_bn_eval=True arch.params.pretrained=True arch.params.first_conv_3x3=False arch.params.use_vmf=$use_vmf arch.params.learn_temp=$learn_temp arch.params.kappa_confidence=0.7 arch.params.init_temp=-2.773 sampler=episodic sampler.n_episodes=100 sampler.n_classes=32 sampler.n_samples=4 method=$m dataset=cub200 dataset.params.dataset_path="$parent_folder"
done

### Stanford Online Products (dataset=sop): 5 methods
for m in $vmf_methods; do
  vmf_keys "$m"
  job vmf online_products python main.py name=sop_$m mode.learning_rate=0.0001 mode.nesterov=True mode.momentum=0.9 mode.temp_learning_rate=0.01 mode.weight_decay=0.0005 arch=resnet50 arch.params.embedding_dim=512 arch.params.n_classes=9620 arch.params.set_bn_eval=True arch.params.pretrained=True arch.params.first_conv_3x3=False arch.params.use_vmf=$use_vmf arch.params.learn_temp=$learn_temp arch.params.kappa_confidence=0.7 arch.params.init_temp=-2.773 sampler=episodic sampler.n_episodes=500 sampler.n_classes=32 sampler.n_samples=2 method=$m dataset=sop dataset.params.dataset_path="$parent_folder"
done

# ===============================================================================================================
# EL-nivMF ProxyAnchor (Kirchhof et al. 2022): the paper's recipes (docs/protocols.md, "EL-nivMF recipes") and the
# section 4.3 ablations, seed 0.
# Common to all: ResNet50 with frozen BatchNorm (no output normalisation: the norm is the concentration), bs 64,
# 2 samples per class, Adam lr 1e-5, warm-started proxies, S = 5 vMF samples, T0 = 0.003 with lr x200,
# model selection on c_recall@1.
# ===============================================================================================================

### CUB200-2011
# R128
job elnivmf cub200 python main.py --loss proxyvmf_panc --seed 0 --gpu $gpu --source_path "$parent_folder" --project "$project" --log_online --group Cub200_Prob_RN50_dim128 --dataset cub200 --arch resnet50_frozen --bs 64 --samples_per_class 2 --optim adam --lr 1e-5 --n_epochs 250 --tau 25 50 --gamma 0.3 --no_train_metrics --embed_dim 128 --storage_metrics c_recall@1 --loss_proxyvmf_proxylrmulti 5000 --loss_proxyvmf_conclrmulti 20000 --loss_proxyvmf_concentration 6 --loss_proxyvmf_init_norm_multiplier 30 --loss_proxyvmf_temp 0.003 --loss_proxyvmf_templrmulti 200 --loss_proxyvmf_warmstart --loss_proxyvmf_n_samples 5 --loss_proxyvmf_guidance_w 3
# R512
job elnivmf cub200 python main.py --loss proxyvmf_panc --seed 0 --gpu $gpu --source_path "$parent_folder" --project "$project" --log_online --group Cub200_Prob_RN50_dim512 --dataset cub200 --arch resnet50_frozen --bs 64 --samples_per_class 2 --optim adam --lr 1e-5 --n_epochs 250 --tau 31 --gamma 0.1 --no_train_metrics --embed_dim 512 --storage_metrics c_recall@1 --loss_proxyvmf_proxylrmulti 5000 --loss_proxyvmf_conclrmulti 20000 --loss_proxyvmf_concentration 18 --loss_proxyvmf_init_norm_multiplier 50 --loss_proxyvmf_temp 0.003 --loss_proxyvmf_templrmulti 200 --loss_proxyvmf_warmstart --loss_proxyvmf_n_samples 5 --loss_proxyvmf_guidance_w 5

### CARS196
# R128
job elnivmf cars196 python main.py --loss proxyvmf_panc --seed 0 --gpu $gpu --source_path "$parent_folder" --project "$project" --log_online --group Cars196_Prob_RN50_dim128 --dataset cars196 --arch resnet50_frozen --bs 64 --samples_per_class 2 --optim adam --lr 1e-5 --n_epochs 300 --tau 60 80 --gamma 0.1 --no_train_metrics --embed_dim 128 --storage_metrics c_recall@1 --loss_proxyvmf_proxylrmulti 7500 --loss_proxyvmf_conclrmulti 7500 --loss_proxyvmf_concentration 9 --loss_proxyvmf_init_norm_multiplier 12 --loss_proxyvmf_temp 0.003 --loss_proxyvmf_templrmulti 200 --loss_proxyvmf_warmstart --loss_proxyvmf_n_samples 5 --loss_proxyvmf_guidance_w 0.3
# R512
job elnivmf cars196 python main.py --loss proxyvmf_panc --seed 0 --gpu $gpu --source_path "$parent_folder" --project "$project" --log_online --group Cars196_Prob_RN50_dim512 --dataset cars196 --arch resnet50_frozen --bs 64 --samples_per_class 2 --optim adam --lr 1e-5 --n_epochs 300 --tau 105 170 --gamma 0.2 --no_train_metrics --embed_dim 512 --storage_metrics c_recall@1 --loss_proxyvmf_proxylrmulti 5000 --loss_proxyvmf_conclrmulti 20000 --loss_proxyvmf_concentration 22 --loss_proxyvmf_init_norm_multiplier 10 --loss_proxyvmf_temp 0.003 --loss_proxyvmf_templrmulti 200 --loss_proxyvmf_warmstart --loss_proxyvmf_n_samples 5 --loss_proxyvmf_guidance_w 0.1

### Stanford Online Products (no recipe in the original; NOT tuned, not validated here)
# Chosen by analogy: the CUB-512 settings (the recipe whose proxy/kappa multipliers and guidance are shared by
# three of the four published runs) with the usual SOP schedule of proxy methods (fewer, longer epochs: 100 epochs,
# decay x0.1 at 50 and 80) and --loss_proxyvmf_subsample_p 0.1 so each batch sees its own classes plus ~10% of the
# 11318 proxies (memory/time per batch; the batched similarity alone needs only B*S*C floats).
job elnivmf online_products python main.py --loss proxyvmf_panc --seed 0 --gpu $gpu --source_path "$parent_folder" --project "$project" --log_online --group SOP_Prob_RN50_dim512 --dataset online_products --arch resnet50_frozen --bs 64 --samples_per_class 2 --optim adam --lr 1e-5 --n_epochs 100 --tau 50 80 --gamma 0.1 --no_train_metrics --embed_dim 512 --storage_metrics c_recall@1 --loss_proxyvmf_proxylrmulti 5000 --loss_proxyvmf_conclrmulti 20000 --loss_proxyvmf_concentration 18 --loss_proxyvmf_init_norm_multiplier 50 --loss_proxyvmf_temp 0.003 --loss_proxyvmf_templrmulti 200 --loss_proxyvmf_warmstart --loss_proxyvmf_n_samples 5 --loss_proxyvmf_guidance_w 5 --loss_proxyvmf_subsample_p 0.1

### Ablations (paper section 4.3, CARS196 R128 setting; guidance off to compare the similarity alone)
# EL-vMF (closed-form expected likelihood kernel)
job elnivmf cars196 python main.py --loss proxyvmf --loss_proxyvmf_rho 1 --seed 0 --gpu $gpu --source_path "$parent_folder" --project "$project" --group Cars196_ELvMF_dim128 --dataset cars196 --arch resnet50_frozen --bs 64 --samples_per_class 2 --optim adam --lr 1e-5 --n_epochs 300 --tau 60 80 --gamma 0.1 --no_train_metrics --embed_dim 128 --storage_metrics c_recall@1 --loss_proxyvmf_proxylrmulti 7500 --loss_proxyvmf_conclrmulti 7500 --loss_proxyvmf_concentration 9 --loss_proxyvmf_init_norm_multiplier 12 --loss_proxyvmf_temp 0.003 --loss_proxyvmf_templrmulti 200 --loss_proxyvmf_warmstart
# B-vMF (Bhattacharyya, rho = 0.5)
job elnivmf cars196 python main.py --loss proxyvmf --loss_proxyvmf_rho 0.5 --seed 0 --gpu $gpu --source_path "$parent_folder" --project "$project" --group Cars196_BvMF_dim128 --dataset cars196 --arch resnet50_frozen --bs 64 --samples_per_class 2 --optim adam --lr 1e-5 --n_epochs 300 --tau 60 80 --gamma 0.1 --no_train_metrics --embed_dim 128 --storage_metrics c_recall@1 --loss_proxyvmf_proxylrmulti 7500 --loss_proxyvmf_conclrmulti 7500 --loss_proxyvmf_concentration 9 --loss_proxyvmf_init_norm_multiplier 12 --loss_proxyvmf_temp 0.003 --loss_proxyvmf_templrmulti 200 --loss_proxyvmf_warmstart
# KL divergence
job elnivmf cars196 python main.py --loss proxyvmf_kl --seed 0 --gpu $gpu --source_path "$parent_folder" --project "$project" --group Cars196_KL_dim128 --dataset cars196 --arch resnet50_frozen --bs 64 --samples_per_class 2 --optim adam --lr 1e-5 --n_epochs 300 --tau 60 80 --gamma 0.1 --no_train_metrics --embed_dim 128 --storage_metrics c_recall@1 --loss_proxyvmf_proxylrmulti 7500 --loss_proxyvmf_conclrmulti 7500 --loss_proxyvmf_concentration 9 --loss_proxyvmf_init_norm_multiplier 12 --loss_proxyvmf_temp 0.003 --loss_proxyvmf_templrmulti 200 --loss_proxyvmf_warmstart
# nivMF distribution-to-point
job elnivmf cars196 python main.py --loss proxynca_nivmf --seed 0 --gpu $gpu --source_path "$parent_folder" --project "$project" --group Cars196_nivMF_dim128 --dataset cars196 --arch resnet50_frozen --bs 64 --samples_per_class 2 --optim adam --lr 1e-5 --n_epochs 300 --tau 60 80 --gamma 0.1 --no_train_metrics --embed_dim 128 --storage_metrics c_recall@1 --loss_proxyvmf_proxylrmulti 7500 --loss_proxyvmf_conclrmulti 7500 --loss_proxyvmf_concentration 9 --loss_proxyvmf_init_norm_multiplier 12 --loss_proxyvmf_temp 0.003 --loss_proxyvmf_templrmulti 200 --loss_proxyvmf_warmstart
# L2 point-to-point
job elnivmf cars196 python main.py --loss proxynca_l2 --seed 0 --gpu $gpu --source_path "$parent_folder" --project "$project" --group Cars196_L2_dim128 --dataset cars196 --arch resnet50_frozen --bs 64 --samples_per_class 2 --optim adam --lr 1e-5 --n_epochs 300 --tau 60 80 --gamma 0.1 --no_train_metrics --embed_dim 128 --storage_metrics c_recall@1 --loss_proxyvmf_proxylrmulti 7500 --loss_proxyvmf_conclrmulti 7500 --loss_proxyvmf_concentration 9 --loss_proxyvmf_init_norm_multiplier 12 --loss_proxyvmf_temp 0.003 --loss_proxyvmf_templrmulti 200 --loss_proxyvmf_warmstart
# cosine
job elnivmf cars196 python main.py --loss proxynca_cos --seed 0 --gpu $gpu --source_path "$parent_folder" --project "$project" --group Cars196_cos_dim128 --dataset cars196 --arch resnet50_frozen --bs 64 --samples_per_class 2 --optim adam --lr 1e-5 --n_epochs 300 --tau 60 80 --gamma 0.1 --no_train_metrics --embed_dim 128 --storage_metrics c_recall@1 --loss_proxyvmf_proxylrmulti 7500 --loss_proxyvmf_conclrmulti 7500 --loss_proxyvmf_concentration 9 --loss_proxyvmf_init_norm_multiplier 12 --loss_proxyvmf_temp 0.003 --loss_proxyvmf_templrmulti 200 --loss_proxyvmf_warmstart

# ===============================================================================================================
# In-Shop Clothes Retrieval (dataset word in_shop; query -> gallery retrieval, docs/protocols.md "In-Shop Clothes
# Retrieval"). None of the three papers evaluates In-Shop: these lines run the headline methods with the published
# In-Shop recipes where one exists and by analogy otherwise. NOT tuned and not run to completion here.
#   roth     the baselines of Roth & Brattoli's Deep-Metric-Learning-Baselines In-Shop table (margin + distance,
#            triplet + semihard, N-pair): ResNet50, 128-d, 40 epochs, lr decay at epoch 25, with the Roth suite's
#            batch settings (bs 112, 2 per class, frozen BN), seeds 0..4: 3 groups x 5 seeds = 15 lines.
#   vmf      vMF softmax in flag form with the vMF seed's SOP settings (the seed has no In-Shop command): 1 line.
#   elnivmf  EL-nivMF ProxyAnchor with the untuned SOP recipe above (no proxy subsampling: 3,997 train items), and
#            its baseline ProxyAnchor with the Proxy Anchor code's In-Shop command (Inception-BN, 512-d, bs 180,
#            AdamW lr 6e-4, one warm-up epoch, lr x0.25 every 20 epochs of 60, plain random batches): 2 lines.
# ===============================================================================================================
for seed in $roth_seeds; do
  inshop=(--dataset in_shop --kernels 6 --source_path "$parent_folder" --n_epochs 40 --tau 25 --log_online --project "$project" --seed "$seed" --gpu $gpu --bs 112 --samples_per_class 2)
  job roth in_shop python main.py "${inshop[@]}" --group INSHOP_Margin_b12_Distance --loss margin --batch_mining distance --arch resnet50_frozen_normalize
  job roth in_shop python main.py "${inshop[@]}" --group INSHOP_Triplet_Semihard --loss triplet --batch_mining semihard --arch resnet50_frozen_normalize
  job roth in_shop python main.py "${inshop[@]}" --group INSHOP_Npair --loss npair --batch_mining npair --arch resnet50_frozen
done
job vmf in_shop python main.py --dataset in_shop --source_path "$parent_folder" --project "$project" --gpu $gpu --group in_shop_vmf_softmax --seed 1234 --kernels 4 --embed_dim 512 --init_temp -2.773 --kappa_confidence 0.7 --learn_temp --arch resnet50 --set_bn_eval --loss vmf_softmax --loss_vmf_softmax_n_samples 10 --data_sampler episodic --n_episodes 500 --episode_classes 32 --episode_samples 2 --split_protocol vmf --storage_metrics vmf_recall@1 --optim sgd --lr 0.0001 --momentum 0.9 --nesterov --decay 0.0005 --decay_exclude_1d --temp_lr 0.01 --n_epochs 1000 --scheduler plateau --plateau_factor 0.5 --plateau_patience 15 --early_stop_patience 35
job elnivmf in_shop python main.py --loss proxyvmf_panc --seed 0 --gpu $gpu --source_path "$parent_folder" --project "$project" --log_online --group InShop_Prob_RN50_dim512 --dataset in_shop --arch resnet50_frozen --bs 64 --samples_per_class 2 --optim adam --lr 1e-5 --n_epochs 100 --tau 50 80 --gamma 0.1 --no_train_metrics --embed_dim 512 --storage_metrics c_recall@1 --loss_proxyvmf_proxylrmulti 5000 --loss_proxyvmf_conclrmulti 20000 --loss_proxyvmf_concentration 18 --loss_proxyvmf_init_norm_multiplier 50 --loss_proxyvmf_temp 0.003 --loss_proxyvmf_templrmulti 200 --loss_proxyvmf_warmstart --loss_proxyvmf_n_samples 5 --loss_proxyvmf_guidance_w 5
job elnivmf in_shop python main.py --loss proxyanchor --seed 0 --gpu $gpu --source_path "$parent_folder" --project "$project" --log_online --group InShop_ProxyAnchor_BNInception_dim512 --dataset in_shop --arch bninception_normalize --embed_dim 512 --bs 180 --data_sampler random --optim adamw --lr 6e-4 --decay 1e-4 --warmup 1 --n_epochs 60 --tau 20 40 --gamma 0.25 --loss_proxyanchor_lrmulti 100 --storage_metrics c_recall@1

# ---------------------------------------------------------------------------------------------------------------
# Run (or list) the selected lines, in the order above.
if ((${#selected[@]} == 0)); then
  exist=""
  for paper in $PAPERS; do exist+="; $paper:${has[$paper]}"; done
  echo "example_runs.sh: error: no line is for paper(s)${want_papers:- any} and dataset(s)${want_datasets:- any}; lines exist for ${exist#; }" >&2
  exit 2
fi
n=${#selected[@]} i=0
for line in "${selected[@]}"; do
  if ((dry_run)); then line+=" --dry_run"; fi
  if ((list)); then echo "$line"; continue; fi
  i=$((i + 1))
  echo "example_runs.sh [$i/$n]: $line"
  eval "$line" || { rc=$?; echo "example_runs.sh: error: line $i/$n stopped the script (exit code $rc): $line" >&2; exit "$rc"; }
done
