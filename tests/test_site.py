"""The documentation site: it builds in strict mode, documents every public name, and a real
browser reads it without an error.

- ``mkdocs build --strict`` (``mkdocs.yml``) into a temporary directory: a broken link, a missing
  page or reference, or a docstring the reference cannot parse fails it.
- The same ``strict`` and ``validation`` settings fail a two-page site on one bad link: a page,
  an anchor, or a repository file outside ``docs/`` that does not exist.
- Every name in the ``__all__`` of every public module is in the site's inventory
  (``objects.inv``, written by mkdocstrings): under that module's path, or, for a class or
  function re-exported from another module, under any path that imports to the same object.
  Public: every package, every module directly under ``shakehands``, ``shakehands.protocol`` and
  ``shakehands.protocol.extensions``, and every module the reference renders; none with a ``_``
  in its dotted name. The modules inside ``shakehands.asyncio`` and ``shakehands.sync`` are their
  packages' implementation: the packages re-export what is public. Former homes of moved modules
  (:data:`FORMER_HOMES`) re-export their new home's names. A class or function of another
  library re-exported (``shakehands.asgi.ClientDisconnected`` is uvicorn's) is that library's
  to document. The reference shows only documented names (``show_if_no_docstring: false``;
  ``#:`` comments count), so a public name without a docstring fails here too (a small site
  built with the same options shows that it is left out), and every public method or property
  of a public class has a docstring, its own or the one it overrides. A new public
  name without a reference entry fails here; a new module page is
  one line, ``::: shakehands.module``, plus its nav entry in ``mkdocs.yml``.
- Headless Chromium, driven over the Chrome DevTools Protocol through shakehands' own blocking
  client, loads the home page, the tutorial and a reference page from a stdlib ``http.server``
  on 127.0.0.1: no console error, no uncaught exception, no failed load. ``SHAKEHANDS_SCREENSHOTS``
  names a directory to save a screenshot of each page in (to look at them; none is committed).

Needs the ``docs`` extra (``pip install -e '.[docs]'``): without mkdocs the tests skip, unless
``SHAKEHANDS_REQUIRE_DOCS=1`` (``.ci/steps/40-docs-site.sh`` sets it), when they fail.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import shakehands
from shakehands import sync

from .helpers import HOST

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = os.environ.get("SHAKEHANDS_REQUIRE_DOCS") == "1"
BUILD_TIMEOUT = 240.0
#: The pages the browser reads, with a CSS selector each must contain.
PAGES = {
    "home": ("", "article h1"),
    "tutorial": ("tutorial/", "article h1"),
    "reference": ("reference/asyncio/", "article .doc-object"),
}


def _missing(what: str) -> None:
    if REQUIRED:
        pytest.fail(f"{what} (SHAKEHANDS_REQUIRE_DOCS=1)")
    pytest.skip(what)


# ---------------------------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built with ``mkdocs build --strict`` into a temporary directory."""
    if importlib.util.find_spec("mkdocs") is None:
        _missing("mkdocs is not installed (pip install -e '.[docs]')")
    directory = tmp_path_factory.mktemp("site")
    source = str(Path(shakehands.__file__).resolve().parent.parent)
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(directory)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    return directory


def test_site_builds(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "tutorial" / "index.html").is_file()
    # Links that leave docs/ are served from the repository (docs/_site_hooks/repo_files.py).
    assert (site / "source" / "examples" / "minimal_client.py" / "index.html").is_file()


