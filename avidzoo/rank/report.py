"""The outputs of `avidzoo rank`: tables a program reads, a Markdown report a person reads, and three SVG plots.

:func:`write_report` writes into one folder (each file atomically, so a reader never sees half a file):

- ``rank.csv``: one tidy row per weight x modality x protocol (:data:`CSV_COLUMNS`); floats with 4 decimals, a missing
  value (``None`` or NaN) as an empty cell, ``tied`` as ``true``/``false``, ``params`` and ``published`` as JSON text.
- ``rank.json``: ``{"context", "rows", "few_shot", "per_class_recall": {"classes", "recalls"}}``, NaN as ``null``.
- ``report.md``: the verdict first (the best weight, or the set tied with it, for the logistic probe and the command
  that fine-tunes it), then one table per modality sorted by the logistic score, the few-shot table, notes, skipped
  weights, unreadable items, and the plots linked relatively.
- ``ranking.svg``: logistic balanced accuracy of each weight|modality, best first: a dot and its 95% whisker on a
  0..100% axis (:func:`ranking_x`), weights tied with their modality's best in :data:`TIED_COLOUR`.
- ``few_shot.svg``: balanced accuracy against shots per class (placed evenly), one line per weight|modality with
  whiskers for the intervals, and a legend. Only when there are curves.
- ``per_class.svg``: logistic recall of each class (columns) per weight|modality (rows), dark for 1, light for 0,
  grey for NaN (:func:`recall_colour`), values printed when there are at most 20 classes. Only when there are recalls.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from .._files import write_text_atomic

__all__ = ["CSV_COLUMNS", "OTHER_COLOUR", "TIED_COLOUR", "ranking_x", "recall_colour", "write_report"]

CSV_COLUMNS = ("weight", "modality", "protocol", "score", "low", "high", "tied", "best", "diff", "diff_low",
               "diff_high", "p_not_worse", "params", "extract_ms_per_clip", "published")
TIED_COLOUR, OTHER_COLOUR = "#1b7837", "#9e9e9e"
NAN_COLOUR = "#cccccc"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
MODALITIES = ("video", "audio", "fused")
TABLE_HEAD = ("| rank | weight | logistic | tied with best | kNN-1 | kNN-5 | kNN-20 | LogME | extraction ms/clip "
              "| published |")
LABEL_CHARS, CHAR_W = 48, 6.6  # labels longer than LABEL_CHARS keep their end; CHAR_W: px per character at 12px
RANK_LEFT, RANK_WIDTH, RANK_TOP, RANK_ROW = LABEL_CHARS * CHAR_W + 16, 480.0, 40.0, 22.0


def ranking_x(value: float) -> float:
    """The x pixel of a balanced accuracy in ``[0, 1]`` on the axis of ``ranking.svg`` (clamped to the axis)."""
    return RANK_LEFT + min(max(value, 0.0), 1.0) * RANK_WIDTH


def recall_colour(recall: float | None) -> str:
    """Heatmap fill: from light (recall 0) to dark blue (recall 1); grey for a missing recall."""
    if recall is None or math.isnan(recall):
        return NAN_COLOUR
    t = min(max(recall, 0.0), 1.0)
    light, dark = (247, 251, 255), (8, 48, 107)
    return "#" + "".join(f"{round(a + (b - a) * t):02x}" for a, b in zip(light, dark))


def _finite(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _jsonable(v: Any) -> Any:
    """A copy that ``json.dumps(allow_nan=False)`` takes: non-finite floats to None, arrays and tensors to lists."""
    if isinstance(v, dict):
        return {k if isinstance(k, (str, int)) else str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if hasattr(v, "tolist"):  # numpy / torch scalars and arrays
        return _jsonable(v.tolist())
    return v if isinstance(v, (str, int, bool)) or v is None else str(v)


def _cell(v: Any) -> str:
    """A CSV cell: 4 decimals for floats, empty for None and NaN, ``true``/``false``, JSON for dicts and lists."""
    v = v.tolist() if hasattr(v, "tolist") else v  # numpy / torch scalars
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(_jsonable(v), sort_keys=True)
    return str(v)


def _pct(v: Any, low: Any = None, high: Any = None) -> str:
    """A balanced accuracy as a percentage with one decimal, and its interval when known: ``80.0% [74.0, 86.0]``."""
    text = f"{100 * v:.1f}%" if _finite(v) else "–"
    return f"{text} [{100 * low:.1f}, {100 * high:.1f}]" if _finite(low) and _finite(high) else text


def _md(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _short(s: str, n: int = LABEL_CHARS) -> str:
    return s if len(s) <= n else "…" + s[-(n - 1):]


def _label(key: str) -> str:
    """``weight|modality`` as the plots print it (shortened to its end when long)."""
    weight, _, modality = key.rpartition("|")
    return _short(f"{weight} | {modality}")


def _t(s: Any) -> str:
    """Text escaped for SVG content and attribute values."""
    return escape(str(s), {'"': "&quot;"})


def _svg(width: float, height: float, title: str, body: list[str]) -> str:
    head = (f'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" version="1.1" '
            f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'font-family="Helvetica, Arial, sans-serif" font-size="12">\n<title>{_t(title)}</title>\n'
            f'<rect class="background" x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="white"/>')
    return "\n".join([head, *body, "</svg>\n"])


def _logistic(rows: list[dict]) -> list[dict]:
    """The logistic rows, best score first (missing scores last)."""
    lr = [r for r in rows if r.get("protocol") == "logistic"]
    return sorted(lr, key=lambda r: (-r["score"] if _finite(r.get("score")) else math.inf, str(r["weight"])))


def _series_order(keys: list[str], rows: list[dict]) -> list[str]:
    """``weight|modality`` keys in the order of the logistic ranking, the others after in their given order."""
    ranked = [f"{r['weight']}|{r['modality']}" for r in _logistic(rows)]
    return [k for k in ranked if k in keys] + [k for k in keys if k not in ranked]


def _ranking_svg(rows: list[dict]) -> str:
    lr = _logistic(rows)
    height = RANK_TOP + max(len(lr), 1) * RANK_ROW + 40
    width = RANK_LEFT + RANK_WIDTH + 70
    body = [f'<text x="{RANK_LEFT:.1f}" y="16" font-weight="bold">Logistic probe: balanced accuracy, 95% interval'
            '</text>',
            f'<rect x="{RANK_LEFT:.1f}" y="22" width="10" height="10" fill="{TIED_COLOUR}"/>'
            f'<text x="{RANK_LEFT + 14:.1f}" y="31">tied with the best of its modality</text>',
            f'<rect x="{RANK_LEFT + 230:.1f}" y="22" width="10" height="10" fill="{OTHER_COLOUR}"/>'
            f'<text x="{RANK_LEFT + 244:.1f}" y="31">worse than the best</text>']
    axis_y = RANK_TOP + max(len(lr), 1) * RANK_ROW + 4
    for tick in range(0, 101, 20):
        x = ranking_x(tick / 100)
        body.append(f'<line class="grid" x1="{x:.2f}" y1="{RANK_TOP:.2f}" x2="{x:.2f}" y2="{axis_y:.2f}" '
                    f'stroke="#eeeeee"/><line class="tick" x1="{x:.2f}" y1="{axis_y:.2f}" x2="{x:.2f}" '
                    f'y2="{axis_y + 5:.2f}" stroke="black"/><text x="{x:.2f}" y="{axis_y + 18:.2f}" '
                    f'text-anchor="middle">{tick}%</text>')
    body.append(f'<line class="axis" x1="{ranking_x(0):.2f}" y1="{axis_y:.2f}" x2="{ranking_x(1):.2f}" '
                f'y2="{axis_y:.2f}" stroke="black"/>')
    if not lr:
        body.append(f'<text x="{RANK_LEFT:.1f}" y="{RANK_TOP + 15:.1f}">no logistic scores</text>')
    for i, r in enumerate(lr):
        y = RANK_TOP + (i + 0.5) * RANK_ROW
        label, colour = f"{r['weight']} | {r['modality']}", TIED_COLOUR if r.get("tied") else OTHER_COLOUR
        body.append(f'<text class="label" x="{RANK_LEFT - 8:.1f}" y="{y + 4:.2f}" text-anchor="end">'
                    f'{_t(_short(label))}</text>')
        if _finite(r.get("low")) and _finite(r.get("high")):
            body.append(f'<line class="whisker" x1="{ranking_x(r["low"]):.2f}" y1="{y:.2f}" '
                        f'x2="{ranking_x(r["high"]):.2f}" y2="{y:.2f}" stroke="{colour}" stroke-width="2"/>')
        if _finite(r.get("score")):
            tip = f"{label}: {_pct(r['score'], r.get('low'), r.get('high'))}"
            body.append(f'<circle class="dot" cx="{ranking_x(r["score"]):.2f}" cy="{y:.2f}" r="4.5" '
                        f'fill="{colour}"><title>{_t(tip)}</title></circle>'
                        f'<text x="{ranking_x(1) + 8:.2f}" y="{y + 4:.2f}">{_pct(r["score"])}</text>')
    return _svg(width, height, "Ranking of the weights by logistic-probe balanced accuracy", body)


def _few_shot_svg(curves: dict, order: list[str]) -> str:
    series = {k: {int(s): v for s, v in curves[k].items()} for k in order}
    shots = sorted({s for c in series.values() for s in c})
    left, top, pw, ph = 56.0, 30.0, 420.0, 260.0
    step = pw / max(len(shots), 1)
    xs = {s: left + (j + 0.5) * step for j, s in enumerate(shots)}

    def y_of(v: float) -> float:
        return top + ph * (1 - min(max(v, 0.0), 1.0))

    body = [f'<text x="{left:.1f}" y="18" font-weight="bold">Few-shot balanced accuracy (mean, 95% interval)</text>',
            f'<text x="{left + pw / 2:.1f}" y="{top + ph + 36:.1f}" text-anchor="middle">shots per class</text>',
            f'<text transform="translate(14 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle">'
            'balanced accuracy</text>']
    for tick in range(0, 101, 20):
        y = y_of(tick / 100)
        body.append(f'<line class="grid" x1="{left:.1f}" y1="{y:.2f}" x2="{left + pw:.1f}" y2="{y:.2f}" '
                    f'stroke="#eeeeee"/><text x="{left - 6:.1f}" y="{y + 4:.2f}" text-anchor="end">{tick}%</text>')
    for s, x in xs.items():
        body.append(f'<text x="{x:.2f}" y="{top + ph + 18:.1f}" text-anchor="middle">{s}</text>')
    body.append(f'<path class="axis" d="M{left:.1f} {top:.1f}V{top + ph:.1f}H{left + pw:.1f}" fill="none" '
                'stroke="black"/>')
    for i, key in enumerate(order):
        colour, dodge = PALETTE[i % len(PALETTE)], (i - (len(order) - 1) / 2) * min(3.0, step / (2 * len(order)))
        pts = [(xs[s] + dodge, v) for s, v in sorted(series[key].items()) if v and _finite(v[0])]
        for x, v in pts:
            if len(v) >= 3 and _finite(v[1]) and _finite(v[2]):
                body.append(f'<line class="whisker" x1="{x:.2f}" y1="{y_of(v[1]):.2f}" x2="{x:.2f}" '
                            f'y2="{y_of(v[2]):.2f}" stroke="{colour}" stroke-opacity="0.6" stroke-width="1.5"/>')
            body.append(f'<circle class="point" cx="{x:.2f}" cy="{y_of(v[0]):.2f}" r="3" fill="{colour}"/>')
        body.append(f'<polyline class="curve" points="{" ".join(f"{x:.2f},{y_of(v[0]):.2f}" for x, v in pts)}" '
                    f'fill="none" stroke="{colour}" stroke-width="2"/>')
        ly = top + 8 + i * 18
        body.append(f'<rect class="swatch" x="{left + pw + 20:.1f}" y="{ly - 9:.1f}" width="14" height="4" '
                    f'fill="{colour}"/><text x="{left + pw + 40:.1f}" y="{ly:.1f}">{_t(_label(key))}</text>')
    height = max(top + ph + 50, top + 18 * len(order) + 10)
    return _svg(left + pw + 60 + max(len(_label(k)) for k in order) * CHAR_W, height, "Few-shot curves", body)


def _per_class_svg(recalls: dict, classes: list[str], order: list[str]) -> str:
    k = max([len(classes)] + [len(recalls[key]) for key in order])
    names = [_short(str(c), 24) for c in classes] + [str(j) for j in range(len(classes), k)]
    small = k > 20
    cw, ch = (14.0, 14.0) if small else (44.0, 22.0)
    rotate = max(map(len, names), default=0) * CHAR_W > cw
    left = max(len(_label(key)) for key in order) * CHAR_W + 16
    rise = max(map(len, names), default=0) * CHAR_W * 0.72 if rotate else 0.0  # extent of a label rotated by 45°
    top = 44 + rise
    heading = "Per-class recall (logistic probe); grey: class without items"
    body = [f'<text x="8" y="18" font-weight="bold">{heading}</text>']
    for j, name in enumerate(names):
        x = left + (j + 0.5) * cw
        attr = f'transform="rotate(-45 {x:.2f} {top - 6:.2f})" text-anchor="start"' if rotate else \
            'text-anchor="middle"'
        body.append(f'<text class="class" x="{x:.2f}" y="{top - 6:.2f}" {attr}>{_t(name)}</text>')
    for i, key in enumerate(order):
        y = top + i * ch
        body.append(f'<text class="label" x="{left - 8:.1f}" y="{y + ch / 2 + 4:.2f}" text-anchor="end">'
                    f'{_t(_label(key))}</text>')
        values = list(recalls[key]) + [math.nan] * (k - len(recalls[key]))
        for j, v in enumerate(values):
            v = v if _finite(v) else math.nan
            x, shown = left + j * cw, "n/a" if math.isnan(v) else f"{100 * v:.0f}"
            body.append(f'<rect class="cell" x="{x:.2f}" y="{y:.2f}" width="{cw:.2f}" height="{ch:.2f}" '
                        f'fill="{recall_colour(v)}" stroke="white"><title>{_t(f"{key}, {names[j]}: {shown}")}'
                        '</title></rect>')
            if not small:
                fg = "white" if not math.isnan(v) and v > 0.55 else "black"
                body.append(f'<text x="{x + cw / 2:.2f}" y="{y + ch / 2 + 4:.2f}" text-anchor="middle" '
                            f'fill="{fg}" font-size="10">{shown}</text>')
    width = max(left + k * cw + rise + 20, 8 + len(heading) * CHAR_W * 1.1 + 16)  # bold text runs wider
    return _svg(width, top + len(order) * ch + 20, "Per-class recall", body)


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: _cell(r.get(c)) for c in CSV_COLUMNS})
    return buf.getvalue()


def _markdown(rows: list[dict], curves: dict, order_fs: list[str], context: dict, plots: dict[str, str]) -> str:
    c = context
    lines = [f"# avidzoo rank: {_md(c.get('data', 'your clips'))}", "",
             f"{c.get('items', '?')} labelled items in {c.get('classes', '?')} classes from `{c.get('data', '?')}`, "
             f"scored by {c.get('folds', '?')}-fold cross-validation x {c.get('repeats', '?')} repeats (seed "
             f"{c.get('seed', '?')}, {c.get('episodes', '?')} few-shot episodes) in {c.get('elapsed_s') or 0:.0f} s. "
             "Scores are balanced accuracy (the mean of the per-class recalls) with 95% bootstrap intervals.", "",
             "## Verdict", ""]
    best = c.get("best") or {}
    found = {(r["weight"], r["modality"]): r for r in rows if r.get("protocol") == "logistic"}
    tied = [found.get((w, best.get("modality"))) or {"weight": w} for w in best.get("weights") or []]
    if tied:
        what = "Best weight" if len(tied) == 1 else f"Best weights (statistically tied, {len(tied)})"
        lines += [f"{what} for **{best.get('modality')}** on the logistic probe:", ""]
        lines += [f"{i + 1}. `{r['weight']}`: {_pct(r.get('score'), r.get('low'), r.get('high'))}"
                  for i, r in enumerate(tied)]
        if len(tied) > 1:
            lines += ["", "These cannot be told apart on this data; prefer the faster or smaller one."]
    else:
        lines.append("No weight could be scored.")
    if c.get("finetune_command"):
        cmd = str(c["finetune_command"])
        lead = "Fine-tune it on your clips:" if " finetune " in cmd else "Next, with its audio tower:"
        lines += ["", lead, "", "```bash", cmd, "```"]
    lines += ["", f"![Logistic balanced accuracy per weight]({plots['ranking_svg']})"]
    by_key = {(r["weight"], r["modality"], r["protocol"]): r for r in rows}
    present = sorted({r["modality"] for r in rows}, key=lambda m: (MODALITIES + (m,)).index(m))
    for mod in present:
        weights = list(dict.fromkeys(r["weight"] for r in _logistic(rows) if r["modality"] == mod))
        weights += [w for w in dict.fromkeys(r["weight"] for r in rows if r["modality"] == mod) if w not in weights]
        lines += ["", f"## {mod.capitalize()}", "", TABLE_HEAD, "|---:|---|---|---|---:|---:|---:|---:|---:|---|"]
        for rank, w in enumerate(weights, 1):
            get = {p: by_key.get((w, mod, p), {}) for p in ("logistic", "knn1", "knn5", "knn20", "logme")}
            lr = get["logistic"]
            any_row = next(r for r in get.values() if r) if any(get.values()) else {}
            ms, pub = any_row.get("extract_ms_per_clip"), any_row.get("published") or {}
            tied_txt = {True: "yes", False: "no"}.get(lr.get("tied"), "")
            logme = f"{get['logme']['score']:.3f}" if _finite(get["logme"].get("score")) else "–"
            lines.append(f"| {rank} | `{_md(w)}` | {_pct(lr.get('score'), lr.get('low'), lr.get('high'))} | "
                         f"{tied_txt} | {_pct(get['knn1'].get('score'))} | {_pct(get['knn5'].get('score'))} | "
                         f"{_pct(get['knn20'].get('score'))} | {logme} | {f'{ms:.1f}' if _finite(ms) else '–'} | "
                         f"{_md('; '.join(f'{k} {v}' for k, v in pub.items())) or '–'} |")
    if order_fs:
        shots = sorted({int(s) for k in order_fs for s in curves[k]})
        lines += ["", "## Few-shot", "", "Balanced accuracy with this many labelled clips per class, over episodes.",
                  "", "| weight | modality | " + " | ".join(f"{s}-shot" for s in shots) + " |",
                  "|---|---|" + "---|" * len(shots)]
        for key in order_fs:
            w, _, mod = key.rpartition("|")
            pts = {int(s): v for s, v in curves[key].items()}
            cells = [_pct(*(list(pts[s]) + [None, None])[:3]) if s in pts else "–" for s in shots]
            lines.append(f"| `{_md(w)}` | {mod} | " + " | ".join(cells) + " |")
        lines += ["", f"![Few-shot curves]({plots['few_shot_svg']})"]
    if "per_class_svg" in plots:
        lines += ["", "## Per-class recall", "", f"![Per-class recall]({plots['per_class_svg']})"]
    sections = [("Notes", [_md(n) for n in c.get("notes") or []]),
                ("Skipped weights", [f"`{_md(w)}`: {_md(why)}" for w, why in (c.get("skipped") or {}).items()])]
    failed = c.get("failed_items") or {}
    if failed:
        sections.append((f"Failed items ({len(failed)})",
                         [f"`{_md(p)}`: {_md(why)}" for p, why in list(failed.items())[:10]]
                         + ([f"… and {len(failed) - 10} more (all in rank.json)"] if len(failed) > 10 else [])))
    for title, items in sections:
        if items:
            lines += ["", f"## {title}", "", *[f"- {i}" for i in items]]
    if tied:  # the report ends as it began: which weights, and what to run next
        names = ", ".join(f"`{_md(r['weight'])}`" for r in tied)
        lines += ["", "## Next step", "", f"Best for {best.get('modality')}: {names}."]
        if c.get("finetune_command"):
            lines += ["", "```bash", str(c["finetune_command"]), "```"]
    return "\n".join(lines) + "\n"


def write_report(out: str | os.PathLike, rows: list[dict], curves: dict, recalls: dict, classes: list[str],
                 context: dict) -> dict[str, Path]:
    """Write the ranking outputs (see the module docstring) into ``out`` and return their paths by kind:
    ``csv``, ``json``, ``markdown``, ``ranking_svg``, and ``few_shot_svg`` / ``per_class_svg`` when there are
    curves / recalls. A plot left from an earlier run that has no data this time is removed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "rank.csv", "json": out / "rank.json", "markdown": out / "report.md",
             "ranking_svg": out / "ranking.svg"}
    order_fs = _series_order([k for k, v in curves.items() if v], rows)
    order_pc = _series_order([k for k, v in recalls.items() if len(v)], rows)
    texts = {"ranking_svg": _ranking_svg(rows)}
    for key, name, order, make in (("few_shot_svg", "few_shot.svg", order_fs, lambda: _few_shot_svg(curves, order_fs)),
                                   ("per_class_svg", "per_class.svg", order_pc,
                                    lambda: _per_class_svg(recalls, list(classes), order_pc))):
        if order:
            paths[key], texts[key] = out / name, make()
        else:
            (out / name).unlink(missing_ok=True)
    doc = {"context": context, "rows": rows, "few_shot": curves,
           "per_class_recall": {"classes": list(classes), "recalls": recalls}}
    texts["csv"] = _csv_text(rows)
    texts["json"] = json.dumps(_jsonable(doc), indent=1, allow_nan=False) + "\n"
    texts["markdown"] = _markdown(rows, curves, order_fs, context, {k: p.name for k, p in paths.items()})
    for key in sorted(paths, key=lambda k: k == "markdown"):  # the report last, once what it links is in place
        write_text_atomic(paths[key], texts[key])
    return paths
