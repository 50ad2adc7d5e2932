"""Registers what the built-in datasets provide (adapters, protocol realnoise) as a plugin does."""

from ..hookspecs import hookimpl


@hookimpl
def ferbench_register_datasets(register):
    from .affectnet import AffectNet
    from .ckplus import CKPlus
    from .fer2013 import FER2013
    from .ferplus import FERPlus
    from .imagefolder import ImageFolder
    from .jaffe import JAFFE
    from .rafdb import RAFDB
    from .synthfer import SynthFER

    for adapter in (SynthFER(), FER2013(), FERPlus(), CKPlus(), RAFDB(), AffectNet(),
                    JAFFE(), ImageFolder()):
        register(adapter.name, adapter)


@hookimpl
def ferbench_register_protocols(register):
    # FERPlus's second labelling makes this family possible, so the datasets bring it, the
    # way a third party's dataset package adds a protocol only its data supports.
    from .realnoise import RealNoise

    fam = RealNoise()
    register(fam.family, fam)
