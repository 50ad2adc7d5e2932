"""ferbench-diversified: ESR and MA-Net with and without the feature-diversity term.

In progress: the diversity term (`diversity`), ESR's ensemble rule (`ensemble`) and the ESR
network (`esr`) are in; MA-Net and the four methods (`esr`, `esr-div`, `manet`, `manet-div`)
are not registered yet, so this module provides no hook implementations so far.
"""
