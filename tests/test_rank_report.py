"""The files `avidzoo rank` writes, from numbers known in advance: tables read back, plots placed on their scales."""

from __future__ import annotations

import csv
import json
import math
import re
import xml.etree.ElementTree as ET

import pytest

import avidzoo.rank.report as report
from avidzoo.rank.report import (
    CSV_COLUMNS,
    NAN_COLOUR,
    OTHER_COLOUR,
    TIED_COLOUR,
    ranking_x,
    recall_colour,
    write_report,
)

SVG = "{http://www.w3.org/2000/svg}"
A, B, C = "cross_avid_r2plus1d.kinetics400", "avid_r2plus1d.audioset", "runs/a&b <c>.pt"
# (weight, modality) -> logistic (score, low, high, tied); listed out of order so that sorting shows
LOGISTIC = {(C, "video"): (0.55, 0.48, 0.62, False), (A, "video"): (0.80, 0.74, 0.86, True),
            (B, "video"): (0.78, 0.71, 0.84, True), (A, "audio"): (0.41, 0.35, 0.47, False),
            (B, "audio"): (0.70, 0.64, 0.76, True), (C, "audio"): (0.66, 0.60, 0.72, True)}
CLASSES = ["archery", "bowling", "a class with a long name"]


def make_rows() -> list[dict]:
    rows = []
    for j, ((w, mod), (score, low, high, tied)) in enumerate(LOGISTIC.items()):
        best = A if mod == "video" else B
        common = {"weight": w, "modality": mod, "extract_ms_per_clip": 10.0 + j + 0.123456,
                  "published": {"ucf101_top1": 83.7} if w == A else {}}
        for p, shift in (("knn1", -0.10), ("knn5", -0.05), ("knn20", -0.07), ("logistic", 0.0)):
            s = score + shift
            rows.append({**common, "protocol": p, "score": s, "low": low + shift, "high": high + shift,
                         "tied": tied, "best": best, "diff": s - 0.8, "diff_low": s - 0.85, "diff_high": s - 0.75,
                         "p_not_worse": 0.5 if tied else 0.01,
                         "params": {"C": [0.1, 1.0, 10.0]} if p == "logistic" else {"k": int(p[3:])}})
        rows.append({**common, "protocol": "logme", "score": -1.23456 - j, "low": None, "high": None, "tied": None,
                     "best": None, "diff": None, "diff_low": None, "diff_high": None, "p_not_worse": None,
                     "params": {}})
    return rows


def make_curves() -> dict:
    return {f"{w}|{m}": {1: [s - 0.3, s - 0.4, s - 0.2], 5: [s - 0.1, s - 0.2, s], 10: [s, s - 0.05, s + 0.05]}
            for (w, m), (s, *_) in LOGISTIC.items()}


def make_recalls() -> dict:
    return {f"{w}|{m}": [s, 1.0 - s / 2, math.nan if w == C else s / 3] for (w, m), (s, *_) in LOGISTIC.items()}


def make_context() -> dict:
    return {"data": "clips/labels.csv", "items": 240, "classes": 3, "folds": 5, "repeats": 3, "seed": 0,
            "episodes": 20, "elapsed_s": 12.5, "skipped": {"broken.pt": "could not load: bad checksum"},
            "failed_items": {f"clips/bad{i}.mp4": "no video stream" for i in range(12)},
            "best": {"modality": "video", "weights": [A, B]},
            "finetune_command": f"avidzoo finetune --weights {A} --data clips/labels.csv",
            "notes": ["LogME ranks avid_r2plus1d.audioset first for video, unlike the probes."]}


@pytest.fixture()
def written(tmp_path):
    out = tmp_path / "rank_out"
    paths = write_report(out, make_rows(), make_curves(), make_recalls(), CLASSES, make_context())
    return out, paths


def svg(path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg" and root.get("version") == "1.1"
    return root


def by_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}{tag}") if e.get("class") == cls]


def test_returns_every_file(written):
    out, paths = written
    assert list(paths) == ["csv", "json", "markdown", "ranking_svg", "few_shot_svg", "per_class_svg"]
    assert {p.name for p in paths.values()} == {p.name for p in out.iterdir()}
    assert [paths[k].name for k in ("csv", "json", "markdown")] == ["rank.csv", "rank.json", "report.md"]


