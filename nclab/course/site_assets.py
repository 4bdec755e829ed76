"""The course site with no network: the JavaScript its pages run is served by the site itself, and no page
fetches an image from elsewhere.

MathJax 3 (the equations), RequireJS and the Jupyter widget manager (the notebooks' explorers, shown frozen
with their last figure) come from npm at the versions and sha512 pinned in :data:`PACKAGES`.
``make book`` first runs ``python -m nclab.course.site_assets install``, which downloads each tarball with npm,
checks it against its pin and unpacks the files the site needs into ``.venv/share/nclab-site``
(:func:`default_folder`); nothing happens when that folder already holds the pinned versions.

The book build loads this module as a Sphinx extension (``sphinx.extra_extensions`` in ``_config.yml``). It

* adds that folder to ``html_static_path``, so its files land in the site's ``_static/``, and stops the
  build when the folder is missing or stale, or when ``mathjax_path`` or ``nb_ipywidgets_js`` (set in
  ``_config.yml``) names a script that is not in it, a remote one included;
* draws the notebooks' *Open in Colab* badge in the page (an inline SVG) instead of fetching it from Colab:
  the link around it is unchanged;
* removes the second copy of an inline script that an extension adds twice (sphinx-thebe's configuration,
  whose repeated ``const`` stops every page with a syntax error in the browser);
* adds :data:`WIDGETS_SCRIPT` to each page that loads the widget manager: it tells RequireJS where the
  manager's icon fonts are (beside it in ``_static/widgets/``, not under the page), and gives MathJax 3
  the one call of MathJax 2 that the widgets make to typeset a label (``MathJax.Hub.Queue``), which would
  otherwise throw.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

__all__ = [
    "Package",
    "PACKAGES",
    "default_folder",
    "install",
    "stale",
    "COLAB_BADGE",
    "BADGE_URI",
    "WIDGETS_SCRIPT",
    "setup",
]


@dataclass(frozen=True)
class Package:
    """An npm package the site serves. ``files``: pattern of a path in the tarball (under ``package/``, ``*``
    matching across folders) → where it goes under ``_static/``: the pattern's text before its first ``*``
    is replaced by the destination (a pattern without ``*`` names one file, its destination the file)."""

    name: str  # npm's name
    version: str  # exact: npm versions never change once published
    integrity: str  # the tarball's sha512, base64, as npm prints it ("sha512-…")
    license: str
    files: dict[str, str]

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


PACKAGES = (
    Package(
        "mathjax",
        "3.2.2",
        "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        "Apache-2.0",
        {
            "es5/tex-chtml.js": "mathjax/tex-chtml.js",  # TeX in, HTML and CSS out, the fonts below
            "es5/input/tex/*": "mathjax/input/tex/",  # the TeX extensions autoload fetches (\boldsymbol, …)
            "es5/output/chtml/*": "mathjax/output/chtml/",  # the fonts (woff-v2)
            "es5/ui/*": "mathjax/ui/",  # the right-click menu
            "es5/a11y/*": "mathjax/a11y/",  # its accessibility options,
            "es5/sre/*": "mathjax/sre/",  # and the speech they load on demand
            "LICENSE": "mathjax/LICENSE",
        },
    ),
    Package(
        "requirejs",
        "2.3.8",
        "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
        "MIT",
        {"require.js": "widgets/require.js"},  # the widget manager is an AMD module
    ),
    Package(
        "@jupyter-widgets/html-manager",  # renders ipywidgets 8's saved widget state in a static page
        "1.0.15",
        "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        "BSD-3-Clause",
        {
            "dist/embed-amd.js": "widgets/embed-amd.js",
            **{f"dist/*.{kind}": "widgets/" for kind in ("woff2", "woff", "ttf", "eot", "svg")},  # its icon fonts
        },
    ),
)

WIDGET_MANAGER = "embed-amd.js"  # the script of PACKAGES that renders saved widgets
WIDGETS_SCRIPT = """\
var require = {paths: {"@jupyter-widgets/html-manager/dist": new URL(
  (document.documentElement.dataset.content_root || "") + "_static/widgets", document.baseURI).href}};
document.addEventListener("DOMContentLoaded", () => {
  const mathjax = window.MathJax;
  if (mathjax && mathjax.startup && !mathjax.Hub) {
    mathjax.Hub = {Queue: task => {
      const element = task && task[2];
      if (element) mathjax.startup.promise.then(() => mathjax.typesetPromise([element])).catch(() => {});
    }};
  }
});"""
RECORD = "site-js.txt"  # in the folder (and so in _static/): what was installed, one package a line
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
_BADGE_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20" role="img" aria-label="Open in Colab">'
    '<rect width="117" height="20" rx="3" fill="#555"/><rect x="53" width="64" height="20" rx="3" fill="#f9ab00"/>'
    '<rect x="53" width="4" height="20" fill="#f9ab00"/><g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif"'
    ' font-size="11" text-anchor="middle"><text x="27" y="14">Open in</text><text x="85" y="14">Colab</text></g></svg>'
)
BADGE_URI = "data:image/svg+xml;base64," + base64.b64encode(_BADGE_SVG.encode()).decode()


def default_folder() -> Path:
    """Where ``install`` puts the site's JavaScript: ``share/nclab-site`` of the running environment (the
    course's ``.venv``), beside the Python packages pinned in requirements.txt."""
    return Path(sys.prefix) / "share" / "nclab-site"


def _record(packages) -> str:
    return "".join(f"{p.spec} {p.license} {p.integrity}\n" for p in packages)


