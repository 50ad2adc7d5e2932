"""The neighbour graph of an auxiliary space: found once, before training.

Neighbours by L1 distance, as the Laplacian kernel that weighs them; the sample itself
excluded; ties broken by the lower index, so the graph is the same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Graph:
    """K neighbours per training sample and their kernel weights a_ij."""

    neighbours: torch.Tensor     # LongTensor [N, K], positions in the training set
    distance: torch.Tensor       # float [N, K], L1 distances in the space (after `scale`)
    kernel: torch.Tensor         # float [N, K], exp(-distance / tau)
    scale: float                 # what raw L1 distances were divided by (1: the space's own)

    def digest(self) -> str:
        import hashlib

        return hashlib.sha256(self.neighbours.numpy().tobytes()).hexdigest()[:16]


def reduce_dims(points: torch.Tensor, dims: int | None) -> torch.Tensor:
    """Standardised points projected on their first `dims` principal axes (scikit-learn's
    PCA, seeded), where the space has more dimensions than that; otherwise as they are.
    L1 neighbour search over hundreds of HOG bins is both slow and dominated by noise."""
    if dims is None or points.shape[1] <= dims:
        return points
    from sklearn.decomposition import PCA

    x = points.double().numpy()
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    out = PCA(n_components=dims, svd_solver="randomized", random_state=0).fit_transform(x)
    return torch.from_numpy(out).float()


def nearest(points: torch.Tensor, k: int, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest other points of each point by L1 distance: (indices [N, k], distances
    [N, k]), nearest first; among equal distances the lower index comes first."""
    x = points.double()
    n = len(x)
    if not 1 <= k < n:
        raise ValueError(f"k={k} neighbours need at least k + 1 = {k + 1} samples, there are {n}")
    idx_out = torch.empty(n, k, dtype=torch.long)
    dist_out = torch.empty(n, k, dtype=torch.float64)
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(n, start + chunk))
        d = torch.cdist(x[rows], x, p=1)
        d[torch.arange(len(rows)), rows] = float("inf")  # never one's own neighbour
        m = min(n, k + 16)
        cand_d, cand_i = torch.topk(d, k=m, largest=False, sorted=True)
        # Index order first, then a stable sort by distance: ties keep the lower index.
        order = torch.sort(cand_i, dim=1).indices
        cand_d, cand_i = cand_d.gather(1, order), cand_i.gather(1, order)
        order = torch.sort(cand_d, dim=1, stable=True).indices
        cand_d, cand_i = cand_d.gather(1, order), cand_i.gather(1, order)
        # Where ties at the k-th distance may reach past the candidates, sort the whole row.
        cut = (cand_d[:, k - 1] == cand_d[:, -1]) & (m < n)
        for r in torch.nonzero(cut).flatten().tolist():
            full_d, full_i = torch.sort(d[r], stable=True)
            cand_d[r], cand_i[r] = full_d[:m], full_i[:m]
        idx_out[rows] = cand_i[:, :k]
        dist_out[rows] = cand_d[:, :k]
    return idx_out, dist_out


def build_graph(points: torch.Tensor, k: int, tau: float, relative: bool,
                dims: int | None = None) -> Graph:
    """Neighbours and Laplacian kernel a_ij = exp(-‖v_i − v_j‖₁ / τ).

    `relative`: distances are first divided by the median distance to the k-th neighbour,
    so τ means the same on any space (HOG bins, landmarks in pixels); without it τ is on
    the space's own scale (the code's τ = 0.5 on valence-arousal in [-1, 1]).
    """
    pts = reduce_dims(points.float().cpu(), dims)
    idx, dist = nearest(pts, k)
    scale = 1.0
    if relative:
        scale = float(dist[:, -1].median())
        scale = scale if scale > 0 else 1.0
    dist = (dist / scale).float()
    return Graph(idx, dist, torch.exp(-dist / tau), scale)


def knn_disagreement(graph: Graph, labels: torch.Tensor) -> torch.Tensor:
    """The share of each sample's neighbours whose given label differs from its own: the
    training-free floor for noise detection in the same space."""
    labels = labels.cpu()
    return (labels[graph.neighbours] != labels[:, None]).float().mean(1)
