"""Any timm model as a backbone: ``--arch timm_<model name>`` (e.g. ``timm_resnet50.tv_in1k``).

timm builds the model without its classifier (``num_classes=0``: pooled features), and
``last_linear`` maps them to ``embed_dim``. Pretrained weights are read from the local
Hugging Face cache (or the torch hub checkpoints folder for timm models hosted by URL);
nothing is downloaded.
"""

from __future__ import annotations

import os

import torch

from architectures._base import EmbeddingNet
from utilities.errors import UserError

PREFIX = "timm_"
HF_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def local_weights(model_name: str, arch: str) -> str:
    """Path of the cached weight file of timm model ``model_name``; ``UserError`` if absent."""
    import huggingface_hub
    import timm

    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise UserError(f"timm has no pretrained weights for '{model_name}' (--arch {arch}); pass --not_pretrained")
    if cfg.file and os.path.isfile(cfg.file):
        return cfg.file
    if cfg.hf_hub_id:
        repo_id = cfg.hf_hub_id.split("@")[0]
        for name in ([cfg.hf_hub_filename] if cfg.hf_hub_filename else []) + list(HF_FILES):
            path = huggingface_hub.try_to_load_from_cache(repo_id, name)
            if isinstance(path, str) and os.path.isfile(path):
                return path
    if cfg.url:
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(cfg.url))
        if os.path.isfile(path):
            return path
    where = huggingface_hub.constants.HF_HUB_CACHE
    what = f"the Hugging Face repo {cfg.hf_hub_id} (model.safetensors)" if cfg.hf_hub_id else os.path.basename(cfg.url)
    raise UserError(
        f"pretrained weights for --arch {arch} not found: put {what} into {where} "
        f"(e.g. huggingface-cli download {cfg.hf_hub_id} on a machine with network, then copy the cache), "
        f"or pass --not_pretrained"
    )


def build_timm(name: str, opt, input_shape: tuple[int, ...]) -> EmbeddingNet:
    """``name`` is the timm model name without the ``timm_`` prefix."""
    import timm

    if not timm.models.is_model(name):
        raise UserError(f"unknown timm model '{name}' (--arch {PREFIX}{name}); list names with timm.list_models()")
    in_chans = input_shape[0]
    kwargs = dict(num_classes=0, in_chans=in_chans)
    if opt.not_pretrained:
        net = timm.create_model(name, pretrained=False, **kwargs)
    else:
        path = local_weights(name, opt.arch)
        net = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path), **kwargs)
    return EmbeddingNet(net, net.num_features, opt.embed_dim, name=PREFIX + name)
