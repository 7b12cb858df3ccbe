"""Griffe extension: the docstrings' reStructuredText roles, read as Markdown.

shakehands' docstrings are written for ``help()`` and for readers of the source, with Sphinx-style
roles: ``:class:`Server```, ``:func:`~.config.server_config```, ``:mod:`shakehands.sync```,
``:attr:`request```. Markdown would print the role verbatim; this extension turns each into code
(the last component of the name when it starts with ``~``, as Sphinx does), and ``Example::``
into ``Example:`` followed by the indented block, which Markdown shows as code. A list of
option names wrapped over two lines in an ``Args:`` section is joined into one entry. A class's
``__slots__`` is left out of the reference.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const|ref):`([^`]+)`")
LITERAL_BLOCK = re.compile(r"::\n\n")
# "    a, b, c,\n    d, e: as for serve": a list of names wrapped over two lines in an Args
# section, which the Google-style parser would read as two entries.
WRAPPED_NAMES = re.compile(r"^(\s+\w+(?:, \w+)*,)\n\s+(\w+(?:, \w+)*:)", re.MULTILINE)


def _role(match: re.Match[str]) -> str:
    name = match.group(1).strip()
    if name.startswith("~"):
        name = name.lstrip("~.").rsplit(".", 1)[-1]
    elif name.startswith("."):
        name = name.lstrip(".")
    return f"`{name}`"


def markdown(text: str) -> str:
    """The docstring ``text`` with its roles as code spans and its ``::`` blocks as code."""
    text = WRAPPED_NAMES.sub(r"\1 \2", text)
    return LITERAL_BLOCK.sub(":\n\n", ROLE.sub(_role, text))


class RestRoles(griffe.Extension):
    """Rewrite every docstring once the object is created."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        # ``__slots__`` is how a class is stored, not part of what it offers.
        cls.members.pop("__slots__", None)