def test_csv_reads_back_to_the_same_numbers(written):
    _, paths = written
    rows = make_rows()
    with open(paths["csv"], newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        back = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert len(back) == len(rows) == 30
    for want, got in zip(rows, back):
        assert (got["weight"], got["modality"], got["protocol"]) == (want["weight"], want["modality"], want["protocol"])
        for col in ("score", "low", "high", "diff", "diff_low", "diff_high", "p_not_worse", "extract_ms_per_clip"):
            if want[col] is None:
                assert got[col] == ""
            else:
                assert got[col] == f"{want[col]:.4f}" and float(got[col]) == pytest.approx(want[col], abs=5e-5)
        assert got["tied"] == {True: "true", False: "false", None: ""}[want["tied"]]
        assert got["best"] == (want["best"] or "")
        assert json.loads(got["params"]) == want["params"]
        assert json.loads(got["published"]) == want["published"]


def test_json_is_valid_with_nan_as_null(written):
    _, paths = written
    text = paths["json"].read_text()
    assert "NaN" not in text
    doc = json.loads(text)
    assert set(doc) == {"context", "rows", "few_shot", "per_class_recall"}
    assert doc["context"] == make_context() | {"failed_items": make_context()["failed_items"]}
    assert doc["rows"] == make_rows()
    assert doc["per_class_recall"]["classes"] == CLASSES
    assert doc["per_class_recall"]["recalls"][f"{C}|video"] == [0.55, 1.0 - 0.55 / 2, None]
    assert doc["few_shot"][f"{A}|video"]["5"] == pytest.approx([0.7, 0.6, 0.8])


def test_markdown_gives_the_verdict_first_then_sorted_tables(written):
    _, paths = written
    md = paths["markdown"].read_text()
    assert md.startswith("# ")
    assert "240 labelled items in 3 classes" in md and "5-fold" in md and "3 repeats" in md and "seed 0" in md
    verdict = md.index("## Verdict")
    assert verdict < md.index("## Video") < md.index("## Audio")
    first, second = md.index(f"1. `{A}`: 80.0% [74.0, 86.0]"), md.index(f"2. `{B}`: 78.0% [71.0, 84.0]")
    assert verdict < first < second < md.index("## Video")
    assert f"```bash\n{make_context()['finetune_command']}\n```" in md
    assert md.index("```bash") < md.index("## Video")

    def table(section: str) -> list[list[str]]:
        block = md[md.index(section):].split("\n\n")[1]
        return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in block.splitlines()[2:]]

    video, audio = table("## Video"), table("## Audio")
    assert [r[1] for r in video] == [f"`{A}`", f"`{B}`", f"`{C}`"]
    assert [r[1] for r in audio] == [f"`{B}`", f"`{C}`", f"`{A}`"]
    assert [r[0] for r in video] == ["1", "2", "3"]
    assert video[0][2:6] == ["80.0% [74.0, 86.0]", "yes", "70.0%", "75.0%"]
    assert video[2][3] == "no" and audio[2][3] == "no"
    assert video[0][7] == "-2.235" and video[0][9] == "ucf101_top1 83.7"
    assert "| `" + A + "` | video | 50.0% [40.0, 60.0] | 70.0% [60.0, 80.0] | 80.0% [75.0, 85.0] |" in md
    for image in ("ranking.svg", "few_shot.svg", "per_class.svg"):
        assert re.search(rf"!\[[^\]]+\]\({image}\)", md)
    assert "LogME ranks" in md and "`broken.pt`: could not load: bad checksum" in md
    assert "## Failed items (12)" in md and "`clips/bad0.mp4`: no video stream" in md and "2 more" in md


def test_ranking_svg_places_dots_and_whiskers_on_the_axis(written):
    _, paths = written
    root = svg(paths["ranking_svg"])
    dots, whiskers = by_class(root, "circle", "dot"), by_class(root, "line", "whisker")
    assert len(dots) == len(whiskers) == len(LOGISTIC) == len(list(root.iter(f"{SVG}circle")))
    labels = [e.text for e in by_class(root, "text", "label")]
    expected = sorted(LOGISTIC.items(), key=lambda kv: -kv[1][0])
    assert labels == [f"{w} | {m}" for (w, m), _ in expected]
    for dot, whisker, ((w, m), (score, low, high, tied)) in zip(dots, whiskers, expected):
        assert dot.find(f"{SVG}title").text.startswith(f"{w} | {m}: ")
        assert float(dot.get("cx")) == pytest.approx(ranking_x(score), abs=0.01)
        assert float(whisker.get("x1")) == pytest.approx(ranking_x(low), abs=0.01)
        assert float(whisker.get("x2")) == pytest.approx(ranking_x(high), abs=0.01)
        assert float(whisker.get("y1")) == float(dot.get("cy"))
        assert dot.get("fill") == whisker.get("stroke") == (TIED_COLOUR if tied else OTHER_COLOUR)
    assert [float(d.get("cy")) for d in dots] == sorted(float(d.get("cy")) for d in dots)
    ticks = {t.text: float(t.get("x")) for t in root.iter(f"{SVG}text") if (t.text or "").endswith("0%")}
    assert ticks["0%"] == pytest.approx(ranking_x(0.0)) and ticks["100%"] == pytest.approx(ranking_x(1.0))
    assert ranking_x(0.5) - ranking_x(0.0) == pytest.approx(ranking_x(1.0) - ranking_x(0.5))


