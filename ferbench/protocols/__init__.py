"""Protocols: what a run on an opened dataset may see, as data (the built-in protocol plugin).

A protocol turns an opened dataset into a `ProtocolView`: the training labels a
method may see, the test set, the run's class list, and a record (flips, class
mapping) that only the harness reads. Noise is an artefact with an id: the
same (dataset fingerprint, rate, noise seed) always gives the same flips, and
they are saved as a file whose hash goes into every result. `base` holds the
contract, `families` the core families, `noise` the noisy labels and their files.
"""

from .base import Protocol, ProtocolView, finish_view, parse_protocol, to_run_labels
from .families import Clean, Cross, Noise, NoiseFile, ferbench_register_protocols
from .noise import (NoiseRecord, document_hash, generate_noise, noise_document, read_noise_file,
                    with_noisy_labels)

__all__ = [
    "Clean",
    "Cross",
    "Noise",
    "NoiseFile",
    "NoiseRecord",
    "Protocol",
    "ProtocolView",
    "document_hash",
    "ferbench_register_protocols",
    "finish_view",
    "generate_noise",
    "noise_document",
    "parse_protocol",
    "read_noise_file",
    "to_run_labels",
    "with_noisy_labels",
]
