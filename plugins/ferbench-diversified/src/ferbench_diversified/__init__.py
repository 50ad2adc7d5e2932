"""ferbench-diversified: ESR and MA-Net with and without the feature-diversity term.

In progress: the diversity term (`diversity`) is in; the architectures and the four methods
(`esr`, `esr-div`, `manet`, `manet-div`) are not registered yet.
"""