@pytest.mark.parametrize(
    "link",
    [
        "[a page that does not exist](nowhere.md)",
        "[an anchor that does not exist](index.md#nowhere)",
        "[a repository file that does not exist](../examples/nowhere.py)",
    ],
)
def test_strict_mode_fails_on_a_broken_link(link: str, tmp_path: Path) -> None:
    """The site's ``strict`` and ``validation`` settings, and its hook for links that leave
    ``docs/``, on a two-page site: one bad link fails the build."""
    if importlib.util.find_spec("mkdocs") is None:
        _missing("mkdocs is not installed (pip install -e '.[docs]')")
    import yaml  # mkdocs' own dependency

    ours = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[The other page](other.md)\n", encoding="utf-8")
    (docs / "other.md").write_text(f"# Other\n\n{link}\n", encoding="utf-8")
    (tmp_path / "examples").mkdir()  # a repository around docs/, as ours
    config = {
        "site_name": "strict",
        "docs_dir": "docs",
        "strict": ours["strict"],
        "validation": ours["validation"],
        "hooks": [str(ROOT / "docs" / "_site_hooks" / "repo_files.py")],
    }
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config), encoding="utf-8")

    def build() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--site-dir", str(tmp_path / "site")],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )

    result = build()
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    warnings = [line for line in output.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "other.md" in warnings[0], output
    (docs / "other.md").write_text("# Other\n\n[Home](index.md#home)\n", encoding="utf-8")
    assert build().returncode == 0  # the same site with a good link builds


# ---------------------------------------------------------------------------------------------
# Every public name is in the reference
# ---------------------------------------------------------------------------------------------


#: Modules kept where a module used to be, re-exporting the names of its new home.
FORMER_HOMES = {
    "shakehands.broadcast": ["shakehands.asyncio.broadcast"],
    "shakehands.hub": ["shakehands.pubsub", "shakehands.pubsub.backend"],
    "shakehands.protocol.deflate": ["shakehands.protocol.extensions.permessage_deflate"],
}
#: Parents whose modules are each public (the others' modules are public through re-exports).
PUBLIC_PARENTS = {"shakehands", "shakehands.protocol", "shakehands.protocol.extensions"}


def rendered_modules() -> set[str]:
    """The modules a ``::: name`` line of ``docs/reference/`` renders."""
    names = set()
    for page in (ROOT / "docs" / "reference").rglob("*.md"):
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.startswith("::: ") and is_module(line[4:].strip()):
                names.add(line[4:].strip())
    return names


def is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a name inside a module: its parent is not a package
        return False


def public_modules() -> list[str]:
    """The modules whose ``__all__`` the reference must document (see the docstring)."""
    packages = {
        info.name
        for info in pkgutil.walk_packages(shakehands.__path__, "shakehands.")
        if info.ispkg
    }
    names = (
        {"shakehands"}
        | packages
        | rendered_modules()
        | {
            info.name
            for parent in PUBLIC_PARENTS
            for info in pkgutil.iter_modules(importlib.import_module(parent).__path__, parent + ".")
        }
    )
    return sorted(
        name
        for name in names - set(FORMER_HOMES)
        if not any(part.startswith("_") for part in name.split("."))
    )


def inventory(site: Path) -> set[str]:
    from mkdocstrings import Inventory

    with (site / "objects.inv").open("rb") as file:
        return set(Inventory.parse_sphinx(file))


def resolve(identifier: str) -> object:
    """The object a dotted path names: the longest importable module, then attributes."""
    parts = identifier.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for part in parts[split:]:
                value = getattr(value, part)
        except AttributeError:
            return None
        return value
    return None


def undocumented(module: ModuleType, documented: set[str]) -> list[str]:
    """The names of ``module.__all__`` that the site does not document."""
    by_name: dict[str, list[str]] = {}
    for identifier in documented:
        by_name.setdefault(identifier.rsplit(".", 1)[-1], []).append(identifier)
    missing = []
    for name in getattr(module, "__all__", ()):
        if f"{module.__name__}.{name}" in documented:
            continue
        value = getattr(module, name)
        if getattr(value, "__module__", "shakehands").split(".")[0] != "shakehands":
            continue  # another library's class or function, re-exported
        if isinstance(value, ModuleType):
            if any(i.startswith(value.__name__ + ".") for i in documented):
                continue  # a module with a reference page of its own
        elif (inspect.isclass(value) or inspect.isroutine(value)) and any(
            resolve(identifier) is value for identifier in by_name.get(name, ())
        ):
            continue  # re-exported: documented where another module exports it
        missing.append(f"{module.__name__}.{name}")
    return missing


def test_every_public_name_is_documented(site: Path) -> None:
    documented = inventory(site)
    assert "shakehands.serve" in documented and "shakehands.sync.serve" in documented
    missing: list[str] = []
    for name in public_modules():
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # an optional dependency (the dev extra has them all)
            if (exc.name or "shakehands").split(".")[0] == "shakehands":
                raise
            continue
        missing += undocumented(module, documented)
    assert not missing, (
        "public names missing from the API reference (docs/reference/): add the module's page "
        "(one line: '::: shakehands.module') and its nav entry in mkdocs.yml:\n  "
        + "\n  ".join(missing)
    )


def test_public_modules() -> None:
    modules = public_modules()
    assert {
        "shakehands",
        "shakehands.asyncio",
        "shakehands.sync",
        "shakehands.protocol.config",
        "shakehands.pubsub",
        "shakehands.asgi",
    } <= set(modules)
    assert "shakehands.asyncio.base" not in modules and "shakehands.hub" not in modules


def test_former_homes_reexport_their_new_home() -> None:
    for old, new in FORMER_HOMES.items():
        old_module = importlib.import_module(old)
        homes = [importlib.import_module(name) for name in new]
        for name in old_module.__all__:
            value = getattr(old_module, name)
            assert any(getattr(home, name, None) is value for home in homes), (old, name)


def test_the_check_sees_a_missing_name(site: Path) -> None:
    """An undocumented name is reported (the check is not vacuous)."""
    fake = ModuleType("shakehands.not_documented")
    fake.__all__ = ["serve", "nothing_here"]  # type: ignore[attr-defined]
    fake.serve = shakehands.serve  # type: ignore[attr-defined]

    def nothing_here() -> None:
        """Not in the reference."""

    nothing_here.__module__ = fake.__name__
    fake.nothing_here = nothing_here  # type: ignore[attr-defined]
    assert undocumented(fake, inventory(site)) == ["shakehands.not_documented.nothing_here"]


def test_a_name_without_a_docstring_is_not_in_the_reference(tmp_path: Path) -> None:
    """The reference's own options (``show_if_no_docstring: false``) on a one-page site of a
    small package: a function, a class and a method without a docstring are left out of the
    inventory, so :func:`undocumented` reports such a name (the other half of the chain is
    :func:`test_the_check_sees_a_missing_name`)."""
    if importlib.util.find_spec("mkdocs") is None:
        _missing("mkdocs is not installed (pip install -e '.[docs]')")
    import yaml  # mkdocs' own dependency

    ours = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    (plugin,) = [p for p in ours["plugins"] if isinstance(p, dict) and "mkdocstrings" in p]
    python = plugin["mkdocstrings"]["handlers"]["python"]
    options = {k: v for k, v in python["options"].items() if k != "extensions"}
    assert options["show_if_no_docstring"] is False
    package = tmp_path / "src" / "undocumented_demo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        '"""A package with documented and undocumented names."""\n\n'
        '__all__ = ["documented", "bare", "Thing", "Bare"]\n\n\n'
        'def documented() -> None:\n    """Documented."""\n\n\n'
        "def bare() -> None:\n    pass\n\n\n"
        'class Thing:\n    """A documented class."""\n\n'
        '    def told(self) -> None:\n        """Documented."""\n\n'
        "    def untold(self) -> None:\n        pass\n\n\n"
        "class Bare:\n    pass\n",
        encoding="utf-8",
    )
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n::: undocumented_demo\n")
    config = {
        "site_name": "docstrings",
        "docs_dir": "docs",
        "strict": True,
        "plugins": [
            {"mkdocstrings": {"default_handler": "python", "handlers": {
                "python": {"paths": [str(tmp_path / "src")], "options": options}}}},
        ],
    }  # fmt: skip
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--site-dir", str(tmp_path / "site")],
        cwd=tmp_path,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    names = {name for name in inventory(tmp_path / "site") if name.startswith("undocumented_")}
    assert names == {
        "undocumented_demo",
        "undocumented_demo.documented",
        "undocumented_demo.Thing",
        "undocumented_demo.Thing.told",
    }


def test_public_methods_have_docstrings() -> None:
    """The reference shows a class's public methods and properties that have a docstring:
    each one has its own, or overrides a documented one (``asyncio.Protocol``'s callbacks),
    else it would be silently missing from the reference."""
    missing = []
    seen: set[type] = set()
    for name in public_modules():
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # an optional dependency (the dev extra has them all)
            if (exc.name or "shakehands").split(".")[0] == "shakehands":
                raise
            continue
        for value in map(functools.partial(getattr, module), getattr(module, "__all__", ())):
            if not inspect.isclass(value) or value in seen:
                continue
            seen.add(value)
            if value.__module__.split(".")[0] != "shakehands":
                continue
            for attribute, member in vars(value).items():
                if attribute.startswith("_"):
                    continue
                if isinstance(member, property):
                    documented = inspect.getdoc(member)
                elif inspect.isfunction(member) or isinstance(member, staticmethod | classmethod):
                    documented = inspect.getdoc(getattr(value, attribute))
                else:
                    continue
                if not documented:
                    missing.append(f"{value.__module__}.{value.__qualname__}.{attribute}")
    assert len(seen) > 50
    assert not missing, "public methods without a docstring:\n  " + "\n  ".join(missing)


# ---------------------------------------------------------------------------------------------
# A real browser
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def served(directory: Path) -> Iterator[str]:
    """``directory`` over HTTP on 127.0.0.1, with the stdlib's server: its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[str]:
    """Headless Chromium with its DevTools endpoint on 127.0.0.1: the endpoint's HTTP base."""
    exe = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    if exe is None:
        _missing("chromium is not installed (Debian package chromium; .ci/run installs it)")
    assert exe is not None
    process = subprocess.Popen(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port_file = profile / "DevToolsActivePort"  # Chromium writes its port there
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert process.poll() is None, f"chromium exited with {process.returncode}"
            assert time.monotonic() < deadline, "chromium opened no DevTools port in 60 s"
            time.sleep(0.1)
        yield f"http://{HOST}:{port_file.read_text().split()[0]}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


class DevTools:
    """A page of the browser over the Chrome DevTools Protocol (JSON over a WebSocket)."""

    def __init__(self, ws: sync.ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                assert "error" not in message, (method, message["error"])
                return dict(message["result"])
            self.events.append(message)

    def wait_for(self, method: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(event.get("method") == method for event in self.events):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {method} within {timeout} s"
            with contextlib.suppress(TimeoutError):
                self.events.append(json.loads(self.ws.recv(timeout=remaining)))

    def drain(self, seconds: float) -> None:
        """Collect the events of the next ``seconds`` (errors that come after the load)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                self.events.append(json.loads(self.ws.recv(timeout=remaining)))

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(f"console.{params['type']}: {params['args']}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"log: {params['entry']}")
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                found.append(f"failed load: {params}")
        return found


def page_target(devtools: str) -> str:
    """The WebSocket URL of the browser's first page."""
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"{devtools}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        pages = [t for t in targets if t.get("type") == "page"]
        if pages:
            return str(pages[0]["webSocketDebuggerUrl"])
        assert time.monotonic() < deadline, f"no page among {targets}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def browser_page(site: Path) -> Iterator[tuple[DevTools, str]]:
    with (
        served(site) as base,
        tempfile.TemporaryDirectory(prefix="shakehands-site-") as tmp,
        chromium(Path(tmp) / "profile") as devtools,
        sync.connect(page_target(devtools), max_message_size=None, compression=None) as ws,
    ):
        page = DevTools(ws)
        for domain in ("Runtime", "Log", "Page", "Network"):
            page.call(f"{domain}.enable")
        yield page, base


@pytest.mark.parametrize("name", list(PAGES))
def test_browser_reads_the_page(name: str, browser_page: tuple[DevTools, str]) -> None:
    page, base = browser_page
    path, selector = PAGES[name]
    page.events.clear()
    page.call("Page.navigate", url=base + path)
    page.wait_for("Page.loadEventFired", timeout=60)
    page.drain(1.0)
    errors = page.errors()
    found = page.call(
        "Runtime.evaluate",
        expression=f"[document.title, document.querySelectorAll({json.dumps(selector)}).length]",
        returnByValue=True,
    )["result"]["value"]
    screenshots = os.environ.get("SHAKEHANDS_SCREENSHOTS")
    if screenshots:
        shot = page.call("Page.captureScreenshot", format="png")
        Path(screenshots, f"site-{name}.png").write_bytes(base64.b64decode(shot["data"]))
    assert errors == [], f"{base + path}:\n" + "\n".join(errors)
    title, count = found
    assert "shakehands" in title, title
    assert count > 0, f"{base + path} has no {selector!r} (title {title!r})"
