"""Sphinx configuration of the art-purifiers documentation.

Build (warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# This tree's package first, whatever else is installed: the gallery and autodoc must show this checkout.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import art_purifiers  # noqa: E402

# -- Project -------------------------------------------------------------------------------------------
project = "art-purifiers"
author = "art-purifiers developers"
copyright = "art-purifiers developers, MIT licence"
version = art_purifiers.__version__
release = art_purifiers.__version__
language = "en"

# -- General -------------------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# docs/results/ holds the tables that the experiment files of experiments/ write (Markdown beside the JSON). They
# are fragments for results.md (``{include}`` works on excluded files), not pages of their own; without this
# exclusion Sphinx warns that they are in no toctree.
exclude_patterns = ["_build", "_generated", "results/*.md", "results/*/*.md", "Thumbs.db", ".DS_Store"]

# MyST: heading anchors let pages link to sections, e.g. ``evaluating.md#command-line``.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- Autodoc -------------------------------------------------------------------------------------------
# Members are documented in the module that defines them ("ignore-module-all": a package's re-exports are
# not documented twice). "inherited-members" is deliberately not set: ART's inherited members
# (``__call__``, ``estimate_gradient``, ``fit``, ``set_params``, ...) are left to ART's documentation, so
# their docstrings are never parsed here and cannot cause warnings.
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
    "ignore-module-all": True,
}
# An override without a docstring of its own (``nn.Module.forward`` in the models, ``purify`` in a defence)
# is left out rather than shown with the parent's docstring (torch's generic ``forward`` text, or the
# contract already documented on PurifierPreprocessor).
autodoc_inherit_docstrings = False
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_member_order = "bysource"
add_module_names = False
python_use_unqualified_type_names = True

# -- HTML ----------------------------------------------------------------------------------------------
if importlib.util.find_spec("sphinx_rtd_theme") is not None:
    html_theme = "sphinx_rtd_theme"
else:
    html_theme = "alabaster"
html_title = f"art-purifiers {release}"
html_static_path: list[str] = []
html_show_sourcelink = True

# -- Gallery -------------------------------------------------------------------------------------------
# sphinx-gallery runs every script of examples/ (not only plot_*.py) at build time with no arguments, on
# the CPU, and renders its text, code, printed output and figures into auto_examples/ (generated, not
# committed). The examples' no-argument runs are sized to take well under a minute each on one core.
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"\.py$",
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "download_all_examples": False,
    "show_signature": False,
    "min_reported_time": 1,
}


# -- Figures of the recorded results -------------------------------------------------------------------
#: The figures drawn from the recorded tables (one source for the build and for readers, who see the file on the
#: Results page): each ``[[figure]]`` becomes one ``art-purifiers plot`` command, run in this process.
FIGURES = ROOT / "docs" / "results" / "figures.toml"
_FIGURE_KEYS = {"output", "kind", "tables", "eps", "defences"}


def figure_commands(path: Path = FIGURES) -> list[list[str]]:
    """The arguments of ``art-purifiers plot`` for every ``[[figure]]`` of ``path``: its tables are
    ``docs/results/NAME.json``, its output goes to ``docs/_generated/``."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib

    commands = []
    for figure in tomllib.loads(path.read_text(encoding="utf-8"))["figure"]:
        unknown = set(figure) - _FIGURE_KEYS
        if unknown:
            raise ValueError(f"{path}: a figure has unknown keys {sorted(unknown)}; allowed: {sorted(_FIGURE_KEYS)}.")
        arguments = ["plot", *(str(ROOT / "docs" / "results" / f"{name}.json") for name in figure["tables"]),
                     "--kind", figure["kind"], "--output", str(ROOT / "docs" / "_generated" / figure["output"])]
        arguments += ["--eps", figure["eps"]] if "eps" in figure else []
        for defence in figure.get("defences", []):
            arguments += ["--defence", defence]
        commands.append(arguments)
    return commands


def draw_result_figures(app) -> None:
    """Draw the figures of :data:`FIGURES` into docs/_generated/ before the pages are read."""
    from art_purifiers.cli import main

    (ROOT / "docs" / "_generated").mkdir(exist_ok=True)
    for arguments in figure_commands():
        if main(arguments) != 0:
            raise RuntimeError(f"art-purifiers {' '.join(arguments)} failed.")


def write_methods_table(app) -> None:
    """Write the methods table and the toctree of their pages, from the method registry, into
    docs/_generated/methods.md (included by docs/methods.md)."""
    from art_purifiers.catalogue import methods_markdown

    (ROOT / "docs" / "_generated").mkdir(exist_ok=True)
    (ROOT / "docs" / "_generated" / "methods.md").write_text(methods_markdown(), encoding="utf-8")


def setup(app) -> None:
    app.connect("builder-inited", write_methods_table)
    app.connect("builder-inited", draw_result_figures)
