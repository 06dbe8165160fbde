"""Sphinx configuration: MyST Markdown sources, the furo theme, autodoc for the Python API.
Build with `bash scripts/docs.sh` (warnings are errors)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import segan  # noqa: E402

project = "segan"
author = "the segan developers"
copyright = "the segan developers (MIT licence)"
release = version = segan.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "benchmarks/results"]
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]
html_theme = "furo"
html_title = f"segan {release}"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
default_role = "code"  # `name` in docstrings reads as code, as on the forge
