"""MkDocs hook: the site shows the repository files that the docs link to outside ``docs/``.

The pages in ``docs/`` are read on GitHub too, where ``../examples/echo_server.py`` or
``../bench/results/latest.md`` are plain relative links into the repository. In the site those
targets would be outside it, and ``mkdocs build --strict`` would fail on them. This hook follows
every relative link that leaves ``docs/`` (and the links of the pages it brings in, recursively),
adds the target to the site under ``source/`` (a Markdown file as a page, a Python or other text
file as a page showing its code, an image as is), and rewrites the link to point there. A link to
a file that does not exist is left alone, so strict mode still fails on it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

SOURCE = "source"  # where the repository's files appear in the site
IMAGES = {".png", ".svg", ".jpg", ".jpeg", ".gif"}
LANGUAGES = {".py": "python", ".c": "c", ".json": "json", ".toml": "toml", ".sh": "sh"}
# [text](target) and ![alt](target); the target has no spaces (that is how the docs write them).
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")
FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)


def _outside_fences(markdown: str) -> list[tuple[bool, str]]:
    """The text split into (is_prose, chunk) pairs: links inside code blocks are not links."""
    chunks: list[tuple[bool, str]] = []
    prose, start = True, 0
    for match in FENCE.finditer(markdown):
        chunks.append((prose, markdown[start : match.start()]))
        prose, start = not prose, match.start()
    chunks.append((prose, markdown[start:]))
    return chunks


def _targets(markdown: str) -> list[str]:
    return [
        m.group(2)
        for prose, chunk in _outside_fences(markdown)
        if prose
        for m in LINK.finditer(chunk)
    ]


def _local(target: str) -> str | None:
    """The path part of a relative link, or None for URLs, anchors and mail."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return None
    return target.split("#", 1)[0] or None


class _Site:
    def __init__(self, config: Any) -> None:
        self.docs = Path(config.docs_dir).resolve()
        self.root = Path(config.config_file_path).resolve().parent

    def repo_path(self, src_uri: str) -> Path:
        """Where a page of the site lives in the repository."""
        if src_uri.startswith(SOURCE + "/"):
            uri = src_uri[len(SOURCE) + 1 :]
            return self.root / (
                uri[:-3] if uri.endswith(".md") and not (self.root / uri).is_file() else uri
            )
        return self.docs / src_uri

    def uri(self, path: Path) -> str | None:
        """The site URI of a repository file, or None if the site cannot show it."""
        if path.is_relative_to(self.docs):
            return path.relative_to(self.docs).as_posix()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        relative = path.relative_to(self.root).as_posix()
        if path.suffix == ".md" or path.suffix in IMAGES:
            return f"{SOURCE}/{relative}"
        return f"{SOURCE}/{relative}.md"  # shown as a page with its code

    def resolve(self, src_uri: str, target: str) -> Path | None:
        local = _local(target)
        if local is None:
            return None
        base = self.repo_path(src_uri).parent
        return Path(posixpath.normpath((base / local).as_posix()))


def on_files(files: Files, config: Any) -> Files:
    site = _Site(config)
    pending = [f for f in files if f.is_documentation_page()]
    added: set[str] = set()
    while pending:
        page = pending.pop()
        text = (
            Path(page.abs_src_path).read_text(encoding="utf-8")
            if page.abs_src_path
            else (page.content_string)
        )
        for target in _targets(text):
            path = site.resolve(page.src_uri, target)
            if path is None or path.is_relative_to(site.docs):
                continue
            uri = site.uri(path)
            if uri is None or uri in added:
                continue
            added.add(uri)
            if uri.endswith(".md") and path.suffix != ".md":
                relative = path.relative_to(site.root).as_posix()
                code = path.read_text(encoding="utf-8")
                content = (
                    f"# `{relative}`\n\n````{LANGUAGES.get(path.suffix, 'text')}\n{code}\n````\n"
                )
                new = File.generated(config, uri, content=content)
            else:
                new = File.generated(config, uri, abs_src_path=str(path))
            files.append(new)
            if new.is_documentation_page():
                pending.append(new)
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    site = _Site(config)
    src_uri = page.file.src_uri

    def rewrite(match: re.Match[str]) -> str:
        target = match.group(2)
        path = site.resolve(src_uri, target)
        uri = site.uri(path) if path is not None else None
        if uri is None or files.get_file_from_path(uri) is None:
            return match.group(0)
        anchor = "#" + target.split("#", 1)[1] if "#" in target else ""
        relative = posixpath.relpath(uri, posixpath.dirname(src_uri) or ".")
        return f"{match.group(1)}{relative}{anchor}{match.group(3)}"

    return "".join(
        LINK.sub(rewrite, chunk) if prose else chunk for prose, chunk in _outside_fences(markdown)
    )