def stale(folder: str | Path, packages=PACKAGES) -> bool:
    """True unless ``folder`` holds exactly the pinned ``packages`` (its record says so)."""
    record = Path(folder) / RECORD
    return not record.is_file() or record.read_text(encoding="utf-8") != _record(packages)


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def _npm_pack(spec: str, into: Path) -> Path:
    """Download ``spec``'s tarball into ``into`` with npm, the registry's own client; its path."""
    if shutil.which("npm") is None:
        raise FileNotFoundError(
            f"npm not found: the site serves {spec} from npm's package. Install Node.js and npm "
            "(Debian: apt-get install nodejs npm), then run make book again."
        )
    done = subprocess.run(
        ["npm", "pack", spec, "--pack-destination", str(into), "--json"], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"npm pack {spec} failed (is the npm registry reachable?):\n{done.stderr.strip()}")
    return into / json.loads(done.stdout)[0]["filename"]


def _target(member: str, files: dict[str, str]) -> str | None:
    for pattern, destination in files.items():
        if fnmatch(member, pattern):
            return destination + member[len(pattern.split("*")[0]) :] if "*" in pattern else destination
    return None


def install(folder: str | Path | None = None, packages=PACKAGES, pack: Callable[[str, Path], Path] = _npm_pack) -> Path:
    """Unpack the site's files of every package into ``folder`` (default :func:`default_folder`), replaced
    whole, after checking each tarball's sha512 against its pin; nothing to do when the folder is up to
    date. ``pack``: (npm spec, folder) → the downloaded tarball (tests pass a stub). Returns the folder."""
    folder = Path(folder) if folder is not None else default_folder()
    if not stale(folder, packages):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        scratch, staged = Path(scratch), Path(scratch) / "site-js"
        for package in packages:
            tarball = pack(package.spec, scratch)
            if (found := _integrity(tarball)) != package.integrity:
                raise ValueError(f"{package.spec}: the tarball's sha512 is {found}, not the pinned {package.integrity}")
            with tarfile.open(tarball) as archive:
                wanted = {}
                for member in archive.getmembers():
                    name = member.name.removeprefix("package/")
                    if member.isfile() and (target := _target(name, package.files)):
                        wanted[target] = member
                missing = [pattern for pattern in package.files if not any(fnmatch(m.name, "package/" + pattern)
                                                                            for m in wanted.values())]  # fmt: skip
                if missing:
                    raise ValueError(f"{package.spec} has no {', '.join(missing)}: the pin and its files disagree")
                for target, member in wanted.items():
                    if ".." in Path(target).parts:  # a pinned tarball never has one; never write outside
                        raise ValueError(f"{package.spec}: {member.name} would be written outside {folder}")
                    (staged / target).parent.mkdir(parents=True, exist_ok=True)
                    (staged / target).write_bytes(archive.extractfile(member).read())
        (staged / RECORD).write_text(_record(packages), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        staged.rename(folder)
    return folder


# --- the Sphinx extension -------------------------------------------------------------------------------


def _serve(app) -> None:
    """builder-inited: the folder joins html_static_path; every script the config names must be in it."""
    from sphinx.errors import ExtensionError

    folder = Path(app.config.nclab_site_js or default_folder())
    if stale(folder, PACKAGES):
        raise ExtensionError(
            f"the site's JavaScript is missing or out of date in {folder}: run `make book` (it runs "
            "`python -m nclab.course.site_assets install`), or that command yourself, then build again."
        )
    named = [app.config.mathjax_path, *getattr(app.config, "nb_ipywidgets_js", {})]
    absent = [script for script in named if "://" in script or not (folder / script).is_file()]
    if absent:
        raise ExtensionError(
            f"scripts the pages would load from the network or that {folder} lacks: {', '.join(absent)}; "
            "point mathjax_path and nb_ipywidgets_js in _config.yml at files of nclab.course.site_assets.PACKAGES."
        )
    app.config.html_static_path.append(str(folder))


def _draw_badges(app, doctree) -> None:
    """doctree-read: the Colab badge image becomes the inline SVG :data:`BADGE_URI` (its link is kept)."""
    from docutils import nodes

    for image in doctree.findall(nodes.image):
        if image["uri"] == COLAB_BADGE:
            image["uri"] = BADGE_URI


def _page_scripts(app, pagename, templatename, context, doctree) -> None:
    """html-page-context: :data:`WIDGETS_SCRIPT` before RequireJS where the widget manager is loaded, then
    each script once, the first of identical ones (same file or same inline body)."""
    scripts = context.get("script_files", [])
    if any(str(script.filename or "").endswith(WIDGET_MANAGER) for script in scripts):
        app.add_js_file(None, body=WIDGETS_SCRIPT, priority=499)  # RequireJS comes at 500
    seen, kept = set(), []
    for script in context.get("script_files", []):
        attributes = sorted((name, str(value)) for name, value in script.attributes.items())
        key = repr((str(script.filename or ""), attributes))  # an inline script's file is None or ""
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app) -> dict:
    app.add_config_value("nclab_site_js", "", "html")  # the folder; "" = default_folder()
    app.connect("builder-inited", _serve)
    app.connect("doctree-read", _draw_badges, priority=400)  # before the image collector (500)
    app.connect("html-page-context", _page_scripts, priority=900)  # after the extensions that add scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    if sys.argv[1:2] != ["install"] or len(sys.argv) > 3:
        sys.exit("usage: python -m nclab.course.site_assets install [FOLDER]   (default: <venv>/share/nclab-site)")
    where = install(sys.argv[2] if len(sys.argv) > 2 else None)
    print(f"site JavaScript ({', '.join(p.spec for p in PACKAGES)}) in {where}")
