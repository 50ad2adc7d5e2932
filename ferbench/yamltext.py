"""Values typed on the command line in YAML's flow style (`[a, b]`, `{k: v}`), read as
`-o KEY=VALUE` reads them: whole numbers in decimal and dates as the text typed."""

from __future__ import annotations

import functools
import re


def yaml_value(text: str):
    """`text` as YAML, or None where it does not parse."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())
    except (yaml.YAMLError, ValueError):  # ValueError: `!!int 0x1`, read as decimal
        return None


@functools.cache
def _loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """YAML's safe loader with whole numbers in decimal only and dates as text."""

    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in found
                if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:int")]
        for first, found in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"),
                                 list("-+0123456789"))
    Loader.add_constructor("tag:yaml.org,2002:int",
                           lambda loader, node: int(loader.construct_scalar(node)))
    return Loader
