"""Batch miners: ``batch_mining.select(name, opt)`` builds one by name.

A miner is a callable ``(embeddings [B, D], labels [B]) -> LongTensor [T, 3]`` of
(anchor, positive, negative) batch indices, with a ``name`` attribute. Miners that
return another structure (npair, lifted) document it. Add one by writing a module
here with ``@register("name", paper=...)`` on the class.

Every miner class declares what it returns in its ``output`` class attribute, one of
``OUTPUTS`` below; ``tests/test_miners.py`` checks each registered miner's tuples against
the rule of its tag, so a new miner is tested by declaring its tag.
"""

from __future__ import annotations

from utilities.registry import Registry, import_submodules

# ``output`` tag -> the structure and validity rule of a miner's return value (y: the batch labels).
OUTPUTS: dict[str, str] = {
    "triplet": "LongTensor [T, 3] of (a, p, n): y_a == y_p, a != p, y_n != y_a",
    "push_triplet": "LongTensor [T, 3]: valid triplets, some replaced by push triplets (a, a, p) with "
    "y_p == y_a, p != a (rho_distance)",
    "intra_triplet": "LongTensor [T, 3] of (a, p, n) all of one class: a != p, a != n; n == p only when the "
    "class has two samples in the batch (intra_random)",
    "shuffled_triplet": "LongTensor [T, 3] of valid triplets for the miner's ``last_labels``, a random "
    "permutation of y (random_distance)",
    "npair": "batch_mining.npair.NPairTuples(anchors [A], positives [A], negatives [A, B] bool)",
    "lifted": "batch_mining.lifted.LiftedTuples(anchors [A], positives [A, B] bool, negatives [A, B] bool)",
}

REGISTRY = Registry("batch miner", "--batch_mining")
register = REGISTRY.register


def names() -> list[str]:
    return REGISTRY.names()


def add_args(parser) -> None:
    REGISTRY.add_args(parser)


def output(name: str) -> str:
    """The ``output`` tag of miner ``name`` (a key of ``OUTPUTS``)."""
    return REGISTRY.get(name).obj.output


def select(name: str, opt, margin: float | None = None):
    """Build miner ``name``. A miner with ``uses_margin`` (``semihard``) takes ``margin``: the margin of the loss
    it serves, ``criteria.get_class(loss).miner_margin(opt)``."""
    cls = REGISTRY.get(name).obj
    if cls.uses_margin:
        if margin is None:
            raise ValueError(f"batch miner '{name}' needs the margin of its loss: batch_mining.select(..., margin=)")
        miner = cls(opt, margin=margin)
    else:
        miner = cls(opt)
    miner.name = name
    return miner


import_submodules(__name__, __path__)
