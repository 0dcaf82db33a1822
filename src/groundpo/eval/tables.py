"""Markdown tables in the papers' layouts, from ``metrics.json`` contents.

- AVHBench (MoD-DPO Table 1): task x {Acc, Pre, Rec, F1} (+ the leaderboard's Yes %).
- CMM (MoD-DPO Table 2): pa / hr per subset (the ``sub_category`` names of the data).
- DailyOmni, MVBench, MMAU: accuracy, overall and per task.
- AMBER (JoMPO, MFPO, MBPO tables): generative CHAIR / Cover / Hal / Cog and discriminative
  Acc / F1, overall and per dimension.
- Object HalBench: CHAIRs / CHAIRi / object recall; MMHal-Bench: score and hallucination rate,
  per question type; POPE: Acc / Pre / Rec / F1 / Yes % per split and their average.

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
    "amber": "AMBER",
    "objhal": "Object HalBench",
    "mmhal": "MMHal-Bench",
    "pope": "POPE",
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


_YES_NO_HOW = {
    "amber": ("AMBER's scorer: only the exact answers 'Yes' and 'No' count", "whole-word yes/no parsing"),
    "pope": ("POPE's rule: 'no' when the first sentence has the word no/No/not, else 'yes'", "whole-word yes/no parsing"),
}


def _rule_note(bench: str, block: dict[str, Any], headline: Any) -> str:
    rule = block["rule"]
    other = "lenient" if rule == "official" else "official"
    how = _YES_NO_HOW[bench][0 if rule == "official" else 1]
    return f"Yes/no rule: {rule} ({how}). With the {other} rule: {headline(block[other])}."


def _amber(scores: dict[str, Any]) -> tuple[str, list[str]]:
    parts, notes = [], []
    g = scores.get("generative")
    if g:
        parts.append(markdown_table(["Generative", "CHAIR", "Cover", "Hal", "Cog", "N"], [["all", *(fmt(g[k]) for k in ("chair", "cover", "hal", "cog")), g["n"]]]))
        notes.append("CHAIR = % hallucinated object mentions, Cover = % annotated objects mentioned, Hal = % answers with a "
                     "hallucination, Cog = % of the hallucination-prone objects mentioned (lower is better except Cover); "
                     + ("synonyms: " + g["synonyms"] if g.get("synonyms") else "synonym matching off (--spacy_model none)") + ".")
    d = scores.get("discriminative")
    if d:
        s = d[d["rule"]]
        rows = [[name, *(fmt(s[name][k]) for k in ("accuracy", "precision", "recall", "f1")), s[name]["n"], s[name]["unparsed"]] for name in s]
        parts.append(markdown_table(["Discriminative", "Acc", "Pre", "Rec", "F1", "N", "Unparsed"], rows))
        notes.append("Pre / Rec are those of the 'No' answers, as AMBER reports them.")
        notes.append(_rule_note("amber", d, lambda o: f"acc {fmt(o['overall']['accuracy'])}, F1 {fmt(o['overall']['f1'])}"))
    return "\n".join(parts), notes


def _objhal(scores: dict[str, Any]) -> tuple[str, list[str]]:
    row = ["Object HalBench", *(fmt(scores[k]) for k in ("chair_s", "chair_i", "recall")), scores["n"], scores["mentions"]]
    table = markdown_table(["", "CHAIRs", "CHAIRi", "Recall", "N", "Mentions"], [row])
    note = (
        "CHAIRs = % answers with a hallucinated COCO object, CHAIRi = % of COCO object mentions that are hallucinated, "
        f"Recall = % of the ground-truth objects mentioned; synonyms: {scores.get('synonyms')}."
    )
    return table, [note]


def _mmhal(scores: dict[str, Any]) -> tuple[str, list[str]]:
    rows = [["Overall", fmt(scores["score"], 2), fmt(scores["hallucination_rate"]), scores["n"], scores["unparsed"]]]
    rows += [[t, fmt(s["score"], 2), fmt(s["hallucination_rate"]), s["n"], s["unparsed"]] for t, s in scores.get("question_type", {}).items()]
    return markdown_table(["Question type", "Score", "Hal. rate", "N", "No rating"], rows), [
        f"Score = mean judge rating (0-6), Hal. rate = % rated below 3; a review without one valid rating counts 0. Judge: {scores.get('judge_model')}."
    ]


def _pope(scores: dict[str, Any]) -> tuple[str, list[str]]:
    s = scores[scores["rule"]]
    names = [*scores["splits"], *(["average"] if "average" in s else [])]
    rows = [[n, *(fmt(s[n][k]) for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")), s[n]["n"]] for n in names]
    notes = [_rule_note("pope", scores, lambda o: ", ".join(f"{n} acc {fmt(o[n]['accuracy'])} F1 {fmt(o[n]['f1'])}" for n in names))]
    return markdown_table(["Split", "Acc", "Pre", "Rec", "F1", "Yes %", "N"], rows), notes


def run_table(benchmark: str, scores: dict[str, Any]) -> tuple[str, list[str]]:
    """``(table, notes)`` for one run's ``scores``."""
    if benchmark in _IMAGE_TABLES:
        return _IMAGE_TABLES[benchmark](scores)
    if benchmark == "avhbench":
        return _avhbench(scores)
    if benchmark == "cmm":
        return _cmm(scores)
    return _choice(scores)


