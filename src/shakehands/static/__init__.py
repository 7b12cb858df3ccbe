"""The pages shipped with the package: the seed demo's and the chat demo's, as HTML files.

They are package data (``pip install`` puts them next to this module), read once, when the
module that serves them is imported. Nothing here performs network I/O.
"""

from __future__ import annotations

from importlib.resources import files

__all__ = ["page"]


def page(name: str) -> str:
    """The text of ``static/<name>`` (for example ``page("demo.html")``)."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")
