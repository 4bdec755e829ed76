"""The site's JavaScript from pinned npm tarballs (checked, unpacked, served from _static/), the Colab badge
drawn in the page, and each inline script once: on stand-in tarballs and a one-page Sphinx build."""

import base64
import hashlib
import io
import tarfile
from pathlib import Path

import pytest
import yaml

from nclab.course import site_assets
from nclab.course.site_assets import Package

ROOT = Path(__file__).resolve().parents[1]


def _tarball(path: Path, files: dict[str, str]) -> str:
    """An npm-style tarball (everything under package/) at ``path``; its sha512 as npm writes it."""
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo("package/" + name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


@pytest.fixture
def registry(tmp_path):
    """Two stand-in packages, a ``pack`` that serves their tarballs and counts its calls."""
    store = tmp_path / "registry"
    store.mkdir()
    math = _tarball(store / "mathjax.tgz", {"es5/tex-chtml.js": "/* tex */", "es5/output/chtml/fonts/a.woff": "font",
                                            "es5/tex-svg.js": "/* not served */", "LICENSE": "Apache"})  # fmt: skip
    widgets = _tarball(store / "widgets.tgz", {"dist/embed-amd.js": "/* amd */", "dist/x.woff2": "font",
                                               "dist/embed.js": "/* not served */"})  # fmt: skip
    packages = (
        Package(
            "mathjax",
            "3.2.2",
            math,
            "Apache-2.0",
            {
                "es5/tex-chtml.js": "mathjax/tex-chtml.js",
                "es5/output/chtml/*": "mathjax/output/chtml/",
                "LICENSE": "mathjax/LICENSE",
            },
        ),  # fmt: skip
        Package(
            "@jupyter-widgets/html-manager",
            "1.0.15",
            widgets,
            "BSD-3-Clause",
            {"dist/embed-amd.js": "widgets/embed-amd.js", "dist/*.woff2": "widgets/"},
        ),  # fmt: skip
    )
    calls = []

    def pack(spec, into):
        calls.append(spec)
        source = store / ("mathjax.tgz" if spec.startswith("mathjax@") else "widgets.tgz")
        (into / source.name).write_bytes(source.read_bytes())
        return into / source.name

    return packages, pack, calls


def _files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def test_install_unpacks_only_the_pinned_files_once(tmp_path, registry):
    packages, pack, calls = registry
    folder = site_assets.install(tmp_path / "site-js", packages, pack)
    assert _files(folder) == {"mathjax/tex-chtml.js", "mathjax/output/chtml/fonts/a.woff", "mathjax/LICENSE",
                              "widgets/embed-amd.js", "widgets/x.woff2", "site-js.txt"}  # fmt: skip
    assert (folder / "mathjax" / "tex-chtml.js").read_text() == "/* tex */"
    assert (folder / "site-js.txt").read_text().splitlines()[0] == f"mathjax@3.2.2 Apache-2.0 {packages[0].integrity}"
    assert calls == ["mathjax@3.2.2", "@jupyter-widgets/html-manager@1.0.15"]
    site_assets.install(folder, packages, pack)  # up to date: no download
    assert len(calls) == 2 and not site_assets.stale(folder, packages)
    assert site_assets.stale(folder, packages[:1])  # another set of pins: stale, installed again whole
    site_assets.install(folder, packages[:1], pack)
    assert len(calls) == 3 and not (folder / "widgets").exists()


def test_a_tarball_that_is_not_the_pinned_one_is_refused(tmp_path, registry):
    packages, pack, _ = registry
    forged = (Package("mathjax", "3.2.2", "sha512-" + "A" * 86 + "==", "Apache-2.0", packages[0].files),)
    with pytest.raises(ValueError, match="mathjax@3.2.2: the tarball's sha512 is sha512-.* not the pinned"):
        site_assets.install(tmp_path / "site-js", forged, pack)
    assert not (tmp_path / "site-js").exists()
    wrong_files = (
        Package("mathjax", "3.2.2", packages[0].integrity, "Apache-2.0", {"es5/gone.js": "mathjax/gone.js"}),
    )
    with pytest.raises(ValueError, match="has no es5/gone.js"):
        site_assets.install(tmp_path / "site-js", wrong_files, pack)


def test_the_pins_and_the_book_config_agree():
    destinations = {target for package in site_assets.PACKAGES for target in package.files.values()}
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["sphinx"]
    assert "nclab.course.site_assets" in config["extra_extensions"]
    named = [config["config"]["mathjax_path"], *config["config"]["nb_ipywidgets_js"]]
    assert named == ["mathjax/tex-chtml.js", "widgets/require.js", "widgets/embed-amd.js"]
    assert set(named) <= destinations  # each a single file of a pinned package
    for package in site_assets.PACKAGES:
        digest = base64.b64decode(package.integrity.removeprefix("sha512-"))
        assert package.integrity.startswith("sha512-") and len(digest) == 64, package.spec
        assert all(target.startswith(("mathjax/", "widgets/")) for target in package.files.values())


def test_the_badge_is_an_svg_of_its_own_size():
    svg = base64.b64decode(site_assets.BADGE_URI.removeprefix("data:image/svg+xml;base64,")).decode()
    assert svg.startswith("<svg") and 'width="117"' in svg and 'height="20"' in svg and "Colab" in svg


def _build(tmp_path, folder, **config):
    """A one-page Sphinx site with math, the Colab badge and an inline script added twice; its HTML."""
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace

    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    (source / "conf.py").write_text(
        "def add(app, env, docnames):  # as sphinx-thebe adds its configuration: it lands twice\n"
        "    app.add_js_file(None, body='const once = 1')\n"
        "def widgets(app, pagename, *args):  # as myst-nb does on a page with saved widgets\n"
        "    if pagename == 'index':\n"
        "        app.add_js_file('widgets/require.js')\n"
        "        app.add_js_file('widgets/embed-amd.js')\n"
        "def setup(app):\n"
        "    app.connect('env-before-read-docs', add)\n"
        "    app.connect('html-page-context', widgets)\n"
    )
    (source / "index.rst").write_text(
        "Page\n====\n\nInline :math:`a^2 + b^2`.\n\n"
        ".. image:: https://colab.research.google.com/assets/colab-badge.svg\n"
        "   :target: https://colab.research.google.com/github/o/n/blob/main/student/x.ipynb\n\n"
        ".. toctree::\n   :hidden:\n\n   other\n"
    )
    (source / "other.rst").write_text("Other\n=====\n\nNo widget here.\n")
    overrides = {"extensions": ["sphinx.ext.mathjax", "nclab.course.site_assets"], "nclab_site_js": str(folder),
                 "mathjax_path": "mathjax/tex-chtml.js", **config}  # fmt: skip
    with docutils_namespace():  # each app registers its nodes afresh
        app = Sphinx(str(source), str(source), str(tmp_path / "out"), str(tmp_path / "doctrees"), "html",
                     confoverrides=overrides, status=None, warning=io.StringIO(), warningiserror=True)  # fmt: skip
        app.build()
    return (tmp_path / "out" / "index.html").read_text(encoding="utf-8")


def test_a_built_page_serves_mathjax_itself_and_draws_the_badge(tmp_path, registry, monkeypatch):
    packages, pack, _ = registry
    monkeypatch.setattr(site_assets, "PACKAGES", packages)  # the pins the build checks the folder against
    folder = site_assets.install(tmp_path / "site-js", packages, pack)
    html = _build(tmp_path, folder)
    assert 'src="_static/mathjax/tex-chtml.js' in html and "cdn.jsdelivr" not in html
    assert (tmp_path / "out" / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "a.woff").is_file()
    assert 'src="data:image/svg+xml;base64,' in html and "assets/colab-badge.svg" not in html
    assert 'href="https://colab.research.google.com/github/o/n/blob/main/student/x.ipynb"' in html  # the link stays
    assert html.count("const once = 1") == 1
    config, manager = html.index('"@jupyter-widgets/html-manager/dist"'), html.index("_static/widgets/require.js")
    assert config < manager and "mathjax.Hub = {Queue" in html  # RequireJS learns where the fonts are before it loads
    other = (tmp_path / "out" / "other.html").read_text(encoding="utf-8")
    assert "html-manager" not in other and other.count("const once = 1") == 1  # no widget manager, no script


def test_the_build_stops_without_the_javascript_or_with_a_remote_script(tmp_path, registry, monkeypatch):
    from sphinx.errors import ExtensionError

    with pytest.raises(ExtensionError, match="missing or out of date.*run `make book`"):
        _build(tmp_path, tmp_path / "nowhere")
    packages, pack, _ = registry
    folder = site_assets.install(tmp_path / "site-js", packages, pack)
    with pytest.raises(ExtensionError, match="missing or out of date"):  # installed, but not the pinned packages
        _build(tmp_path, folder)
    monkeypatch.setattr(site_assets, "PACKAGES", packages)
    with pytest.raises(ExtensionError, match="from the network.*cdn.example/tex-chtml.js"):
        _build(tmp_path, folder, mathjax_path="https://cdn.example/tex-chtml.js")
