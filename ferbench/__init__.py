"""ferbench: a plugin-based benchmark harness for facial expression recognition under label noise.

The public surface for plugin authors is this module: `hookimpl`, the method
contract (`Method`, `MethodConfig`, `Prediction`, `OptimizerSpec`, `Phase`,
`PerSample`), `RunContext`, `split_epochs` (stage lengths as fractions of the
epochs), the errors a plugin raises for bad input, and `__version__`. A dataset
plugin also uses `ferbench.datasets` (`DatasetAdapter`, `Dataset`, `Samples`,
`FileSource`, `ArraySource`) and `ferbench.labels` (`CLASSES`, `canonical`).
"""

__version__ = "0.1.0"

from .context import RunContext  # noqa: E402
from .method import split_epochs  # noqa: E402
from .errors import ConfigError, DataError, FerbenchError  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .method import Method, MethodConfig, OptimizerSpec, PerSample, Phase, Prediction  # noqa: E402

__all__ = ["hookimpl", "Method", "MethodConfig", "Prediction", "OptimizerSpec", "Phase",
           "PerSample", "RunContext", "split_epochs", "FerbenchError", "ConfigError",
           "DataError", "__version__"]
