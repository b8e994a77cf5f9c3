"""Evaluation metrics: one module per metric family, each registered by its prefix.

Metric names are ``<family>`` or ``<family>@<arg>`` (``e_recall@4``,
``rho_spectrum@10``, ``dists@intra``). ``metrics.select(name)`` returns a metric
object with ``requires`` (what shared inputs it needs: neighbours per geometry,
clustering, raw embeddings, a view the loss offers such as class probabilities)
and ``__call__(context) -> float``; see ``evaluation.compute_metrics``, which
computes the shared inputs once.
"""

from __future__ import annotations

from utilities.registry import Registry, import_submodules

REGISTRY = Registry("metric", "--evaluation_metrics")
register = REGISTRY.register

# --evaluation_metrics when not given (losses may extend it through their flag_defaults).
DEFAULT_EVALUATION_METRICS = [
    "e_recall@1", "e_recall@2", "e_recall@4", "c_recall@1", "nmi", "f1", "map_at_r", "mAP_1000",
    "dists@intra", "dists@inter", "dists@intra_over_inter",
    "rho_spectrum@-1", "rho_spectrum@1", "rho_spectrum@2", "rho_spectrum@10",
]  # fmt: skip


def names() -> list[str]:
    return REGISTRY.names()


def add_args(parser) -> None:
    REGISTRY.add_args(parser)


import_submodules(__name__, __path__)

from metrics._base import GEOMETRIES as GEOMETRIES  # noqa: E402
from metrics._base import POINCARE as POINCARE  # noqa: E402
from metrics._base import VIEWS as VIEWS  # noqa: E402
from metrics._base import Context as Context  # noqa: E402
from metrics._select import select as select  # noqa: E402
from metrics._select import validate as validate  # noqa: E402
