"""Griffe extension: the docstrings' reStructuredText roles, read as Markdown.

shakehands' docstrings are written for ``help()`` and for readers of the source, with Sphinx-style
roles: ``:class:`Server```, ``:func:`~.config.server_config```, ``:mod:`shakehands.sync```,
``:attr:`request```. Markdown would print the role verbatim; this extension turns each into code
(the last component of the name when it starts with ``~``, as Sphinx does) that links to the
object's entry when the reference has one (an ``optional`` cross-reference of mkdocs-autorefs:
a target that is not documented stays plain code, and strict mode has nothing to say). Names are
looked up as Sphinx would: ``.mod.Name`` from the docstring's package, ``Name`` in its class,
then its module. ``Example::``
into ``Example:`` followed by the indented block, which Markdown shows as code. A list of
option names wrapped over two lines in an ``Args:`` section is joined into one entry. A class's
``__slots__`` is left out of the reference. In ``Args:`` and ``Raises:`` sections, a line that
is not ``name: description`` continues the entry above it (a section that starts with such a
line is plain text); ``>>>`` examples are fenced as ``pycon`` code. ``#:`` comments above an
assignment are its docstring, as for Sphinx (Griffe reads only a string literal after it).
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const|ref):`([^`]+)`")
LITERAL_BLOCK = re.compile(r"::\n\n")
# "    a, b, c,\n    d, e: as for serve": a list of names wrapped over two lines in an Args
# section, which the Google-style parser would read as two entries.
WRAPPED_NAMES = re.compile(r"^(\s+\w+(?:, \w+)*,)\n\s+(\w+(?:, \w+)*:)", re.MULTILINE)


def _candidates(target: str, obj: griffe.Object) -> list[str]:
    """The identifiers a role's target may mean, where ``obj``'s docstring says it."""
    module = obj.module
    package = (
        module.path
        if module.filepath and Path(str(module.filepath)).name == ("__init__.py")
        else module.path.rsplit(".", 1)[0]
    )
    if target.startswith("."):  # relative to the package, as Sphinx reads ``.mod.Name``
        return [f"{package}.{target.lstrip('.')}"]
    if target.startswith("shakehands"):
        return [target]
    owner = obj if obj.is_class else obj.parent if obj.parent and obj.parent.is_class else None
    scopes = [module.path, package]
    if owner is not None and not target[:1].isupper():  # ``:attr:`request```, ``:meth:`send```
        scopes.insert(0, owner.path)
    # A name the module imports resolves too: mkdocstrings follows the alias to its home.
    return [f"{scope}.{target}" for scope in scopes]


def _role(match: re.Match[str], obj: griffe.Object) -> str:
    target = match.group(1).strip()
    explicit = re.fullmatch(r"(.+?)\s*<([^<>]+)>", target)  # ``:meth:`title <target>```
    if explicit:
        title, target = explicit.group(1), explicit.group(2).lstrip("~")
    else:
        short = target.startswith("~")
        target = target.lstrip("~")
        title = target.rsplit(".", 1)[-1] if short else target.lstrip(".")
    code = f"<code>{html.escape(title)}</code>"
    candidates = _candidates(target, obj)[:2]  # autorefs tries an identifier, then a "slug"
    slug = f' slug="{html.escape(candidates[1])}"' if len(candidates) > 1 else ""
    # ``optional``: a link when the reference documents the target, plain code otherwise.
    return f'<autoref identifier="{html.escape(candidates[0])}"{slug} optional>{code}</autoref>'


#: A Google-style section whose entries are ``name: description``.
ENTRY_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Raises|Exceptions):\s*$")
ENTRY = re.compile(r"^[\w.*]+(?:, [\w.*]+)*(?: \([^)]*\))?:(?:\s|$)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _entry_sections(text: str) -> str:
    """``Args:`` / ``Raises:`` sections as the parser reads them: a line at the entries' level
    that is not ``name: description`` continues the entry above it; a section that does not
    start with an entry (``Raises: As connect, ...``) is plain text."""
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    while index < len(lines):
        header = ENTRY_SECTION.match(lines[index])
        out.append(lines[index])
        index += 1
        if not header:
            continue
        base = len(header.group(1))
        end = index
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > base):
            end += 1
        while end > index and not lines[end - 1].strip():
            end -= 1
        body = lines[index:end]
        first = next((line for line in body if line.strip()), None)
        if first is None:
            continue
        level = _indent(first)
        if not ENTRY.match(first.strip()):
            words = " ".join(line.strip() for line in body if line.strip())
            out[-1] = f"{' ' * base}{header.group(2)}: {words}"
        else:
            for line in body:
                if line.strip() and _indent(line) == level and not ENTRY.match(line.strip()):
                    line = " " * (level + 4) + line.strip()
                out.append(line)
        index = end
    return "\n".join(out)


def _doctests(text: str) -> str:
    """``>>>`` examples, with their output, as fenced ``pycon`` blocks (Markdown would read
    an output such as ``[True, True]`` as a link)."""
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.lstrip().startswith(">>>"):
            out.append(line)
            index += 1
            continue
        indent = " " * _indent(line)
        out.append(f"{indent}```pycon")
        while index < len(lines) and lines[index].strip():
            out.append(lines[index])
            index += 1
        out.append(f"{indent}```")
    return "\n".join(out)


def markdown(text: str, obj: griffe.Object) -> str:
    """The docstring ``text`` of ``obj`` with its roles as links (or code), its ``::`` blocks
    and doctests as code, and its entry sections in the parser's shape."""
    text = _entry_sections(WRAPPED_NAMES.sub(r"\1 \2", text))
    text = _doctests(LITERAL_BLOCK.sub(":\n\n", text))
    return ROLE.sub(lambda match: _role(match, obj), text)


class RestRoles(griffe.Extension):
    """Rewrite every docstring once the object is created."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value, obj)

    def on_attribute_instance(self, *, node: Any, attr: griffe.Attribute, **kwargs: Any) -> None:
        # ``#: text`` comments right above an assignment document it, as Sphinx reads them;
        # Griffe reads only a string after the assignment.
        if attr.docstring is not None or not attr.lineno:
            return
        lines = attr.module.lines
        index = attr.lineno - 2
        comments: list[str] = []
        while index >= 0 and lines[index].strip().startswith("#:"):
            comments.insert(0, lines[index].strip()[2:].strip())
            index -= 1
        if comments:
            text = markdown("\n".join(comments), attr)
            attr.docstring = griffe.Docstring(text, lineno=index + 2, parent=attr)

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        # ``__slots__`` is how a class is stored, not part of what it offers.
        cls.members.pop("__slots__", None)
