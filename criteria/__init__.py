"""Loss criteria: ``criteria.select(name, opt, batchminer)`` builds one by name.

A criterion is an ``nn.Module`` subclassing ``criteria._base.Criterion``:
``criterion(embeddings, labels)`` returns a scalar loss, and its learnable or fixed
extras (proxies, class weights, temperatures) are handed to the optimiser through
``criterion.param_groups()``. Add one by writing a module here with
``@register("name", paper=...)`` on the class.
"""

from __future__ import annotations

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


def check_miner(name: str, miner_name: str | None) -> None:
    """Fail with one line when ``miner_name`` cannot feed criterion ``name``."""
    cls = get_class(name)
    if miner_name is None:
        if cls.default_miner is not None:
            raise UserError(
                f"loss '{name}' needs a batch miner; pass --batch_mining one of: {', '.join(cls.allowed_miners)}"
            )
        return
    if not cls.allowed_miners:
        raise UserError(f"loss '{name}' takes no batch miner, but got batch miner '{miner_name}'; drop --batch_mining")
    if miner_name not in cls.allowed_miners:
        raise UserError(
            f"loss '{name}' cannot use batch miner '{miner_name}'; choose one of: {', '.join(cls.allowed_miners)}"
        )


def select(name: str, opt, batchminer=None):
    """Build criterion ``name``; ``batchminer`` comes from ``batch_mining.select``."""
    check_miner(name, getattr(batchminer, "name", None))
    return get_class(name)(opt, batchminer)


import_submodules(__name__, __path__)
