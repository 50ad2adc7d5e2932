"""LDL-ALSG: label distribution learning on auxiliary label space graphs (Chen et al., CVPR 2020).

No official code was checked, and the paper's equations were not at hand: the loss is
written from the method's stated assumption (an image's expression distribution should be
like its neighbours' in the label spaces of related tasks such as landmarks and action
units), in the plugin README's words, before this code:

    L = mean_i CE(y_i, p_i) + Σ_t w_t · mean_i Σ_{j ∈ N_t(i)} ā^t_ij ‖p_i − sg(p_j)‖²

with N_t(i) the K nearest neighbours of image i in space t, ā^t_ij the Laplacian kernel
normalised over the K neighbours, and sg(p_j) the neighbours' predictions as constants
(every image is a main image in turn, so both ends of an edge are pulled together).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ferbench import ConfigError, OptimizerSpec

from .common import QUICK, NeighbourConfig, NeighbourMethod, is_list, is_number


@dataclass
class ALSGConfig(NeighbourConfig):
    aux_spaces: list = field(default_factory=lambda: ["landmarks"])
    # The smoothness weight of each space (one value: the same for all).
    space_weights: list = field(default_factory=lambda: [1.0])

    def __post_init__(self):
        super().__post_init__()
        if not is_list(self.aux_spaces) or not self.aux_spaces:
            raise ConfigError(f"aux_spaces={self.aux_spaces!r}: must be a list of at least "
                              f"one auxiliary space")
        w = self.space_weights
        if not is_list(w) or not all(is_number(v) and v >= 0 for v in w):
            raise ConfigError(f"space_weights={w!r}: must be a list of weights >= 0")
        if len(w) not in (1, len(self.aux_spaces)):
            raise ConfigError(f"space_weights={w!r}: must be one weight for all spaces or one "
                              f"per space ({len(self.aux_spaces)} aux_spaces)")

    def space_keys(self):
        return ["aux_spaces"]


def smoothness(probs: torch.Tensor, neighbour_probs: torch.Tensor, kernel: torch.Tensor):
    """mean_i Σ_j ā_ij ‖p_i − p_j‖², ā the kernel normalised per row: [B, C], [B, K, C],
    [B, K] → a scalar whose gradient reaches only p_i (the neighbours are constants)."""
    a = kernel / kernel.sum(1, keepdim=True).clamp_min(1e-12)
    sq = (probs[:, None] - neighbour_probs.detach()).pow(2).sum(-1)
    return (a * sq).sum(1).mean()


class LDLALSG(NeighbourMethod):
    display_name = "LDL-ALSG"
    Config = ALSGConfig
    presets = {
        # LDLVA's code setting (ResNet-18, 224 px, Adam 1e-3 with steps at 10/20/40 of 60,
        # batch 32, K 8): LDL-ALSG's own values could not be checked (README).
        "paper": {},
        "quick": {**QUICK, "aux_spaces": ["landmarks"]},
    }
    preset_sources = {"paper": "ferbench", "quick": "ferbench"}
    pretrained_presets = ("paper",)

    def space_specs(self):
        return [str(s) for s in self.config.aux_spaces]

    def space_weight_list(self) -> list[float]:
        """One weight per space (the config has checked the count)."""
        w = [float(v) for v in self.config.space_weights]
        return w * len(self.space_specs()) if len(w) == 1 else w

    def build(self, ctx):
        self._weights = self.space_weight_list()
        return super().build(ctx)

    def configure_optimizers(self, model, ctx):
        return [self.main_optimizer(model, ctx)]

    def training_step(self, model, batch, ctx):
        view = self.main_view(batch)
        index, y = batch["index"], batch["label"]
        p_nb, f_nb, _ = self.neighbour_outputs(model, batch, view)
        f, logits = model(self.norm(batch["views"][view]))
        logits = logits.float()
        p = logits.softmax(1)
        loss = F.cross_entropy(logits, y)
        ctx.log("loss_ce", loss)
        kernel = self.kernel[index]
        start = 0
        for (spec, w), g in zip(zip(self.space_specs(), self._weights), self.graphs):
            k = g.neighbours.shape[1]
            term = smoothness(p, p_nb[:, start:start + k], kernel[:, start:start + k])
            ctx.log(f"smooth_{spec.split(':')[0]}", term)
            loss = loss + w * term
            start += k
        self.remember(index, p, f)
        return loss

    def noise_scores(self, model, ctx):
        return self.graph_noise_scores(ctx)


__all__ = ["LDLALSG", "ALSGConfig", "OptimizerSpec"]
