"""The help text of config keys, read from the comments written beside their declarations.

Method configs document a key with a comment on its line or a block of comment lines just
above it; those comments are the keys' help, so `ferbench list --method` shows what the
source says and nothing drifts out of date. A field's `help` metadata, where a plugin
gives one, comes first.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize


def key_help(config_cls) -> dict[str, str]:
    """Field name → help text for every field of the dataclass `config_cls` ("" where none).

    A subclass that redeclares a key without a comment (a new default) keeps the help of
    the class it inherits the key from."""
    found: dict[str, str] = {}
    for klass in reversed(config_cls.__mro__):  # bases first: subclasses' comments win
        if "__dataclass_fields__" in vars(klass):
            found.update({k: v for k, v in _declared_comments(klass).items() if v})
    out = {}
    for f in dataclasses.fields(config_cls):
        given = f.metadata.get("help") if f.metadata else None
        out[f.name] = str(given) if given else found.get(f.name, "")
    return out


def _declared_comments(klass) -> dict[str, str]:
    """The comments above and on the lines of each field declared in `klass`'s own body."""
    try:
        source = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):  # no source shipped (a compiled or zipped plugin)
        return {}
    tree = ast.parse(source)
    body = next((n.body for n in tree.body if isinstance(n, ast.ClassDef)), [])
    lines = source.splitlines()
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments.setdefault(tok.start[0], []).append(_text(tok.string))
    out = {}
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above = []
        line = node.lineno - 1
        while line >= 1 and lines[line - 1].lstrip().startswith("#"):
            above.insert(0, " ".join(comments.get(line, [])))
            line -= 1
        beside = [c for n in range(node.lineno, node.end_lineno + 1) for c in comments.get(n, [])]
        out[node.target.id] = " ".join(t for t in above + beside if t)
    return out


def _text(comment: str) -> str:
    return comment.lstrip("#").strip()
