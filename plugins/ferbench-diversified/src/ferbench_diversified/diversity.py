"""The determinant-based feature-diversity term (Heidari, Iosifidis 2022), in three forms.

For branch tensors X_1..X_N (each [B, ...]) the kernel S_ij = (1/B) Σ_b exp(−γ‖X_i^b − X_j^b‖²).
- `det_zero_diag`, the official code's: S with a zero diagonal, D = −det S. With equal
  off-diagonals s, −det S = (−1)^N (N − 1) s^N: minimising it pushes branches apart for even
  N and pulls them TOGETHER for odd N (ESR's nine branches).
- `det_unit`: the unit diagonal of a proper kernel (DPP-style), D = −det K; with equal
  off-diagonals det K = (1 − s)^(N−1) (1 + (N − 1)s) falls in s for every N.
- `logdet_unit` (ferbench's default): D = −log det(K + eps·I), the same ordering with
  gradients that do not vanish as det K → 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FORMS = ("logdet_unit", "det_unit", "det_zero_diag")
NORMS = ("none", "l2", "dim")


def _flat(x: torch.Tensor, norm: str) -> torch.Tensor:
    x = x.float().reshape(x.shape[0], -1)
    return F.normalize(x, dim=1) if norm == "l2" else x


def kernel_matrix(branches, bandwidth: float = 10.0, norm: str = "none") -> torch.Tensor:
    """S [N, N] with S_ij = mean over the batch of exp(−γ·d²(X_i^b, X_j^b)), the diagonal 1.

    `norm`: "none" (the code's: squared distance of the raw tensors), "l2" (each sample's
    tensor L2-normalised first, so d² ∈ [0, 4]), "dim" (d² divided by the tensor's size).
    """
    x = torch.stack([_flat(b, norm) for b in branches])          # [N, B, D]
    d2 = (x[:, None] - x[None]).pow(2).sum(-1)                    # [N, N, B]
    if norm == "dim":
        d2 = d2 / x.shape[-1]
    return torch.exp(-bandwidth * d2).mean(-1)


def diversity_penalty(branches, form: str = "logdet_unit", bandwidth: float = 10.0,
                      norm: str = "none", eps: float = 1e-6) -> torch.Tensor:
    """The term to ADD to the loss (lower = more diverse, in the unit-diagonal forms)."""
    s = kernel_matrix(branches, bandwidth, norm)
    n = s.shape[0]
    eye = torch.eye(n, device=s.device, dtype=s.dtype)
    if form == "det_zero_diag":
        return -torch.linalg.det(s * (1 - eye))
    k = s * (1 - eye) + eye
    if form == "det_unit":
        return -torch.linalg.det(k)
    if form == "logdet_unit":
        return -torch.logdet(k + eps * eye)
    raise ValueError(f"unknown diversity form {form!r} (one of {', '.join(FORMS)})")


def odd_branch_warning(form: str, n: int) -> str | None:
    """The warning a run of the code's form on an odd number of branches gets, else None."""
    if form == "det_zero_diag" and n % 2 == 1:
        return (f"diversity_form=det_zero_diag with {n} branches: −det of a zero-diagonal "
                f"kernel matrix pulls an odd number of branches TOGETHER (the official "
                f"code's form, kept for reproduction); logdet_unit diversifies for every N")
    return None


def _pairs(n: int, device):
    i, j = torch.triu_indices(n, n, 1, device=device)
    return i, j


@torch.no_grad()
def pairwise_kernel(branches, bandwidth: float = 10.0, norm: str = "none") -> torch.Tensor:
    """Per sample [B]: the mean over branch pairs i ≠ j of exp(−γ·d²(X_i^b, X_j^b)); its
    mean over a set is the mean off-diagonal entry of `kernel_matrix` on that set."""
    x = torch.stack([_flat(b, norm) for b in branches])          # [N, B, D]
    i, j = _pairs(len(branches), x.device)
    d2 = (x[i] - x[j]).pow(2).sum(-1)                             # [P, B]
    if norm == "dim":
        d2 = d2 / x.shape[-1]
    return torch.exp(-bandwidth * d2).mean(0)


@torch.no_grad()
def pairwise_cosine(branches) -> torch.Tensor:
    """Per sample [B]: the mean over branch pairs of the cosine of their features."""
    x = torch.stack([_flat(b, "l2") for b in branches])
    i, j = _pairs(len(branches), x.device)
    return (x[i] * x[j]).sum(-1).mean(0)


# The fixed measure's bandwidth. On unit vectors d² = 2 − 2·cos, so γ = 1 spreads the kernel
# over (e^−4, 1]; the code's γ = 10 would put every pair with a cosine under 0.8 below 0.02.
SIMILARITY_BANDWIDTH = 1.0


def per_sample_figures(branches, bandwidth: float = SIMILARITY_BANDWIDTH,
                       norm: str | None = None) -> dict:
    """`norm` None: the fixed measure reported for every method whatever its term's
    settings, {"cosine", "kernel_l2"} (the kernel on L2-normalised features, `bandwidth`
    SIMILARITY_BANDWIDTH); else {"kernel"} under that normalisation (a term's own setting)."""
    if norm is not None:
        return {"kernel": pairwise_kernel(branches, bandwidth, norm)}
    return {"cosine": pairwise_cosine(branches),
            "kernel_l2": pairwise_kernel(branches, bandwidth, "l2")}


def similarity(branches, bandwidth: float = SIMILARITY_BANDWIDTH) -> dict:
    """The fixed measure over a batch: mean pairwise cosine and mean off-diagonal kernel on
    L2-normalised features (NaN for fewer than two branches)."""
    if len(branches) < 2:
        return {"cosine": float("nan"), "kernel_l2": float("nan")}
    return {k: float(v.mean()) for k, v in per_sample_figures(branches, bandwidth).items()}
