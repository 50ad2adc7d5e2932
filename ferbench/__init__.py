"""ferbench: a plugin-based benchmark harness for facial expression recognition under label noise."""

__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402

__all__ = ["hookimpl", "__version__"]
