"""ferbench: a plugin-based benchmark harness for facial expression recognition under label noise.

The public surface for plugin authors is this module: `hookimpl`, the method
contract (`Method`, `MethodConfig`, `Prediction`, `OptimizerSpec`, `Phase`,
`PerSample`), `RunContext`, and `__version__`.
"""

__version__ = "0.1.0"

from .context import RunContext  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .method import Method, MethodConfig, OptimizerSpec, PerSample, Phase, Prediction  # noqa: E402

__all__ = ["hookimpl", "Method", "MethodConfig", "Prediction", "OptimizerSpec", "Phase",
           "PerSample", "RunContext", "__version__"]
