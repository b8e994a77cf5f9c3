"""Loss criteria: ``criteria.select(name, opt, batchminer)`` builds one by name.

A criterion is an ``nn.Module`` subclassing ``criteria._base.Criterion``:
``criterion(embeddings, labels)`` returns a scalar loss, and its learnable or fixed
extras (proxies, class weights, temperatures) are handed to the optimiser through
``criterion.param_groups()``. Which miners a criterion takes follows from its ``accepts``
(miner output tags, see ``batch_mining.OUTPUTS``). Add one by writing a module here with
``@register("name", paper=...)`` on the class.
"""

from __future__ import annotations

import batch_mining
from utilities.errors import UserError
from utilities.registry import Registry, import_submodules

REGISTRY = Registry("loss", "--loss")
register = REGISTRY.register


def names() -> list[str]:
    return REGISTRY.names()


def add_args(parser) -> None:
    REGISTRY.add_args(parser)


def get_class(name: str):
    return REGISTRY.get(name).obj


def default_miner(name: str) -> str | None:
    """The miner a criterion uses when ``--batch_mining`` is not given."""
    return get_class(name).default_miner


def accepted_miners(name: str) -> list[str]:
    """The miners that can feed criterion ``name``: those whose declared ``output`` it ``accepts``."""
    accepts = get_class(name).accepts
    return [m for m in batch_mining.names() if batch_mining.output(m) in accepts]


def check_miner(name: str, miner_name: str | None) -> None:
    """Fail with one line when ``miner_name`` cannot feed criterion ``name`` (decided by the miner's output)."""
    cls = get_class(name)
    allowed = accepted_miners(name)
    if miner_name is None:
        if cls.default_miner is not None:
            raise UserError(f"loss '{name}' needs a batch miner; pass --batch_mining one of: {', '.join(allowed)}")
        return
    if not cls.accepts:
        raise UserError(f"loss '{name}' takes no batch miner, but got batch miner '{miner_name}'; drop --batch_mining")
    if batch_mining.output(miner_name) not in cls.accepts:
        raise UserError(f"loss '{name}' cannot use batch miner '{miner_name}'; choose one of: {', '.join(allowed)}")


def select(name: str, opt, batchminer=None, n_classes: int | None = None):
    """Build criterion ``name``; ``batchminer`` comes from ``batch_mining.select``, ``n_classes`` is the number of
    train classes (needed by proxy and classifier losses)."""
    check_miner(name, getattr(batchminer, "name", None))
    return get_class(name)(opt, batchminer, n_classes=n_classes)


import_submodules(__name__, __path__)
