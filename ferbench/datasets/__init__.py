"""Dataset adapters: files on disk → `Samples` per split, in the canonical label space."""

from .base import Dataset, DatasetAdapter, open_dataset, resolve_options
from .samples import ArraySource, FileSource, ImageSource, Samples

__all__ = ["Dataset", "DatasetAdapter", "open_dataset", "resolve_options",
           "ArraySource", "FileSource", "ImageSource", "Samples"]
