"""MkDocs hook: the Griffe extensions of ``mkdocs.yml`` are paths relative to that file.

Griffe opens an extension given as a file path relative to the current directory, so
``mkdocs build -f path/to/mkdocs.yml`` from elsewhere would not find it (and MkDocs'
``!relative`` tag is refused by mkdocstrings' option validation). This hook makes those paths
absolute before anything is rendered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def on_config(config: Any) -> Any:
    here = Path(config.config_file_path).resolve().parent
    handlers = config.plugins["mkdocstrings"].config.handlers
    options = handlers.get("python", {}).get("options", {})
    options["extensions"] = [
        str(here / extension)
        if isinstance(extension, str) and extension.endswith(".py")
        else extension
        for extension in options.get("extensions", [])
    ]
    return config
