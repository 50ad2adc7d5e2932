"""ferbench-diversified: registers `esr`, `esr-div`, `manet` and `manet-div` (ESR and MA-Net
with and without the feature-diversity term of Heidari and Iosifidis, 2022), the `esr`
augmentation view, and the timm models `ferbench_esr`, `ferbench_esr_quarter`,
`ferbench_manet` and `ferbench_manet_quarter` (once `ferbench_diversified.esr` /
`.manet` is imported: the methods import them)."""

from ferbench import View, hookimpl


@hookimpl
def ferbench_register_methods(register):
    from .esr_method import ESRDiv, ESRPlain
    from .manet_method import MANetDiv, MANetPlain

    register("esr", ESRPlain)
    register("esr-div", ESRDiv)
    register("manet", MANetPlain)
    register("manet-div", MANetDiv)


@hookimpl
def ferbench_register_views(register):
    from .views import view_esr

    register("esr", View(view_esr, {"degrees": 30.0, "translate": 0.1, "zoom": 0.25,
                                    "brightness": 0.5, "contrast": 0.5},
                         {"degrees": (0.0, 180.0), "translate": (0.0, 0.5), "zoom": (0.0, 1.0),
                          "brightness": (0.0, 1.0), "contrast": (0.0, 1.0)}))
