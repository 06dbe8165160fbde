"""The run report (`segan report RUN`) and the comparison of runs (`segan report RUN_A RUN_B`).

A report is a folder holding `index.html`, which opens from disk with no network (its pictures are
files beside it, its one script, which sorts the table, is inline), `report.json` with the same
figures for programs, and `evaluation/`: exactly what `segan evaluate --model` writes for the split
(the page's per-image table is its `per_image.csv`).

A run's page: the run (data, settings that differ from the defaults, versions, hardware, wall time,
best epoch, the command that reproduces it), its training curves, per-class figures and the
normalised confusion matrix (multi-class), a reliability diagram with the calibration error, the
worst and best images (image, truth, prediction, error map) and every image's scores.

A comparison scores each run on the same split and pairs the images: the per-image Dice
differences against the first run (histogram, mean with a bootstrap interval), the same for each
structure metric (a table, with the verdict on the figure's good side), and the images where the
runs differ most, side by side.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

import cv2
import numpy as np

from . import metrics
from .config import Config
from .data.encoding import MaskEncoding, read_mask, read_roi
from .data.io import read_image
from .evaluation import EvaluationResult, evaluate_model
from .metrics import structure

log = logging.getLogger(__name__)

GALLERY = 8  # worst and best images shown as pictures at the top of a run's page
PICTURE_LIMIT = 200  # images with a picture of their own (the table links to those)
PICTURE_SIDE = 640  # pictures are drawn from images scaled down to this longest side
BOOTSTRAP_SAMPLES = 10_000
NOT_SCORED = 255  # truth value shown as "not scored" (ignored or outside the region of interest)


class ReportError(ValueError):
    """A report that cannot be made: an earlier one in the way, runs that cannot be compared."""


@dataclass
class Scored:
    """One run scored on one split: the evaluation, its calibration, and where things are."""

    run: Path
    label: str
    config: Config
    result: EvaluationResult
    rows: list[dict[str, str]]  # evaluation/per_image.csv, worst first
    reliability: dict
    images: dict[str, Path]  # name -> image file
    evaluation_dir: Path
    data_root: str  # the dataset scored (--data, else the run's own)


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Refuses a folder holding an earlier report (unless `overwrite`) or anything else, before any
    work; with `overwrite`, clears what an earlier report wrote there."""
    if (out / "index.html").is_file():
        if not overwrite:
            raise ReportError(f"{out} already holds a report (index.html); nothing was written. Write this one "
                              "elsewhere with --out NEW_FOLDER, or replace it with --overwrite")
        for owned in ("pictures", "evaluation"):  # only what a report writes
            shutil.rmtree(out / owned, ignore_errors=True)
    elif out.is_dir() and any(out.iterdir()):
        raise ReportError(f"{out} holds files and no report; nothing was written. Give --out a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)


def score_run(run: str | Path, out: Path, data_root: str | Path | None = None, split: str = "val",
              label: str | None = None, **predict: Any) -> Scored:
    """`evaluate_model` into `out`, with the reliability of the probabilities accumulated as the
    images are segmented (the probabilities are not kept)."""
    from .data.pairs import find_split
    run = Path(run)
    config = Config.load(run / "config.yaml")
    data = dataclasses.replace(config.data, root=str(data_root or config.data.root))
    pairs = {Path(pair.image).resolve(): pair for pair in find_split(data, split)}
    encoding = MaskEncoding.from_config(data)
    reliability = metrics.Reliability()

    def observe(image: Path, probs) -> None:
        pair = pairs[Path(image).resolve()]
        truth = read_mask(pair.mask, encoding)
        if truth.shape != tuple(probs.shape[-2:]):
            return  # scoring names both files and stops, after prediction
        scored = truth < data.num_classes
        if pair.roi is not None:
            scored &= read_roi(pair.roi)
        reliability.add(probs.float().numpy(), truth, scored)

    result = evaluate_model(run, data_root, split, out, observe=observe, overwrite=True, **predict)
    with (out / "per_image.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    images = {name: Path(pair.image) for name, pair in zip(result.names, pairs.values())}
    return Scored(run, label or run.name, config, result, rows, reliability.result(), images, out, data.root)


def _picture_name(index: int, name: str) -> str:
    """A file name per image: its place in the split keeps `a/b` and `a__b` apart."""
    return f"{index:05d}-{name.replace('/', '__')}.jpg"


def _loaded(scored: Scored, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, truth with NOT_SCORED where not scored, prediction), scaled to PICTURE_SIDE."""
    result, data = scored.result, scored.config.data
    image = read_image(scored.images[result.names[index]], data.in_channels)
    truth = read_mask(result.gt_files[index], result.encoding)
    truth = np.where(truth < len(result.class_names), truth, NOT_SCORED).astype(np.uint8)
    if result.roi_files and result.roi_files[index] is not None:
        truth[~read_roi(result.roi_files[index])] = NOT_SCORED
    prediction = read_mask(result.pred_files[index], MaskEncoding(len(result.class_names), None))
    scale = PICTURE_SIDE / max(truth.shape)
    if scale < 1:
        size = (round(truth.shape[1] * scale), round(truth.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
        truth = cv2.resize(truth, size, interpolation=cv2.INTER_NEAREST)
        prediction = cv2.resize(prediction, size, interpolation=cv2.INTER_NEAREST)
    return image, truth, prediction


def _row_title(row: dict[str, str]) -> str:
    return f"{row['name']}: IoU {_number(row['iou'])}, Dice {_number(row['dice'])}"


def _number(text: str | float | None, digits: int = 4) -> str:
    if text in (None, ""):
        return "undefined"
    value = float(text)
    return "undefined" if math.isnan(value) else f"{value:.{digits}f}"


def _defined(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [row for row in rows if row["dice"] != ""]


def _changed_settings(config: Config) -> list[tuple[str, Any, Any]]:
    """(key, value in the run, default) for every setting the run changed."""
    run, default = config.flat(), Config().flat()
    return [(key, run[key], default.get(key)) for key in run if run[key] != default.get(key)]


# ---------------------------------------------------------------------------------------------
# One run

def report_run(run: str | Path, data_root: str | Path | None = None, split: str = "val",
               out: str | Path | None = None, overwrite: bool = False, **predict: Any) -> Path:
    """Writes a run's report and returns its `index.html`.

    Args:
        run: run folder written by `segan train`.
        data_root: dataset folder; default the run's own `data.root`.
        split: "val" (the run's validation split), "train", or a split folder such as "test".
        out: report folder; default RUN/report.
        overwrite: replace an earlier report in `out`.
        predict: how to segment and what to score (`evaluate_model`'s tta, device, backend,
            precision, batch_size, num_workers, progress, threshold, structure_families, tolerance).
    """
    from . import plots
    from .progress import best_step, read_metrics
    run = Path(run)
    out = Path(out) if out else run / "report"
    _prepare_out(out, overwrite)
    scored = score_run(run, out / "evaluation", data_root, split, **predict)
    result = scored.result
    summary_file = run / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}

    figures: dict[str, str] = {}
    metrics_csv = run / "metrics.csv"
    if metrics_csv.is_file():
        rows = read_metrics(metrics_csv)
        plots.save(plots.training_curves(rows, best_step(rows)), out / "training.png")
        figures["training"] = "training.png"
    plots.save(plots.reliability_figure(scored.reliability, f"reliability on {split}"), out / "reliability.png")
    figures["reliability"] = "reliability.png"
    if not result.binary:
        per_class = {name: entry["iou"] for name, entry in result.report["per_class"].items()}
        plots.save(plots.class_bars(per_class, f"IoU per class on {split}"), out / "classes.png")
        plots.save(plots.confusion_figure(result.confusions.sum(dim=0).numpy(), result.class_names),
                   out / "confusion.png")
        figures.update(classes="classes.png", confusion="confusion.png")

    pictures = _write_pictures(scored, out)
    page = _run_page(scored, summary, figures, pictures, split)
    (out / "index.html").write_text(page)
    (out / "report.json").write_text(json.dumps(metrics.json_safe({
        "run": str(run), "split": split, "headline": result.report["headline"],
        "per_class": result.report["per_class"], "reliability": scored.reliability,
        "per_image_csv": str(out / "evaluation" / "per_image.csv"), "pictures": len(pictures),
        "summary": summary}), indent=2) + "\n")
    return out / "index.html"


def _write_pictures(scored: Scored, out: Path) -> dict[str, str]:
    """A picture (image, truth, prediction, error map) for the worst and best images and the
    first `PICTURE_LIMIT` of the table; returns name -> relative path."""
    from . import plots
    rows = _defined(scored.rows)
    chosen = [row["name"] for row in rows[:GALLERY] + rows[-GALLERY:]]
    chosen += [row["name"] for row in scored.rows if row["name"] not in chosen][: max(0, PICTURE_LIMIT - len(chosen))]
    index = {name: i for i, name in enumerate(scored.result.names)}
    by_name = {row["name"]: row for row in scored.rows}
    written = {}
    for name in chosen:
        image, truth, prediction = _loaded(scored, index[name])
        figure = plots.image_panels(image, truth, {scored.label: prediction}, scored.result.class_names,
                                    NOT_SCORED, title=_row_title(by_name[name]))
        written[name] = f"pictures/{_picture_name(index[name], name)}"
        plots.save(figure, out / written[name], dpi=90)
    return written


# ---------------------------------------------------------------------------------------------
# Several runs

def compare_runs(runs: Sequence[str | Path], data_root: str | Path | None = None, split: str = "val",
                 out: str | Path | None = None, overwrite: bool = False, **predict: Any) -> Path:
    """Scores each run on the same split and writes the comparison page; returns its `index.html`.

    Images pair by name. For every run after the first: the per-image Dice difference to the first
    run (images where both are defined), its mean with a 95% bootstrap interval, a histogram, the
    same for each structure figure (`compare_structure`), and the images where the two differ most.
    Default `out`: FIRST_RUN/report/compare-OTHER-RUNS.
    """
    from . import plots
    runs = [Path(run) for run in runs]
    if len(runs) < 2:
        raise ReportError("a comparison needs at least two runs")
    configs = [Config.load(run / "config.yaml") for run in runs]
    classes = {tuple(config.data.classes) for config in configs}
    if len(classes) > 1:
        raise ReportError(f"the runs have different classes ({' vs '.join(map(str, sorted(classes)))}); compare "
                          "runs trained for the same task")
    roots = {str(Path(config.data.root).resolve()) if config.data.root else "(none)" for config in configs}
    if data_root is None and len(roots) > 1:
        raise ReportError(f"the runs were trained on different data folders ({', '.join(sorted(roots))}); give "
                          "--data DIR to score them all on the same images")
    from .data.pairs import find_split
    images = [{str(Path(pair.image).resolve()) for pair in
               find_split(dataclasses.replace(config.data, root=str(data_root or config.data.root)), split)}
              for config in configs]
    if any(other != images[0] for other in images[1:]):
        raise ReportError(f"the runs' {split} splits hold different images (their val_split, val_fraction or "
                          "split_seed differ); compare them on a split folder they share, e.g. --split test")
    labels = _labels(runs)
    out = Path(out) if out else runs[0] / "report" / ("compare-" + "-".join(labels[1:]))
    _prepare_out(out, overwrite)
    scored = [score_run(run, out / "evaluation" / label, data_root, split, label, **predict)
              for run, label in zip(runs, labels)]
    base = scored[0]
    comparisons = []
    for other in scored[1:]:
        paired = paired_dice(base.rows, other.rows)
        differences = np.array([b - a for a, b in paired.values()])
        if not len(differences):
            raise ReportError(f"{base.label} and {other.label} share no image with a defined Dice on {split}")
        interval = bootstrap_interval(differences)
        figure_file = f"difference-{other.label}.png"
        plots.save(plots.difference_histogram(differences, interval, f"{other.label} minus {base.label}", "Dice"),
                   out / figure_file)
        order = sorted(paired, key=lambda name: -abs(paired[name][1] - paired[name][0]))[:GALLERY]
        pictures = _write_pair_pictures(base, other, order, paired, out)
        comparisons.append({
            "run": other.label, "images": len(differences), "mean_difference": float(differences.mean()),
            "interval_95": list(interval), "better": int((differences > 0).sum()),
            "worse": int((differences < 0).sum()), "equal": int((differences == 0).sum()),
            "mean_dice": {base.label: float(np.mean([a for a, _ in paired.values()])),
                          other.label: float(np.mean([b for _, b in paired.values()]))},
            "figure": figure_file, "pictures": pictures, "structure": compare_structure(base.result, other.result),
            "differences": {name: b - a for name, (a, b) in paired.items()}})
    (out / "index.html").write_text(_compare_page(scored, comparisons, split))
    (out / "report.json").write_text(json.dumps(metrics.json_safe({
        "split": split, "runs": {s.label: str(s.run) for s in scored},
        "headline": {s.label: s.result.report["headline"] for s in scored},
        "comparisons": [{k: v for k, v in c.items() if k != "pictures"} for c in comparisons]}), indent=2) + "\n")
    return out / "index.html"


def _labels(runs: Sequence[Path]) -> list[str]:
    labels: list[str] = []
    for run in runs:
        label = run.resolve().name or "run"
        labels.append(label if label not in labels else f"{label}-{len(labels) + 1}")
    return labels


def paired_dice(base: list[dict[str, str]], other: list[dict[str, str]]) -> dict[str, tuple[float, float]]:
    """name -> (Dice of base, Dice of other) for the images both score with a defined Dice."""
    first = {row["name"]: float(row["dice"]) for row in _defined(base)}
    return {row["name"]: (first[row["name"]], float(row["dice"])) for row in _defined(other) if row["name"] in first}


def paired_structure(base: EvaluationResult, other: EvaluationResult, figure: str) -> dict[str, tuple[float, float]]:
    """name -> (base's, other's) `figure` of the image (`structure.headline`), for the images where
    both define it."""
    first = {name: structure.headline(image, figure) for name, image in zip(base.names, base.structure)}
    pairs = {}
    for name, image in zip(other.names, other.structure):
        a, b = first.get(name), structure.headline(image, figure)
        if a is not None and b is not None:
            pairs[name] = (a, b)
    return pairs


def verdict(interval: tuple[float, float], lower_is_better: bool = False) -> str:
    """"better" or "worse" where the interval of the difference (second minus first) leaves out 0,
    read on the figure's good side, else "not distinguishable"."""
    low, high = (-interval[1], -interval[0]) if lower_is_better else interval
    return "better" if low > 0 else "worse" if high < 0 else "not distinguishable"


def compare_structure(base: EvaluationResult, other: EvaluationResult) -> list[dict]:
    """Per structure figure both evaluations hold: the per-image difference (other minus base) over
    the images where both define it, its mean with the 95% bootstrap interval, and the verdict on the
    figure's good side (errors and distances: lower is better)."""
    if not base.structure or not other.structure:
        return []
    held = [set(next(iter(result.report["structure"]["per_class"].values()))) for result in (base, other)]
    rows = []
    for figure in (name for name in structure.LABELS if name in held[0] & held[1]):
        paired = paired_structure(base, other, figure)
        if not paired:
            continue
        differences = np.array([b - a for a, b in paired.values()])
        interval = bootstrap_interval(differences)
        lower = figure in structure.LOWER_IS_BETTER
        rows.append({"figure": figure, "label": structure.LABELS[figure], "lower_is_better": lower,
                     "images": len(differences), "mean_base": float(np.mean([a for a, _ in paired.values()])),
                     "mean_other": float(np.mean([b for _, b in paired.values()])),
                     "mean_difference": float(differences.mean()), "interval_95": list(interval),
                     "better": int(((differences < 0) if lower else (differences > 0)).sum()),
                     "worse": int(((differences > 0) if lower else (differences < 0)).sum()),
                     "verdict": verdict(interval, lower)})
    return rows


def bootstrap_interval(differences: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                       level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `differences` (images resampled with
    replacement, `samples` times, a fixed seed so a report is reproducible)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // len(differences))  # resamples at a time: memory stays flat for any split
    means = np.concatenate([differences[rng.integers(0, len(differences), (min(chunk, samples - done),
                                                                           len(differences)))].mean(axis=1)
                            for done in range(0, samples, chunk)])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _write_pair_pictures(base: Scored, other: Scored, names: list[str], paired: dict, out: Path) -> dict[str, str]:
    from . import plots
    written = {}
    base_index = {name: i for i, name in enumerate(base.result.names)}
    other_index = {name: i for i, name in enumerate(other.result.names)}
    for name in names:
        image, truth, first = _loaded(base, base_index[name])
        _, _, second = _loaded(other, other_index[name])
        a, b = paired[name]
        figure = plots.image_panels(image, truth, {base.label: first, other.label: second}, base.result.class_names,
                                    NOT_SCORED, title=f"{name}: Dice {base.label} {a:.4f}, {other.label} {b:.4f} "
                                                      f"({b - a:+.4f})", panel_width=2.6)
        written[name] = f"pictures/{other.label}/{_picture_name(base_index[name], name)}"
        plots.save(figure, out / written[name], dpi=90)
    return written


# ---------------------------------------------------------------------------------------------
# HTML

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1400px; color: #222; padding: 0 16px; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 32px; }
table { border-collapse: collapse; font-size: 13px; } td, th { padding: 3px 10px; border-bottom: 1px solid #eee; }
th { background: #f4f4f4; text-align: left; } th.sortable { cursor: pointer; } th.sortable:hover { background: #e4e4e4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.headline { font-size: 18px; margin: 8px 0 16px; } .muted { color: #777; font-size: 13px; }
img.figure { max-width: 100%; border: 1px solid #eee; }
.gallery img { max-width: 100%; margin: 4px 0; border: 1px solid #eee; vertical-align: top; }
.gallery.pairs { display: grid; grid-template-columns: 1fr 1fr; gap: 6px; } .gallery.pairs img { width: 100%; margin: 0; }
code { background: #f4f4f4; padding: 1px 4px; } .kv td:first-child { color: #555; white-space: nowrap; }
"""

SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.classList.add('sortable');
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var ascending = th.dataset.order !== 'asc';
      th.dataset.order = ascending ? 'asc' : 'desc';
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.value || a.cells[column].textContent;
        var y = b.cells[column].dataset.value || b.cells[column].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
        return ascending ? c : -c;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>\n" + "\n".join(body)
            + f"\n<script>{SORT_SCRIPT}</script>\n</body></html>\n")


def _figure(path: str, alt: str) -> str:
    return f'<p><img class="figure" src="{quote(path)}" alt="{_e(alt)}"></p>'


def _kv_table(items: list[tuple[str, Any]]) -> str:
    return "<table class=\"kv\">" + "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in items) + "</table>"


def _image_table(rows: list[dict[str, str]], pictures: dict[str, str]) -> str:
    """Every column of per_image.csv except the file paths, plus a link to the picture."""
    columns = [c for c in rows[0] if c not in ("prediction", "ground_truth")] if rows else []
    head = "".join(f"<th>{_e(c)}</th>" for c in columns) + "<th>picture</th>"
    lines = []
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            if column == "name":
                cells.append(f"<td>{_e(value)}</td>")
            elif value == "":
                cells.append('<td class="num" data-value="-1">undefined</td>')
            else:
                cells.append(f'<td class="num" data-value="{_e(value)}">{_e(value)}</td>')
        link = pictures.get(row["name"])
        cells.append(f'<td><a href="{quote(link)}">view</a></td>' if link else "<td></td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="sortable" id="per-image"><thead><tr>{head}</tr></thead><tbody>' + "".join(lines)
            + "</tbody></table>")


def _structure_table(report: dict | None) -> list[str]:
    """Each foreground class's structure figures: mean and median over the images where defined."""
    if not report or not report["per_class"]:
        return []
    lines = ["<h3>Structure</h3>",
             f'<p class="muted">Per image and foreground class, then the mean and median over the images where the '
             f"class is in the truth or the prediction. Distances in pixels; a class in one mask only gets the image "
             f"diagonal (counted under one-sided). NSD and boundary F1 within {report['tolerance_px']:g} px. "
             "Conventions: docs/reference/metrics.md.</p>",
             '<table class="sortable"><thead><tr><th>class</th><th>figure</th><th>mean</th><th>median</th>'
             "<th>images</th><th>one-sided</th></tr></thead><tbody>"]
    for name, figures in report["per_class"].items():
        for figure, entry in figures.items():
            lines.append(f"<tr><td>{_e(name)}</td><td>{_e(structure.LABELS[figure])}</td>"
                         f'<td class="num">{_number(entry["mean"])}</td><td class="num">{_number(entry["median"])}</td>'
                         f'<td class="num">{entry["defined"]}</td><td class="num">{entry["one_sided"]}</td></tr>')
    return lines + ["</tbody></table>"]


def _run_page(scored: Scored, summary: dict, figures: dict[str, str], pictures: dict[str, str], split: str) -> str:
    result, config = scored.result, scored.config
    head = result.report["headline"]
    environment = summary.get("environment") or {}
    body = [f"<h1>segan run report: {_e(scored.label)}</h1>",
            f'<p class="muted">{_e(scored.run.resolve())}</p>',
            f'<p class="headline">{_e(split)} split, {result.report["images"]} images: Dice <b>{_number(head["dice"])}'
            f'</b>, IoU <b>{_number(head["iou"])}</b> ({_e(head["scope"])}, pooled over pixels); per image: Dice '
            f'{_number(head["dice_per_image"])}, IoU {_number(head["iou_per_image"])}</p>',
            "<h2>The run</h2>"]
    facts = [("data", f"<code>{_e(scored.data_root)}</code>"),
             ("classes", _e(", ".join(config.data.classes))),
             ("best epoch", _e(f"{summary['best_epoch']} of {summary['epochs']}" if "best_epoch" in summary
                               else "not recorded (no summary.json)")),
             ("training steps", _e(summary.get("steps", "not recorded"))),
             ("wall time", _e(f"{summary['wall_time_s']:.0f} s" if "wall_time_s" in summary else "not recorded")),
             ("precision", _e(summary.get("precision", config.train.precision))),
             ("stopped early", _e(summary.get("stopped") or "no")),
             ("skipped steps", _e(f"{summary.get('d_steps_skipped', 0)} discriminator, "
                                  f"{summary.get('nonfinite_batches_skipped', 0)} non-finite batches"))]
    if summary.get("time_budget"):
        spent = summary["time_budget"]
        facts.append(("time budget", _e(f"{spent['spent_s']:.0f} of {spent['budget_s']:.0f} s: start-up "
                                        f"{spent['startup_s']:.0f} s, training {spent['training_s']:.0f} s, validation "
                                        f"{spent['validation_s']:.0f} s, final scoring {spent['after_training_s']:.0f} s")))
    if summary.get("ema"):
        facts.append(("moving average of the weights",
                      _e(f"decay {summary['ema']['decay']}: IoU {summary['ema']['ema_iou']} against "
                         f"{summary['ema']['raw_iou']} for the raw weights; {summary['ema']['exported']} exported")))
    facts.append(("synthetic pairs", _e(f"{config.data.synthetic_ratio:g} of each batch, from {config.data.synthetic}"
                                        if config.data.synthetic else "none")))
    if summary.get("semi"):
        facts.append(("unlabelled images (last epoch)",
                      _e(", ".join(f"{k} {v}" for k, v in summary["semi"].items()))))
    facts += [(name, _e(value)) for name, value in environment.items()] or [("versions, hardware",
                                                                             "not recorded by this run")]
    body.append(_kv_table(facts))
    changed = _changed_settings(config)
    body.append("<h3>Settings that differ from the defaults</h3>")
    body.append('<table><thead><tr><th>setting</th><th>this run</th><th>default</th></tr></thead><tbody>'
                + "".join(f"<tr><td><code>{_e(k)}</code></td><td>{_e(v)}</td><td>{_e(d)}</td></tr>"
                          for k, v, d in changed) + "</tbody></table>" if changed else "<p>none</p>")
    body.append(f"<p>Reproduce it (config.yaml holds every setting): <code>segan train --config "
                f"{_e(scored.run / 'config.yaml')} --out NEW_RUN</code></p>")
    body.append("<h2>Training</h2>")
    body.append(_figure(figures["training"], "training curves") if "training" in figures
                else "<p>This run folder has no metrics.csv.</p>")
    body.append(f"<h2>Scores on {_e(split)}</h2>")
    per_class = result.report["per_class"]
    body.append('<table class="sortable"><thead><tr><th>class</th><th>IoU</th><th>Dice</th><th>precision</th>'
                '<th>recall</th><th>truth pixels</th></tr></thead><tbody>' + "".join(
                    f"<tr><td>{_e(name)}</td>" + "".join(f'<td class="num">{_number(entry[k])}</td>'
                                                         for k in ("iou", "dice", "precision", "recall"))
                    + f'<td class="num">{entry["truth_pixels"]}</td></tr>' for name, entry in per_class.items())
                + "</tbody></table>")
    if "classes" in figures:
        body += [_figure(figures["classes"], "IoU per class"), _figure(figures["confusion"], "confusion matrix")]
    body += _structure_table(result.report.get("structure"))
    reliability = scored.reliability
    body.append("<h2>Calibration</h2>")
    body.append(f"<p>Expected calibration error <b>{reliability['ece']:.4f}</b> over {reliability['pixels']} "
                f"scored pixels: the pixel-weighted mean gap between the {_e(reliability['confidence_name'])} and "
                f"the {_e(reliability['frequency_name'])}, in 15 bins. On the diagonal, a threshold on the "
                "probability means what it says.</p>")
    body.append(_figure(figures["reliability"], "reliability diagram"))
    defined = _defined(scored.rows)
    for title, rows in (("Worst images", defined[:GALLERY]), ("Best images", defined[::-1][:GALLERY])):
        body.append(f"<h2>{title} (by IoU)</h2><div class=\"gallery pairs\">")
        body += [f'<img src="{quote(pictures[row["name"]])}" alt="{_e(_row_title(row))}" loading="lazy">'
                 for row in rows if row["name"] in pictures]
        body.append("</div>")
    legend = ("error maps: green true positive, orange false positive, blue false negative" if result.binary
              else "error maps: orange where the predicted class is wrong")
    body.append(f'<p class="muted">{legend}; grey image where a pixel is not scored or is background in both</p>')
    body.append(f"<h2>Every image ({len(scored.rows)})</h2>")
    body.append(f'<p class="muted">Click a column to sort. This is <code>evaluation/per_image.csv</code>, what '
                f'<code>segan evaluate --model</code> writes; pictures for the {len(pictures)} images linked. '
                f'{"fp_pixels / fn_pixels: foreground predicted wrongly / missed." if result.binary else ""}</p>')
    body.append(_image_table(scored.rows, pictures))
    return _page(f"segan report: {scored.label}", body)


def _structure_comparison_table(rows: list[dict], base: str, other: str) -> list[str]:
    if not rows:
        return []
    head = "".join(f"<th>{_e(column)}</th>" for column in (
        "figure", "images", base, other, f"{other} minus {base}", "95% interval", "images better / worse", "verdict"))
    body = "".join(
        f"<tr><td>{_e(r['label'])}{' (lower is better)' if r['lower_is_better'] else ''}</td>"
        f"<td class=\"num\">{r['images']}</td><td class=\"num\">{r['mean_base']:.4f}</td>"
        f"<td class=\"num\">{r['mean_other']:.4f}</td><td class=\"num\">{r['mean_difference']:+.4f}</td>"
        f"<td class=\"num\">[{r['interval_95'][0]:+.4f}, {r['interval_95'][1]:+.4f}]</td>"
        f"<td class=\"num\">{r['better']} / {r['worse']}</td><td>{_e(r['verdict'])}</td></tr>" for r in rows)
    return ["<h3>Structure</h3>",
            '<p class="muted">Per image: the figure of the foreground class (multi-class: the mean over the classes '
            "where it is defined), paired over the images where both runs define it; the interval resamples those "
            "images. Conventions: docs/reference/metrics.md.</p>",
            f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>']


def _compare_page(scored: list[Scored], comparisons: list[dict], split: str) -> str:
    base = scored[0]
    body = [f"<h1>segan comparison on {_e(split)}</h1>",
            f'<p class="muted">Every run segments the same {base.result.report["images"]} images of {_e(split)} '
            f"({_e(base.data_root)}); images pair by name.</p>"]
    if split == "val":
        body.append("<p><b>Note:</b> each run chose its best checkpoint by its score on this split, so these "
                    "figures lean optimistic for every run; a held-out split (<code>--split test</code>) compares "
                    "them without that bias.</p>")
    body += ["<h2>Runs</h2>",
            '<table class="sortable"><thead><tr><th>run</th><th>Dice (pooled)</th><th>IoU (pooled)</th>'
            "<th>Dice per image</th><th>folder</th></tr></thead><tbody>"]
    for s in scored:
        head = s.result.report["headline"]
        body.append(f"<tr><td>{_e(s.label)}</td><td class=\"num\">{_number(head['dice'])}</td><td class=\"num\">"
                    f"{_number(head['iou'])}</td><td class=\"num\">{_number(head['dice_per_image'])}</td>"
                    f"<td><code>{_e(s.run.resolve())}</code></td></tr>")
    body.append("</tbody></table>")
    for c in comparisons:
        low, high = c["interval_95"]
        body += [f"<h2>{_e(c['run'])} against {_e(base.label)}</h2>",
                 f"<p class=\"headline\">Per-image Dice difference ({_e(c['run'])} minus {_e(base.label)}), "
                 f"{c['images']} images: mean <b>{c['mean_difference']:+.4f}</b>, 95% bootstrap interval "
                 f"[{low:+.4f}, {high:+.4f}]: {verdict((low, high))}. Better on {c['better']} images, worse on {c['worse']}, "
                 f"equal on {c['equal']}.</p>",
                 f'<p class="muted">Mean per-image Dice over these images: {_e(base.label)} '
                 f"{c['mean_dice'][base.label]:.4f}, {_e(c['run'])} {c['mean_dice'][c['run']]:.4f}. The interval "
                 f"resamples the images {BOOTSTRAP_SAMPLES} times.</p>",
                 _figure(c["figure"], "histogram of per-image differences"),
                 *_structure_comparison_table(c["structure"], base.label, c["run"]),
                 "<h3>Where they differ most</h3><div class=\"gallery\">"]
        body += [f'<img src="{quote(path)}" alt="{_e(name)}" loading="lazy">' for name, path in c["pictures"].items()]
        body.append("</div>")
        rows = sorted(c["differences"].items(), key=lambda item: item[1])
        body.append('<table class="sortable"><thead><tr><th>image</th><th>Dice difference</th></tr></thead><tbody>'
                    + "".join(f'<tr><td>{_e(name)}</td><td class="num">{d:+.4f}</td></tr>' for name, d in rows)
                    + "</tbody></table>")
    return _page("segan comparison", body)