def test_few_shot_svg_has_a_curve_per_series(written):
    _, paths = written
    root = svg(paths["few_shot_svg"])
    curves = by_class(root, "polyline", "curve")
    assert len(curves) == len(LOGISTIC)
    assert len(by_class(root, "line", "whisker")) == 3 * len(LOGISTIC)
    for line in curves:
        pts = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
        xs, ys = zip(*pts)
        assert len(pts) == 3 and xs == tuple(sorted(xs)) and ys == tuple(sorted(ys, reverse=True))  # rising curves
    legend = {t.text for t in root.iter(f"{SVG}text")}
    assert {f"{w} | {m}" for w, m in LOGISTIC} <= legend and {"1", "5", "10"} <= legend


def test_heatmap_colours_follow_recall(written):
    _, paths = written
    root = svg(paths["per_class_svg"])
    cells = by_class(root, "rect", "cell")
    assert len(cells) == len(LOGISTIC) * len(CLASSES)
    recalls = make_recalls()
    order = [f"{w}|{m}" for (w, m), _ in sorted(LOGISTIC.items(), key=lambda kv: -kv[1][0])]
    values = [v for key in order for v in recalls[key]]
    assert [c.get("fill") for c in cells] == [recall_colour(v) for v in values]
    assert sum(c.get("fill") == NAN_COLOUR for c in cells) == 2

    def darkness(hex_colour: str) -> float:
        r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
        return -(0.2126 * r + 0.7152 * g + 0.0722 * b)

    known = sorted((v, c.get("fill")) for v, c in zip(values, cells) if not math.isnan(v))
    shades = [darkness(fill) for _, fill in known]
    assert shades == sorted(shades) and shades[0] < shades[-1]
    assert recall_colour(0.0) == "#f7fbff" and recall_colour(1.0) == "#08306b"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "55" in texts and "n/a" in texts and "a class with a long name" in texts
    assert any("rotate" in (t.get("transform") or "") for t in by_class(root, "text", "class"))


def test_many_classes_hide_values(tmp_path):
    classes = [f"c{i}" for i in range(25)]
    recalls = {f"{A}|video": [i / 24 for i in range(25)]}
    paths = write_report(tmp_path, make_rows(), {}, recalls, classes, make_context())
    root = svg(paths["per_class_svg"])
    assert len(by_class(root, "rect", "cell")) == 25
    assert not any((t.text or "").isdigit() for t in root.iter(f"{SVG}text"))
    assert "few_shot_svg" not in paths and "few_shot.svg" not in paths["markdown"].read_text()


def test_rerun_overwrites_atomically(tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = write_report(out, make_rows(), make_curves(), make_recalls(), CLASSES, make_context())
    inodes = {k: p.stat().st_ino for k, p in first.items()}
    written = []

    def spy(path, text):
        written.append(path)
        return real(path, text)

    real = report.write_text_atomic
    monkeypatch.setattr(report, "write_text_atomic", spy)
    rows = make_rows()
    for r in rows:
        if r["protocol"] == "logistic" and r["weight"] == C and r["modality"] == "video":
            r.update(score=0.9, low=0.85, high=0.95)
    second = write_report(out, rows, make_curves(), make_recalls(), CLASSES, make_context())
    assert sorted(written) == sorted(second.values())
    assert {k: p.stat().st_ino for k, p in second.items()} != inodes  # replaced by rename, not rewritten in place
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in second.values())
    assert not [p for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert "0.9000" in second["csv"].read_text()
    third = write_report(out, make_rows(), {}, {}, CLASSES, make_context())
    assert set(third) == {"csv", "json", "markdown", "ranking_svg"}
    assert sorted(p.name for p in out.iterdir()) == ["rank.csv", "rank.json", "ranking.svg", "report.md"]
    md = third["markdown"].read_text()
    assert "few_shot.svg" not in md and "per_class.svg" not in md