_IMAGE_TABLES = {"amber": _amber, "objhal": _objhal, "mmhal": _mmhal, "pope": _pope}


def results_markdown(metrics: dict[str, Any]) -> str:
    """The ``results.md`` of a run: title, table, notes."""
    bench = metrics["benchmark"]
    table, notes = run_table(bench, metrics["scores"])
    head = f"## {TITLES.get(bench, bench)}: {metrics.get('name', '')}\n\n"
    if metrics.get("decoding"):
        d = metrics["decoding"]
        head += f"Decoding: {d['method']} (alpha {d['alpha']}, beta {d['beta']}, noise step {d['noise_step']}, entropy gate {d['entropy_threshold']}).\n\n"
    info = f"{metrics['n_predicted']} of {metrics['n_items']} item(s) scored"
    if metrics.get("limit") is not None:
        info += f" (--limit {metrics['limit']} per task)"
    return head + table + "\n" + "\n".join(f"- {n}" for n in [info + ".", *notes]) + "\n"


# ---------------------------------------------------------------------------------------------
# several runs
# ---------------------------------------------------------------------------------------------


def _union(lists: Sequence[Sequence[str]]) -> list[str]:
    return list(dict.fromkeys(x for seq in lists for x in seq))


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _compare_image(bench: str, runs: list[dict[str, Any]], names: list[str]) -> str:
    columns: list[tuple[str, Any]]
    if bench == "amber":
        columns = [(k.upper() if k == "chair" else k.capitalize(), lambda s, k=k: _get(s, "generative", k)) for k in ("chair", "cover", "hal", "cog")]
        columns += [(f"{lab}", lambda s, k=k: _get(s, "discriminative", s.get("discriminative", {}).get("rule", "official"), "overall", k)) for lab, k in (("Acc", "accuracy"), ("F1", "f1"))]
    elif bench == "objhal":
        columns = [(lab, lambda s, k=k: s.get(k)) for lab, k in (("CHAIRs", "chair_s"), ("CHAIRi", "chair_i"), ("Recall", "recall"))]
    elif bench == "mmhal":
        columns = [("Score", lambda s: s.get("score")), ("Hal. rate", lambda s: s.get("hallucination_rate"))]
    else:  # pope
        splits = _union([r["scores"].get("splits", []) for r in runs]) + ["average"]
        columns = [(f"{sp} {lab}", lambda s, sp=sp, k=k: _get(s, s.get("rule", "official"), sp, k)) for sp in splits for lab, k in (("Acc", "accuracy"), ("F1", "f1"))]
        columns = [c for c in columns if any(c[1](r["scores"]) is not None for r in runs)]
    rows = [[name, *(fmt(get(r["scores"]), 2 if lab == "Score" else 1) for lab, get in columns)] for name, r in zip(names, runs)]
    return markdown_table(["Model", *(lab for lab, _ in columns)], rows)


def _compare_one(bench: str, runs: list[dict[str, Any]], names: list[str]) -> str:
    if bench in _IMAGE_TABLES:
        return _compare_image(bench, runs, names)
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
        rules = {runs[i]["scores"].get("rule") or _get(runs[i]["scores"], "discriminative", "rule") for i in idx} - {None}
        label = "CMM rule" if bench == "cmm" else "Yes/no rule"
        note = f"\n{label}: {', '.join(sorted(rules))}.\n" if rules else ""
        methods = sorted({(runs[i].get("decoding") or {}).get("method", "greedy") for i in idx})
        if methods != ["greedy"]:
            note += "\nDecoding: " + ", ".join(f"{names[i]}: {(runs[i].get('decoding') or {}).get('method', 'greedy')}" for i in idx) + ".\n"
        parts.append(f"## {TITLES.get(bench, bench)}\n\n{body}{note}")
    return "\n".join(parts)
