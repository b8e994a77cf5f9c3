"""NMI of k-means clusters: ``nmi`` (Euclidean k-means) and ``c_nmi`` (spherical k-means)."""

from __future__ import annotations

from sklearn.metrics import normalized_mutual_info_score

from metrics import register
from metrics._base import Context, Metric, Requires

PAPER = "Manning et al. 2008, Introduction to Information Retrieval (NMI); Roth et al. 2020 (protocol)"


@register("nmi", paper=PAPER, geometry="euclidean", form="nmi")
@register("c_nmi", paper=PAPER, geometry="cosine", form="c_nmi")
class NMI(Metric):
    """NMI(labels, clusters) = I(Y; C) / ((H(Y) + H(C)) / 2) (sklearn's arithmetic normalisation).

    Clusters: faiss k-means with k = number of classes in the evaluated split, 20
    iterations, seeded (see ``evaluation.clustering``); ``c_nmi`` clusters L2-normalised
    embeddings with spherical k-means.
    """

    def __init__(self, name: str, geometry: str, arg: None = None):
        self.name = name
        self.requires = Requires(geometry=geometry, kmeans=True)

    def __call__(self, ctx: Context) -> float:
        return float(normalized_mutual_info_score(ctx.labels, ctx.clusters[self.requires.geometry]))
