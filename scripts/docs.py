"""Writes the generated parts of the documentation, or checks that they are current.

    python scripts/docs.py           # regenerate every generated page and table in place
    python scripts/docs.py --check   # exit 1, naming each stale file, if a fresh generation differs

Generated, never typed by hand:
- docs/reference/cli.md: every command's `--help`, from segan's argparse parser;
- docs/reference/config.md: every config key with its type, default and docstring, from the schema;
- the table of `segan plan`'s rules in docs/explanation/plan.md, from their docstrings;
- the tables between `<!-- results: NAME/TABLE -->` and `<!-- end results -->` in docs/benchmarks/*.md,
  the summary table of docs/benchmarks/index.md and the README's headline table, from the result
  files in docs/benchmarks/results/*.json that the benchmark scripts write (`--publish`).

A result file (`scripts/benchkit.py`'s `publish` writes it) holds a title, its tables and its summary.
Each table is {name, command, machine, date, commit (of the code measured), source (optional: the archive
section it was first recorded in), columns: [{key, label, format}], rows}, so every table says how, where
and when it was measured. Summary items {what, table, row, column, note, budget, headline} are the rows
of the benchmarks index; those with `headline` are the README's table. A note names other cells of
its table as {ROW.COLUMN}, so it types no figure either.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = Path(os.environ.get("SEGAN_BENCH_RESULTS", DOCS / "benchmarks" / "results"))  # as benchkit's
BLOCK = re.compile(r"(<!-- results: (?P<name>[\w./*-]+) -->\n)(?P<body>.*?)(<!-- end results -->)", re.S)
HELP_WIDTH = "100"  # argparse wraps help to $COLUMNS: fixed, so the reference is the same everywhere


# --- result files -> Markdown tables ---------------------------------------------------------------

# The order of the benchmarks index and the README's table: what a user asks first, first.
ORDER = ["plan", "accuracy", "semi", "synth", "levers", "quickstart", "train", "profile", "predict", "threads", "data", "metrics"]


def load_results() -> dict[str, dict]:
    """Every result file, by its name (the file's stem), in `ORDER` (others after, by name)."""
    paths = sorted(RESULTS.glob("*.json"), key=lambda path: (ORDER.index(path.stem) if path.stem in ORDER
                                                               else len(ORDER), path.stem))
    return {path.stem: json.loads(path.read_text()) for path in paths}


def cell(value, fmt: str | None) -> str:
    if value is None:
        return ""
    if fmt and isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt.format(value)
    return str(value)


def markdown_table(table: dict) -> str:
    columns = table["columns"]
    lines = ["| " + " | ".join(column["label"] for column in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in table["rows"]:
        lines.append("| " + " | ".join(cell(row.get(column["key"]), column.get("format")) for column in columns)
                     + " |")
    return "\n".join(lines)


def find_table(results: dict[str, dict], reference: str) -> tuple[dict, dict]:
    """`NAME/TABLE` -> (the result file, the table)."""
    name, _, table_name = reference.partition("/")
    if name not in results:
        raise KeyError(f"no result file docs/benchmarks/results/{name}.json (named by '{reference}')")
    for table in results[name]["tables"]:
        if table["name"] == table_name:
            return results[name], table
    raise KeyError(f"docs/benchmarks/results/{name}.json has no table '{table_name}'")


def results_block(results: dict[str, dict], reference: str) -> str:
    """A table with the line that says how, where and when it was measured."""
    if reference == "summary":
        return summary_table(results, headline=False) + "\n"
    if reference == "headline":
        return summary_table(results, headline=True) + "\n"
    if reference.endswith("/*"):  # every table of the file, one after another
        name = reference[:-2]
        if name not in results:
            return f"Not measured yet: no docs/benchmarks/results/{name}.json.\n"
        return "\n".join(results_block(results, f"{name}/{table['name']}") for table in results[name]["tables"])
    _, table = find_table(results, reference)
    provenance = f"Measured on {table['machine']}, {table['date']}"
    if table.get("commit"):
        provenance += f", code of {table['commit']}"
    if table.get("source"):
        provenance += f" (first recorded in [the archive]({table['source']}))"
    return f"{provenance}:\n\n{markdown_table(table)}\n\nReproduce with `{table['command']}`.\n"


def summary_value(table: dict, item: dict) -> str:
    column = next(column for column in table["columns"] if column["key"] == item["column"])
    return cell(table["rows"][item["row"]].get(item["column"]), column.get("format"))


def summary_table(results: dict[str, dict], headline: bool) -> str:
    """The benchmarks index (every summary item) or the README's headline table (those marked headline)."""
    prefix = "docs/benchmarks/" if headline else ""
    header = ("| result | figure | time budget | machine | page |\n|---|---|---|---|---|" if headline else
              "| what was measured | current figure | machine | command |\n|---|---|---|---|")
    lines = [header]
    for name, result in results.items():
        for item in result.get("summary", []):
            if headline and not item.get("headline"):
                continue
            _, table = find_table(results, f"{name}/{item['table']}")
            note = re.sub(r"\{(\d+)\.([\w.]+)\}", lambda m: summary_value(table, {"row": int(m.group(1)),
                                                                         "column": m.group(2)}), item.get("note", ""))
            figure = summary_value(table, item) + (f" {note}" if note else "")
            link = f"[{result['title']}]({prefix}{name}.md)"
            if headline:
                lines.append(f"| {item['what']} | {figure} | {item.get('budget', '')} | {table['machine']} | {link} |")
            else:
                lines.append(f"| {item['what']} ({link}) | {figure} | {table['machine']} | `{table['command']}` |")
    return "\n".join(lines)


def fill_blocks(text: str, results: dict[str, dict]) -> str:
    return BLOCK.sub(lambda m: m.group(1) + results_block(results, m.group("name")) + m.group(4), text)


# --- the CLI reference ------------------------------------------------------------------------------

def cli_reference() -> str:
    from segan.cli import build_parser
    parser = build_parser()
    with help_width():
        return _cli_reference(parser)


@contextlib.contextmanager
def help_width():
    """$COLUMNS at HELP_WIDTH while argparse formats help, as it was afterwards."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        yield
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def _cli_reference(parser: argparse.ArgumentParser) -> str:
    parts = ["# Command line reference\n",
             "Generated from segan's argparse parser by `python scripts/docs.py`; every command's `--help`,",
             "as the command prints it. Relative paths given as flags are relative to the working directory;",
             "relative paths inside a config file are relative to the dataset root (`data.root`).\n",
             "## segan\n", "```text", parser.format_help().rstrip(), "```\n"]
    for name, sub in commands(parser):
        parts += [f"## segan {name}\n", "```text", sub.format_help().rstrip(), "```\n"]
    return "\n".join(parts)


def commands(parser: argparse.ArgumentParser, prefix: str = ""):
    """(name, parser) of every subcommand, depth first: `data check` after `data`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + name, sub
                yield from commands(sub, prefix + name + " ")


# --- the config reference ---------------------------------------------------------------------------

def config_reference() -> str:
    from segan import config as schema
    parts = ["# Config reference\n",
             "Generated from the schema in `segan/config.py` by `python scripts/docs.py`. A run's",
             "`config.yaml` holds these sections; `segan train --config FILE` reads one, and flags override it",
             "(see the [command line reference](cli.md)). Relative paths in a config file are relative to",
             "`data.root`.\n"]
    for field in dataclasses.fields(schema.Config):
        section = field.default_factory if field.default_factory is not dataclasses.MISSING else None
        if section is None or not dataclasses.is_dataclass(section):
            continue
        parts += section_reference(field.name, section)
    return "\n".join(parts)


def section_reference(name: str, section: type) -> list[str]:
    documented = docstring_entries(section.__doc__ or "")
    summary = (section.__doc__ or f"The {name} section.").strip().splitlines()[0]
    lines = [f"## `{name}`\n", summary + "\n", "| key | type | default | meaning |", "|---|---|---|---|"]
    from segan.config import _annotations, _describe
    hints = _annotations(section)
    for field in dataclasses.fields(section):
        default = (field.default if field.default is not dataclasses.MISSING else
                   field.default_factory() if field.default_factory is not dataclasses.MISSING else "required")
        kind = _describe(hints[field.name]).replace("|", "\\|")
        meaning = documented.get(field.name, "").replace("|", "\\|")
        lines.append(f"| `{field.name}` | {kind} | `{json.dumps(default)}` | {meaning} |")
    return lines + [""]


def docstring_entries(doc: str) -> dict[str, str]:
    """`key: text` entries of a Google-style docstring (`a, b: text` documents both), text unwrapped."""
    entries: dict[str, str] = {}
    current: list[str] = []
    for line in doc.splitlines():
        match = re.match(r"^\s{8}([a-z_][\w, ]*):\s*(.*)$", line)
        if match:
            current = [key.strip() for key in match.group(1).split(",")]
            for key in current:
                entries[key] = match.group(2).strip()
        elif current and re.match(r"^\s{12,}\S", line):
            for key in current:
                entries[key] += " " + line.strip()
        else:
            current = []
    return entries


# --- the plan's rules --------------------------------------------------------------------------------

RULES_BLOCK = re.compile(r"(<!-- plan rules -->\n)(.*?)(<!-- end plan rules -->)", re.S)


def plan_rules() -> str:
    """The rules of `segan plan` in the order it applies them, each with its docstring: the data rules,
    then the budget rules after the step is timed."""
    from segan import plan
    lines = []
    for title, name in (("Read from the data and the base config", "DATA_RULES"),
                        ("From the step timed on this machine and the time budget", "BUDGET_RULES")):
        rules = getattr(plan, name)
        lines += [f"**{title}** (`segan.plan.{name}`):\n",
                  "| rule | what it decides |", "|---|---|"]
        for rule in rules:
            doc = " ".join((rule.__doc__ or "").split())
            lines.append(f"| `{rule.__name__}` | {doc} |")
        lines.append("")
    return "\n".join(lines)


# --- all generated files ----------------------------------------------------------------------------

def generated() -> dict[Path, str]:
    """Every generated file's path and its fresh content."""
    results = load_results()
    files = {DOCS / "reference" / "cli.md": cli_reference(), DOCS / "reference" / "config.md": config_reference()}
    for page in [ROOT / "README.md", DOCS / "testing.md", *sorted((DOCS / "benchmarks").glob("*.md"))]:
        files[page] = fill_blocks(page.read_text(), results)
    page = DOCS / "explanation" / "plan.md"
    files[page] = RULES_BLOCK.sub(lambda m: m.group(1) + plan_rules() + m.group(3), page.read_text())
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a generated file is stale")
    args = parser.parse_args(argv)
    with contextlib.redirect_stderr(io.StringIO()):
        files = generated()
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale: run python scripts/docs.py", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
