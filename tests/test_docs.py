"""The documentation: README's shape, links and anchors that resolve, generated pages that are
current, recipes without figures, the README's quick start as the script runs it, the Python page's
examples, and the site built with warnings as errors."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from myst_parser.slugs import github_slugify

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MARKDOWN = [README, *sorted(DOCS.rglob("*.md")), *sorted((ROOT / "datasets").rglob("*.md"))]
MARKDOWN = [path for path in MARKDOWN if "_build" not in path.parts]
RECIPES = sorted((ROOT / "datasets").glob("*/config.yaml"))
# A measured figure: a date, a commit reference, or a score-like decimal (0.123).
FIGURE = re.compile(r"20\d\d-\d\d-\d\d|commit [0-9a-f]{7}|\b0\.\d{3,}|±")
RESULTS_BLOCK = re.compile(r"<!-- results: .*?<!-- end results -->", re.S)


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def anchors(path: Path) -> set[str]:
    """The heading anchors MyST (and the forge) give a Markdown page: GitHub's slugs, numbered
    when repeated, of each heading's text without its Markdown."""
    found: set[str] = set()
    in_fence = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        match = re.match(r"#{1,6} (.+)", line)
        if match and not in_fence:
            title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1)).replace("`", "")
            slug, index = github_slugify(title), 1
            unique = slug
            while unique in found:
                unique, index = f"{slug}-{index}", index + 1
            found.add(unique)
    return found


def links(path: Path) -> list[str]:
    """Relative link targets of a Markdown page, outside code fences and inline code."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", text)
            if not re.match(r"[a-z]+:", target)]


def unresolved(path: Path, target: str) -> str | None:
    """What is wrong with a link from PATH to TARGET, or None."""
    file, _, anchor = target.partition("#")
    destination = (path.parent / file).resolve() if file else path
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    if not destination.exists():
        return f"{shown}: {target} (no such file)"
    if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
        return f"{shown}: {target} (no such heading)"
    return None


def test_readme_is_short_with_its_sections_in_order():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150
    sections = [line[3:] for line in lines if line.startswith("## ")]
    assert sections == ["Install", "Quick start", "What you can do", "Results", "Documentation", "Help", "License"]


def test_readme_holds_no_figure_outside_its_headline_table():
    text = RESULTS_BLOCK.sub("", README.read_text())
    assert FIGURE.findall(text) == []
    headline = RESULTS_BLOCK.search(README.read_text()).group(0)
    assert 1 <= headline.count("\n| ") - 1 <= 8  # rows after the header


def test_every_relative_link_and_anchor_resolves():
    problems = [problem for path in MARKDOWN for target in links(path)
                if (problem := unresolved(path, target)) is not None]
    assert problems == []


def test_the_link_check_finds_a_broken_link_and_a_missing_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n## A `code` heading\n\n[ok](#a-code-heading) [gone](other.md) [no](#nowhere)\n")
    assert [unresolved(page, target) for target in links(page)] == [
        None, f"{page}: other.md (no such file)", f"{page}: #nowhere (no such heading)"]


def test_doc_links_in_the_code_resolve():
    """Reason lines and docstrings name pages as docs/PAGE.md#anchor: each must exist."""
    problems = []
    for source in sorted((ROOT / "segan").rglob("*.py")):
        for target in re.findall(r"(docs/[\w/.-]+\.md(?:#[\w-]+)?)", source.read_text()):
            problem = unresolved(README, target)
            if problem:
                problems.append(f"{source.relative_to(ROOT)}: {problem}")
    assert problems == []


def test_generated_references_and_tables_are_current():
    docs = load_script("docs")
    stale = [str(path.relative_to(ROOT)) for path, text in docs.generated().items()
             if not path.is_file() or path.read_text() != text]
    assert stale == [], "run python scripts/docs.py"


def test_summary_notes_name_cells_that_exist():
    # A note's {ROW.COLUMN} is replaced by that cell; one left as typed names no cell.
    docs = load_script("docs")
    assert re.findall(r"\{\d+\.[^}]*\}", docs.summary_table(docs.load_results(), headline=False)) == []


def test_a_flag_added_without_regenerating_makes_the_cli_reference_stale(monkeypatch):
    import segan.cli
    docs = load_script("docs")
    build = segan.cli.build_parser

    def with_a_new_flag():
        parser = build()
        parser.add_argument("--brand-new-flag", help="not in the reference")
        return parser

    monkeypatch.setattr(segan.cli, "build_parser", with_a_new_flag)
    assert "--brand-new-flag" in docs.cli_reference()
    assert docs.cli_reference() != (DOCS / "reference" / "cli.md").read_text()


def test_every_config_key_is_documented():
    docs = load_script("docs")
    reference = docs.config_reference()
    undocumented = [line.split("`")[1] for line in reference.splitlines() if line.startswith("| `")
                    and line.rstrip().endswith("|  |")]
    assert undocumented == []


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.parent.name)
def test_recipes_hold_provenance_only(recipe):
    comments = [line for line in recipe.read_text().splitlines() if line.lstrip().startswith("#")]
    assert len(comments) <= 12
    assert FIGURE.findall("\n".join(comments)) == []
    name = recipe.parent.name
    assert f"# Docs: docs/datasets/{name}.md" in comments
    for page in re.findall(r"docs/[\w/.-]+\.md", "\n".join(comments)):
        assert (ROOT / page).is_file(), page
    page = (DOCS / "datasets" / f"{name}.md").read_text()
    assert f"```{{literalinclude}} ../../datasets/{name}/config.yaml" in page  # page and file cannot drift


def test_the_recipe_check_finds_a_figure():
    assert FIGURE.findall("# 0.8955 Dice in 30 minutes (2026-12-06, commit b5735fc)") == [
        "0.8955", "2026-12-06", "commit b5735fc"]


def test_benchmark_pages_type_no_figure_outside_generated_tables():
    for page in sorted((DOCS / "benchmarks").glob("*.md")):
        if page.name == "archive.md":
            continue
        text = re.sub(r"`[^`\n]*`", "", RESULTS_BLOCK.sub("", page.read_text()))
        assert re.findall(r"\b0\.\d{3,}", text) == [], page.name


def test_readme_quickstart_is_what_the_script_runs():
    def commands(text: str) -> list[str]:
        joined = text.replace("\\\n", " ")
        return [" ".join(line.split()) for line in joined.splitlines() if line.strip().startswith("segan ")]

    script = commands((ROOT / "scripts" / "quickstart.sh").read_text())
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert len(script) == 5 and commands(section) == script


def test_python_page_examples_run_as_written(tmp_path, monkeypatch):
    """Every Python block of docs/how-to/python.md, in order, in one namespace, in an empty folder."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "how-to" / "python.md").read_text(), re.S)
    assert len(blocks) == 5
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/how-to/python.md", "exec"), namespace)
    # The page's own variables: one run, scored three ways, gives one figure.
    dice = namespace["result"].best_val_dice
    assert round(namespace["scores"].report["headline"]["dice"], 4) == dice
    assert round(namespace["on_validation"].report["headline"]["dice"], 4) == dice
    assert namespace["mask"].shape == (100, 120) and namespace["summary"].written == 4
    assert namespace["page"] == Path("weights/python-demo/report/index.html") and namespace["page"].is_file()


@pytest.mark.heavy
def test_the_site_builds_with_warnings_as_errors(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
                           str(tmp_path / "html")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "html" / "reference" / "api.html").read_text().count('class="sig-name descname"') >= 10
