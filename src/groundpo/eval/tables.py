"""Markdown tables in the papers' layouts, from ``metrics.json`` contents.

- AVHBench (MoD-DPO Table 1): task x {Acc, Pre, Rec, F1} (+ the leaderboard's Yes %).
- CMM (MoD-DPO Table 2): pa / hr per subset (the ``sub_category`` names of the data).
- DailyOmni, MVBench, MMAU: accuracy, overall and per task.

:func:`results_markdown` renders one run; :func:`compare_markdown` puts several runs side by
side, one row per run ("base", "+DPO", "+MoD-DPO"), one table per benchmark. Scores print
with one decimal; a score with nothing to average over prints as "–".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["TITLES", "compare_markdown", "fmt", "markdown_table", "results_markdown", "run_table"]

TITLES = {
    "avhbench": "AVHBench",
    "cmm": "CMM",
    "dailyomni": "DailyOmni",
    "mvbench": "MVBench",
    "mmau": "MMAU (test-mini)",
}
AVH_ROWS = {"ADVH": "ADVH (audio-driven video halluc.)", "VDAH": "VDAH (video-driven audio halluc.)", "AVM": "AV matching"}


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; the first column left-aligned, the others right-aligned."""
    cells = [[_cell(h) for h in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        padded = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("| " + " | ".join(padded) + " |")
        if n == 0:
            lines.append("|" + "|".join([":" + "-" * (widths[0] + 1)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------


def _avhbench(scores: dict[str, Any]) -> tuple[str, list[str]]:
    rows = []
    for code, label in AVH_ROWS.items():
        s = scores.get(code)
        if s:
            rows.append([label, *(fmt(s.get(k)) for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")), s["n"], s.get("unparsed", 0)])
    table = markdown_table(["Task", "Acc", "Pre", "Rec", "F1", "Yes %", "N", "Unparsed"], rows)
    notes = [
        (
            "Pre = % correct among gold-yes items, Rec = % correct among gold-no items (the MoD-DPO paper's "
            "definitions), F1 = their harmonic mean; unparsable answers count as wrong."
        )
    ]
    if "AVC" in scores:
        notes.append(f"AV captioning: {scores['AVC']['n']} caption(s) in predictions.jsonl, not scored.")
    return table, notes


def _cmm(scores: dict[str, Any]) -> tuple[str, list[str]]:
    rule = scores["rule"]
    s = scores[rule]
    subs = scores.get("sub_categories") or [k for k in s if k != "overall"]
    grans = scores.get("granularities") or []
    rows = [[name, fmt(s[name]["pa"]), fmt(s[name]["hr"]), fmt(s[name]["acc"]), s[name]["n"]] for name in subs if name in s]
    rows += [[f"{name} (granularity)", fmt(s[name]["pa"]), fmt(s[name]["hr"]), fmt(s[name]["acc"]), s[name]["n"]] for name in grans if name in s]
    o = s["overall"]
    rows.append(["Overall", fmt(o["pa"]), fmt(o["hr"]), fmt(o["acc"]), o["n"]])
    other = "strict" if rule == "official" else "official"
    so = scores[other]["overall"]
    how = (
        "official CMM rule: the gold word in the first 5 characters of the lower-cased answer"
        if rule == "official"
        else "strict rule: whole-word yes/no parsing"
    )
    notes = [
        (
            f"pa = % of gold-yes answered yes (perception accuracy), hr = % of gold-no answered no (hallucination "
            f"resistance); {how}."
        ),
        (
            f"With the {other} rule: pa {fmt(so['pa'])}, hr {fmt(so['hr'])}, acc {fmt(so['acc'])}; "
            f"{scores.get('unparsed', 0)} answer(s) have no parsable yes/no."
        ),
    ]
    return markdown_table(["Subset", "pa", "hr", "Acc", "N"], rows), notes


def _choice(scores: dict[str, Any]) -> tuple[str, list[str]]:
    o = scores["overall"]
    rows = [["Overall", fmt(o["accuracy"]), o["n"], o["unparsed"]]]
    rows += [[t, fmt(s["accuracy"]), s["n"], s["unparsed"]] for t, s in scores.get("task", {}).items()]
    for key, groups in scores.items():
        if key in ("overall", "task"):
            continue
        rows += [[f"{key}: {g}", fmt(s["accuracy"]), s["n"], s["unparsed"]] for g, s in groups.items()]
    return markdown_table(["Task", "Acc", "N", "Unparsed"], rows), ["Accuracy in %; unparsable answers count as wrong."]


def run_table(benchmark: str, scores: dict[str, Any]) -> tuple[str, list[str]]:
    """``(table, notes)`` for one run's ``scores``."""
    if benchmark == "avhbench":
        return _avhbench(scores)
    if benchmark == "cmm":
        return _cmm(scores)
    return _choice(scores)


def results_markdown(metrics: dict[str, Any]) -> str:
    """The ``results.md`` of a run: title, table, notes."""
    bench = metrics["benchmark"]
    table, notes = run_table(bench, metrics["scores"])
    head = f"## {TITLES.get(bench, bench)}: {metrics.get('name', '')}\n\n"
    info = f"{metrics['n_predicted']} of {metrics['n_items']} item(s) scored"
    if metrics.get("limit") is not None:
        info += f" (--limit {metrics['limit']} per task)"
    return head + table + "\n" + "\n".join(f"- {n}" for n in [info + ".", *notes]) + "\n"


# ---------------------------------------------------------------------------------------------
# several runs
# ---------------------------------------------------------------------------------------------


def _union(lists: Sequence[Sequence[str]]) -> list[str]:
    return list(dict.fromkeys(x for seq in lists for x in seq))


def _compare_one(bench: str, runs: list[dict[str, Any]], names: list[str]) -> str:
    if bench == "avhbench":
        codes = [c for c in AVH_ROWS if any(c in r["scores"] for r in runs)]
        header = ["Model"] + [f"{c} {m}" for c in codes for m in ("Acc", "Pre", "Rec", "F1")]
        rows = []
        for name, r in zip(names, runs):
            row = [name]
            for c in codes:
                s = r["scores"].get(c) or {}
                row += [fmt(s.get(k)) for k in ("accuracy", "precision", "recall", "f1")]
            rows.append(row)
        return markdown_table(header, rows)
    if bench == "cmm":
        subs = _union([r["scores"].get("sub_categories") or [] for r in runs])
        header = ["Model"] + [f"{s} {m}" for s in subs for m in ("pa", "hr")] + ["Overall pa", "Overall hr", "Overall acc"]
        rows = []
        for name, r in zip(names, runs):
            s = r["scores"][r["scores"]["rule"]]
            row = [name]
            for sub in subs:
                g = s.get(sub) or {}
                row += [fmt(g.get("pa")), fmt(g.get("hr"))]
            o = s["overall"]
            rows.append(row + [fmt(o["pa"]), fmt(o["hr"]), fmt(o["acc"])])
        return markdown_table(header, rows)
    tasks = _union([list(r["scores"].get("task", {})) for r in runs])
    header = ["Model", "Overall"] + tasks
    rows = [
        [name, fmt(r["scores"]["overall"]["accuracy"])] + [fmt((r["scores"].get("task", {}).get(t) or {}).get("accuracy")) for t in tasks]
        for name, r in zip(names, runs)
    ]
    return markdown_table(header, rows)


def compare_markdown(runs: Sequence[dict[str, Any]], names: Sequence[str] | None = None) -> str:
    """Side-by-side tables of several runs' ``metrics.json`` contents: one table per benchmark,
    one row per run, columns in the paper's layout."""
    names = list(names) if names else [r.get("name") or f"run {i + 1}" for i, r in enumerate(runs)]
    if len(names) != len(runs):
        raise ValueError(f"{len(names)} names for {len(runs)} runs")
    parts = []
    for bench in dict.fromkeys(r["benchmark"] for r in runs):
        idx = [i for i, r in enumerate(runs) if r["benchmark"] == bench]
        body = _compare_one(bench, [runs[i] for i in idx], [names[i] for i in idx])
        rules = {runs[i]["scores"].get("rule") for i in idx} - {None}
        note = f"\nCMM rule: {', '.join(sorted(rules))}.\n" if rules else ""
        parts.append(f"## {TITLES.get(bench, bench)}\n\n{body}{note}")
    return "\n".join(parts)
