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


@torch.no_grad()
def similarity(branches, bandwidth: float = 10.0) -> dict:
    """The fixed measure reported for every method whatever its term's settings: the mean
    pairwise cosine of the branches' features and the mean off-diagonal kernel on
    L2-normalised features."""
    n = len(branches)
    if n < 2:
        return {"cosine": float("nan"), "kernel_l2": float("nan")}
    x = torch.stack([_flat(b, "l2") for b in branches])          # [N, B, D], unit rows
    cos = torch.einsum("ibd,jbd->ijb", x, x).mean(-1)
    k = kernel_matrix(branches, bandwidth, "l2")
    off = ~torch.eye(n, dtype=torch.bool, device=k.device)
    return {"cosine": float(cos[off].mean()), "kernel_l2": float(k[off].mean())}
