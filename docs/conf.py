"""Sphinx configuration of the art-purifiers documentation.

Build (warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib.util

import art_purifiers

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
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# docs/results/ holds the scripts behind results.md and the tables they write (``--output``). The tables
# are fragments for results.md (``{include}`` works on excluded files), not pages of their own; without
# this exclusion Sphinx warns that they are in no toctree.
exclude_patterns = ["_build", "results/*.sh", "results/*.md", "results/*/*.md", "Thumbs.db", ".DS_Store"]

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
