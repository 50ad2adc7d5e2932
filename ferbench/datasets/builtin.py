"""Registers the built-in dataset adapters through the same hook a plugin uses."""

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
