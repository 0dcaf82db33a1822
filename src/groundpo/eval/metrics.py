"""Answer parsers and benchmark scores, as the papers define them. Pure functions, no model.

Scores are percentages (0–100). A group with nothing to average over (no gold "yes" item for a
precision, say) scores ``None``, written ``null`` in ``metrics.json`` and ``–`` in tables, so that
an empty group is never mistaken for a score of 0.

Yes/no answers (AVHBench, CMM ``rule="strict"``) are read by :func:`parse_yes_no`, which matches
whole words only: the "no" in "know", "piano", "nothing" or "snow" is not an answer. A known
third-party AVHBench scorer tests ``"no" in prediction`` and so marks "I don't know" as "no"; the
tests in ``tests/test_eval_metrics.py`` pin that we do not.

Multiple-choice answers (DailyOmni, MVBench, MMAU) are read by :func:`parse_choice`.

The image hallucination benchmarks: :func:`pope_scores` (POPE), :func:`amber_discriminative_scores`
and :func:`amber_generative_scores` (AMBER), :func:`chair_scores` (Object HalBench's CHAIR) and
:func:`mmhal_scores` with :func:`parse_mmhal_rating` (MMHal-Bench). Each follows its official
scorer's rule (read, not copied); where that rule is needlessly brittle a ``lenient`` reading with
:func:`parse_yes_no` is computed beside it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "AMBER_DIMENSIONS",
    "MMHAL_QUESTION_TYPES",
    "amber_answer",
    "amber_discriminative_scores",
    "amber_generative_scores",
    "chair_scores",
    "choice_scores",
    "cmm_official_hit",
    "cmm_scores",
    "harmonic_mean",
    "mmhal_scores",
    "parse_choice",
    "parse_mmhal_rating",
    "parse_yes_no",
    "pope_answer",
    "pope_scores",
    "split_options",
    "yes_no_scores",
]

# ---------------------------------------------------------------------------------------------
# yes / no
# ---------------------------------------------------------------------------------------------

_YES_WORDS = r"yes|yeah|yep|yup"
_NO_WORDS = r"no|nope|nah"
_YES_RE = re.compile(rf"(?<!\w)(?:{_YES_WORDS})(?!\w)")
_NO_RE = re.compile(rf"(?<!\w)(?:{_NO_WORDS})(?!\w)")
# "yes or no", "yes/no", "no or yes", "yes and no", "yes | no", "yes-or-no": the question echoed,
# or a non-answer. Removed before anything else. (A comma does not join them: "Yes, no dog" answers.)
_ECHO_RE = re.compile(
    rf"(?<!\w)(?:{_YES_WORDS}|{_NO_WORDS})\s*(?:/|\||-or-|\bor\b|\band\b|&)\s*(?:{_YES_WORDS}|{_NO_WORDS})(?!\w)"
)
# The answer given first: "Yes.", "No, there is ...", "Answer: yes", "The final answer is no".
_LEAD_FILLER = r"^[\W_]*(?:(?:the\s+)?(?:final\s+|correct\s+|short\s+)?answer\s*(?:is|would\s+be|:)?[\W_]*)?"
_LEAD_YES_RE = re.compile(_LEAD_FILLER + rf"(?:{_YES_WORDS})(?!\w)")
_LEAD_NO_RE = re.compile(_LEAD_FILLER + rf"(?:(?:{_NO_WORDS})(?!\w)|not\s+(?:at\s+all|really)\b|absolutely\s+not\b|definitely\s+not\b|certainly\s+not\b)")
# "... the answer is yes" anywhere.
_STATED_RE = re.compile(rf"\banswer\s*(?:is|would\s+be|:|=)\s*[\W_]*({_YES_WORDS}|{_NO_WORDS})(?!\w)")
# Refusals and hedges that do not answer ("I'm not sure", "there is no way to know").
_REFUSAL_RE = re.compile(
    r"\b(?:not\s+sure|unsure|uncertain|unclear|"
    r"(?:cannot|can't|can\s+not|couldn't|could\s+not|am\s+unable\s+to|i'm\s+unable\s+to|unable\s+to)\s+"
    r"(?:be\s+)?(?:determine|tell|say|answer|confirm|know|see|hear|identify|verify|judge|access|view|watch|listen)|"
    r"(?:don't|do\s+not|doesn't|does\s+not)\s+know|no\s+way\s+to|impossible\s+to\s+(?:tell|determine|say|know)|"
    r"not\s+possible\s+to\s+(?:tell|determine|say|know)|not\s+enough\s+information|insufficient\s+information|"
    r"i'm\s+sorry|i\s+am\s+sorry|as\s+an\s+ai)\b"
)


def _normalise(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = re.sub(r"[*`#]+", " ", text)  # markdown emphasis / code / headers
    return re.sub(r"\s+", " ", text).strip().lower()


def parse_yes_no(text: str | None) -> str | None:
    """Read a yes/no answer from free text: ``"yes"``, ``"no"`` or ``None`` (unparsable).

    Rules, in order (all on whole words, case-insensitive):

    1. Echoes and non-answers are removed: "yes or no", "yes/no", "Yes and no".
    2. The answer given first wins: "Yes.", "No, there is ...", "Answer: yes", "Not at all",
       "The answer is no". So "Yes, but no dog barks" is "yes".
    3. "... the answer is yes" anywhere (all such statements must agree).
    4. A refusal or hedge is unparsable: "I don't know", "I'm not sure", "I cannot tell",
       "there is no way to know".
    5. Otherwise the words themselves: only yes-words ("yes", "yeah", "yep", "yup") -> "yes";
       only no-words ("no", "nope", "nah") -> "no"; both or neither -> ``None``.

    "no" inside another word ("know", "piano", "nothing", "nose", "snow") never counts, nor does
    "yes" inside "yesterday". Negated sentences without a no-word ("The man is not visible") are
    unparsable: we do not guess.
    """
    if not isinstance(text, str):
        return None
    s = _normalise(text)
    if not s:
        return None
    s = _ECHO_RE.sub(" ", s)
    s = re.sub(r"\s+", " ", s).strip()
    if not s:
        return None
    if _LEAD_YES_RE.match(s):
        return "yes"
    if _LEAD_NO_RE.match(s):
        return "no"
    stated = {m.group(1) for m in _STATED_RE.finditer(s)}
    if stated:
        kinds = {"yes" if _YES_RE.fullmatch(w) else "no" for w in stated}
        return kinds.pop() if len(kinds) == 1 else None
    if _REFUSAL_RE.search(s):
        return None
    has_yes = _YES_RE.search(s) is not None
    has_no = _NO_RE.search(s) is not None
    if has_yes and not has_no:
        return "yes"
    if has_no and not has_yes:
        return "no"
    return None


def _gold_yes_no(value: Any, index: int) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value.strip().lower() in ("yes", "no"):
        return value.strip().lower()
    raise ValueError(f"gold answer {index} is {value!r}; expected 'yes' or 'no'")


def _pct(num: int, den: int) -> float | None:
    return 100.0 * num / den if den else None


def harmonic_mean(a: float | None, b: float | None) -> float | None:
    """``2ab / (a + b)``; 0 when both are 0; ``None`` when either is ``None``."""
    if a is None or b is None:
        return None
    return 0.0 if a + b == 0 else 2.0 * a * b / (a + b)


def yes_no_scores(golds: Iterable[Any], preds: Iterable[str | None]) -> dict[str, float | int | None]:
    """AVHBench yes/no scores with the MoD-DPO paper's definitions, in percent.

    - ``accuracy``: % of items answered correctly;
    - ``precision``: % correct among items whose gold answer is yes;
    - ``recall``: % correct among items whose gold answer is no;
    - ``f1``: harmonic mean of that precision and recall;
    - ``yes_ratio``: % of all predictions that parse as yes (the leaderboard's "Yes (%)");
    - ``n``: number of items.

    ``preds`` are raw model outputs (or already ``"yes"``/``"no"``); each goes through
    :func:`parse_yes_no`, and an unparsable prediction counts as wrong. These are not the
    textbook precision/recall of the "yes" class: they are the per-class accuracies the paper
    calls precision and recall.
    """
    golds = [_gold_yes_no(g, i) for i, g in enumerate(golds)]
    parsed = [parse_yes_no(p) for p in preds]
    if len(golds) != len(parsed):
        raise ValueError(f"{len(golds)} gold answers but {len(parsed)} predictions")
    n = len(golds)
    correct = sum(g == p for g, p in zip(golds, parsed))
    n_yes = sum(g == "yes" for g in golds)
    n_no = n - n_yes
    correct_yes = sum(g == p == "yes" for g, p in zip(golds, parsed))
    correct_no = sum(g == p == "no" for g, p in zip(golds, parsed))
    precision = _pct(correct_yes, n_yes)
    recall = _pct(correct_no, n_no)
    return {
        "accuracy": _pct(correct, n),
        "precision": precision,
        "recall": recall,
        "f1": harmonic_mean(precision, recall),
        "yes_ratio": _pct(sum(p == "yes" for p in parsed), n),
        "n": n,
    }


# ---------------------------------------------------------------------------------------------
# CMM
# ---------------------------------------------------------------------------------------------


def cmm_official_hit(answer: str, prediction: str | None) -> bool:
    """The CMM scorer's hit test: the lower-cased gold word occurs in the first 5 characters
    of the stripped, lower-cased prediction. "No." and "Nope" hit "no"; so do "Not at all"
    and "Nothing" (by accident); "The answer is no" does not."""
    return answer.strip().lower() in (prediction or "").strip().lower()[:5]


def _cmm_record(record: Mapping[str, Any], index: int) -> tuple[str, str, str, str]:
    if not isinstance(record, Mapping):
        raise ValueError(f"CMM record {index} is a {type(record).__name__}, expected a mapping")
    for key in ("answer", "sub_category"):
        if key not in record:
            raise ValueError(f"CMM record {index} has no field {key!r}")
    pred = record.get("pred", record.get("prediction"))
    return str(record["answer"]), "" if pred is None else str(pred), str(record["sub_category"]), str(
        record.get("granularity") or ""
    )


def _cmm_group(rows: list[tuple[str, str]], rule: str) -> dict[str, float | int | None]:
    total = correct = n_yes = hit_yes = n_no = hit_no = 0
    for answer, pred in rows:
        total += 1
        if rule == "official":
            a = answer.strip().lower()
            p = pred.strip().lower()
            correct += a in p[:5]
            if "yes" in a[:5]:
                n_yes += 1
                hit_yes += "yes" in p[:5]
            elif "no" in a[:5]:
                n_no += 1
                hit_no += "no" in p[:5]
        else:
            a = answer.strip().lower()
            p = parse_yes_no(pred)
            correct += a == p
            if a == "yes":
                n_yes += 1
                hit_yes += p == "yes"
            elif a == "no":
                n_no += 1
                hit_no += p == "no"
    return {"pa": _pct(hit_yes, n_yes), "hr": _pct(hit_no, n_no), "acc": _pct(correct, total), "n": total}


def cmm_scores(records: Iterable[Mapping[str, Any]], rule: str = "official") -> dict[str, dict[str, Any]]:
    """CMM perception accuracy (pa) and hallucination resistance (hr), in percent.

    ``records`` are dicts with ``answer`` ("yes"/"no"), ``pred`` (the raw model output;
    ``prediction`` is accepted too), ``sub_category`` and ``granularity``: the lines of the
    CMM repository's ``final_output.json`` have this form and score as they are.

    - ``pa``: % of gold-"yes" items answered yes; ``hr``: % of gold-"no" items answered no;
      ``acc``: % of all items answered correctly; ``n``: item count.
    - Groups: ``"overall"``, then one per ``sub_category`` and one per ``granularity``, named as
      in the data (nothing is hard-coded). A sub-category and a granularity that share a name
      is an error.
    - ``rule="official"`` reproduces the CMM scorer (``evaluation/calculate_score.py``): a hit
      when the gold word appears in the first 5 characters of the stripped, lower-cased
      prediction (see :func:`cmm_official_hit`), as fractions there, percentages here.
      ``rule="strict"`` reads each prediction with :func:`parse_yes_no` instead.
    - Where the official script prints 0 for an empty group, we give ``None``.
    """
    if rule not in ("official", "strict"):
        raise ValueError(f"rule must be 'official' or 'strict', not {rule!r}")
    rows = [_cmm_record(r, i) for i, r in enumerate(records)]
    out: dict[str, dict[str, Any]] = {"overall": _cmm_group([(a, p) for a, p, _, _ in rows], rule)}
    subs = list(dict.fromkeys(s for _, _, s, _ in rows))
    grans = list(dict.fromkeys(g for _, _, _, g in rows if g))
    clash = (set(subs) & set(grans)) | ({"overall"} & (set(subs) | set(grans)))
    if clash:
        raise ValueError(f"CMM group names used twice (sub_category / granularity / overall): {sorted(clash)}")
    for sub in subs:
        out[sub] = _cmm_group([(a, p) for a, p, s, _ in rows if s == sub], rule)
    for gran in grans:
        out[gran] = _cmm_group([(a, p) for a, p, _, g in rows if g == gran], rule)
    return out


# ---------------------------------------------------------------------------------------------
# multiple choice
# ---------------------------------------------------------------------------------------------

_PUNCT = r"[\s\"'.,:;!?()\[\]{}<>~-]"
_LABEL_RE = re.compile(r"^\s*[\(\[]?([A-Za-z])\s*[\.\)\]:]\s*(.*)$", re.DOTALL)


def split_options(options: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """Letter -> option text. Accepts ``{"A": "cat", ...}``, ``["(A) cat", "(B) dog"]``,
    ``["A. cat", "B. dog"]`` or plain ``["cat", "dog"]`` (letters by position).

    Labels are stripped only when every option carries the label of its position, so a plain
    option such as "A child" or "B. B. King" keeps its text.
    """
    if isinstance(options, Mapping):
        return {str(k).strip().upper(): str(v).strip() for k, v in options.items()}
    options = [str(o) for o in options]
    letters = [chr(ord("A") + i) for i in range(len(options))]
    matches = [_LABEL_RE.match(o) for o in options]
    if options and all(m and m.group(1).upper() == letter for m, letter in zip(matches, letters)):
        return {letter: m.group(2).strip() for letter, m in zip(letters, matches)}
    return {letter: o.strip() for letter, o in zip(letters, options)}


def _norm_text(text: str) -> str:
    text = text.replace("\u2019", "'").lower()
    return re.sub(r"\s+", " ", text).strip()


def _option_text_match(text: str, opts: dict[str, str]) -> str | None:
    t = _norm_text(text)
    found: dict[str, str] = {}
    for letter, opt in opts.items():
        o = _norm_text(opt).rstrip(" .;:!?")
        if not o:
            continue
        if re.search(r"(?<!\w)" + re.escape(o) + r"(?!\w)", t):
            found[letter] = o
    # an option found only as part of a longer option that is found too does not count
    keep = [l for l, o in found.items() if not any(o != o2 and o in o2 for o2 in found.values())]
    return keep[0] if len(keep) == 1 else None


def _is_article(s: str, m: re.Match) -> bool:
    """``True`` when the matched letter is the article "A" ("A dog", "Answer: A cat")."""
    if m.group(1) not in ("A", "a"):
        return False
    before = s[m.start(1) - 1] if m.start(1) > 0 else ""
    return before not in ("(", "[") and re.match(r"\s+[a-z]", s[m.end(1) :]) is not None


def _another_letter_follows(s: str, end: int, cls: str) -> bool:
    """``True`` for "B or C", "B, C", "B and (C)", "B/C": a second letter offered right after."""
    return re.match(r"[\)\]]?\s*(?:,|/|&|\band\b|\bor\b)\s*[\(\[]?" + cls + r"(?!\w)", s[end:]) is not None


def parse_choice(text: str | None, options: Sequence[str] | Mapping[str, str]) -> str | None:
    """Read the chosen option letter from free text, or ``None``.

    ``options`` is the option list of the question (see :func:`split_options`); only its
    letters count, so "E" is no answer to a four-option question. Rules, in order:

    1. The whole answer is a letter: "B", "(B)", "b.", "[B]", "**B**".
    2. A stated answer: "The answer is B.", "Answer: (C)", "Option D", "my choice is b".
    3. A leading label: "B. dog", "(B) dog", "B) dog", "C: bird", "B, because ...".
       "A dog is barking" is not a label: "A" followed by a space and a word is the article.
       In 2 and 3 a second letter offered alongside makes the answer unparsable: "B or C",
       "B, C", "(B) and (C)", "The answer is B/C".
    4. A single parenthesised letter anywhere: "I pick (C) here." Several different ones:
       unparsable.
    5. The option text: exactly one option's text appears as whole words ("It is a dog." ->
       the option "dog"); an option contained in a longer option that appears too is dropped
       ("hot dog" beats "dog").
    6. A single stand-alone capital letter (between spaces, quotes, brackets or punctuation):
       "I would go with B". Several: unparsable.
    """
    if not isinstance(text, str):
        return None
    opts = split_options(options)
    if not opts:
        return None
    letters = "".join(sorted(opts))
    cls = "[" + re.escape(letters) + "]"
    cls_any = "[" + re.escape(letters + letters.lower()) + "]"
    s = re.sub(r"[*`#]+", " ", text.replace("\u2019", "'"))
    s = re.sub(r"\s+", " ", s).strip()
    if not s:
        return None

    m = re.fullmatch(_PUNCT + r"*[\(\[]?(" + cls_any + r")[\)\]]?" + _PUNCT + "*", s)
    if m:
        return m.group(1).upper()

    stated_matches = [
        m
        for m in re.finditer(
            r"(?i:\b(?:answer|option|choice)\b\s*(?:is|would\s+be|:|=|-)?\s*(?:option\s+)?[:\-]?\s*)[\(\[]?("
            + cls_any
            + r")(?!\w)",
            s,
        )
        if not _is_article(s, m)
    ]
    stated = [m.group(1).upper() for m in stated_matches]
    stated_end = stated_matches[0].end(1) if stated_matches else 0
    paren = set(re.findall(r"[\(\[](" + cls_any + r")[\)\]]", s))
    if stated:
        if len(set(stated)) > 1 or _another_letter_follows(s, stated_end, cls):
            return None
        return stated[0]

    m = re.match(r"^[\W_]*?[\(\[]?(" + cls + r")(?:\s*[\.\)\]:,]|$)", s)
    if m:
        if len({p.upper() for p in paren} | {m.group(1)}) > 1 or _another_letter_follows(s, m.end(1), cls):
            return None
        return m.group(1)

    if len(paren) == 1:
        return paren.pop().upper()
    if len(paren) > 1:
        return None

    by_text = _option_text_match(s, opts)
    if by_text is not None:
        return by_text

    lone = {
        m.group(1)
        for m in re.finditer(r"(?<![^\s\"'(\[{<])(" + cls + r")(?![^\s\"'.,:;!?)\]}>])", s)
        if not _is_article(s, m)
    }
    return lone.pop() if len(lone) == 1 else None


def choice_scores(
    golds: Iterable[str],
    preds: Iterable[str | None],
    options: Iterable[Sequence[str] | Mapping[str, str]] | None = None,
) -> dict[str, float | int | None]:
    """Multiple-choice accuracy in percent: ``{accuracy, n, unparsed}``.

    ``golds`` are option letters. With ``options`` (one option list per item) ``preds`` are raw
    outputs read by :func:`parse_choice`; without, ``preds`` are letters (or ``None``). An
    unparsable prediction counts as wrong.
    """
    golds = [str(g).strip().upper() for g in golds]
    preds = list(preds)
    if options is not None:
        preds = [parse_choice(p, o) for p, o in zip(preds, options, strict=True)]
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold answers but {len(preds)} predictions")
    correct = sum(g == p for g, p in zip(golds, preds))
    return {"accuracy": _pct(correct, len(golds)), "n": len(golds), "unparsed": sum(p is None for p in preds)}


# ---------------------------------------------------------------------------------------------
# POPE
# ---------------------------------------------------------------------------------------------

YES_NO_RULES = ("official", "lenient")


def _check_rule(rule: str) -> None:
    if rule not in YES_NO_RULES:
        raise ValueError(f"rule must be 'official' or 'lenient', not {rule!r}")


def pope_answer(text: str | None, rule: str = "official") -> str | None:
    """A POPE answer as the benchmark reads it.

    ``rule="official"`` (POPE's and LLaVA's ``eval_pope``): keep the text before the first ".",
    drop commas, split on spaces; "no" if one of the words is exactly "No", "no" or "not", otherwise
    "yes" -- so every answer parses, and "I don't know" is a yes. ``rule="lenient"``:
    :func:`parse_yes_no` (``None`` when there is no answer)."""
    _check_rule(rule)
    if rule == "lenient":
        return parse_yes_no(text)
    first = (text or "").split(".")[0].replace(",", "")
    words = first.split(" ")
    return "no" if {"No", "no", "not"} & set(words) else "yes"


def pope_scores(golds: Iterable[Any], preds: Iterable[str | None], rule: str = "official") -> dict[str, Any]:
    """POPE scores in percent, "yes" the positive class: ``accuracy``, ``precision`` (% of yes answers
    that are right), ``recall`` (% of gold yes answered yes), ``f1``, ``yes_ratio`` (% of answers
    that are yes), ``n`` and ``unparsed`` (lenient rule only: answers with no yes/no, counted wrong)."""
    golds = [_gold_yes_no(g, i) for i, g in enumerate(golds)]
    answers = [pope_answer(p, rule) for p in preds]
    if len(golds) != len(answers):
        raise ValueError(f"{len(golds)} gold answers but {len(answers)} predictions")
    tp = sum(g == a == "yes" for g, a in zip(golds, answers))
    said_yes = sum(a == "yes" for a in answers)
    gold_yes = sum(g == "yes" for g in golds)
    precision, recall = _pct(tp, said_yes), _pct(tp, gold_yes)
    return {
        "accuracy": _pct(sum(g == a for g, a in zip(golds, answers)), len(golds)),
        "precision": precision,
        "recall": recall,
        "f1": harmonic_mean(precision, recall),
        "yes_ratio": _pct(said_yes, len(golds)),
        "n": len(golds),
        "unparsed": sum(a is None for a in answers),
    }


# ---------------------------------------------------------------------------------------------
# AMBER
# ---------------------------------------------------------------------------------------------

# annotation "type" -> dimension (AMBER's own grouping: existence, attribute (state, number,
# action), relation); any other discriminative type is a relation question, as in AMBER's scorer
AMBER_DIMENSIONS = {
    "discriminative-hallucination": "existence",
    "discriminative-attribute-state": "state",
    "discriminative-attribute-number": "number",
    "discriminative-attribute-action": "action",
}


def amber_dimension(kind: str) -> str:
    return AMBER_DIMENSIONS.get(kind, "relation")


def amber_answer(text: str | None, rule: str = "official") -> str | None:
    """An AMBER yes/no answer. ``official``: AMBER's scorer compares the response with the exact
    strings "Yes" and "No" (we strip surrounding whitespace first): "Yes." and "yes" are neither.
    ``lenient``: :func:`parse_yes_no`."""
    _check_rule(rule)
    if rule == "lenient":
        return parse_yes_no(text)
    t = (text or "").strip()
    return {"Yes": "yes", "No": "no"}.get(t)


def _amber_group(rows: list[tuple[str, str | None]]) -> dict[str, Any]:
    # AMBER's precision and recall are those of the "no" answers
    said_no = sum(a == "no" for _, a in rows)
    gold_no = sum(g == "no" for g, _ in rows)
    right_no = sum(g == a == "no" for g, a in rows)
    precision, recall = _pct(right_no, said_no), _pct(right_no, gold_no)
    return {
        "accuracy": _pct(sum(g == a for g, a in rows), len(rows)),
        "precision": precision,
        "recall": recall,
        "f1": harmonic_mean(precision, recall),
        "n": len(rows),
        "unparsed": sum(a is None for _, a in rows),
    }


def amber_discriminative_scores(
    golds: Iterable[Any], preds: Iterable[str | None], kinds: Iterable[str], rule: str = "official"
) -> dict[str, dict[str, Any]]:
    """AMBER's discriminative scores in percent: ``accuracy``; ``precision`` = % of "No" answers
    whose truth is no; ``recall`` = % of truth-no items answered "No"; ``f1`` their harmonic mean
    (AMBER's scorer rounds P and R and adds 1e-4 to the denominator; we do not round). Groups:
    ``overall``, ``existence``, ``attribute`` (state + number + action), ``state``, ``number``,
    ``action``, ``relation`` (only those with items). ``kinds`` are the annotation ``type`` s."""
    golds = [_gold_yes_no(g, i) for i, g in enumerate(golds)]
    answers = [amber_answer(p, rule) for p in preds]
    dims = [amber_dimension(k) for k in kinds]
    if not len(golds) == len(answers) == len(dims):
        raise ValueError(f"{len(golds)} gold answers, {len(answers)} predictions and {len(dims)} types")
    rows = list(zip(golds, answers, dims))
    groups = {
        "overall": lambda d: True,
        "existence": lambda d: d == "existence",
        "attribute": lambda d: d in ("state", "number", "action"),
        "state": lambda d: d == "state",
        "number": lambda d: d == "number",
        "action": lambda d: d == "action",
        "relation": lambda d: d == "relation",
    }
    out = {}
    for name, keep in groups.items():
        sub = [(g, a) for g, a, d in rows if keep(d)]
        if sub or name == "overall":
            out[name] = _amber_group(sub)
    return out


def amber_generative_scores(
    responses: Sequence[str],
    annotations: Sequence[Mapping[str, Any]],
    association: Mapping[str, Sequence[str]],
    safe_words: Iterable[str],
    extract_nouns: Any,
    similar: Any = None,
) -> dict[str, Any]:
    """AMBER's generative scores in percent, the way AMBER's scorer counts them.

    Per response, the nouns (``extract_nouns(text)``: AMBER tags with NLTK and lemmatises with
    WordNet, see :mod:`groundpo.eval.language`) that are in AMBER's object vocabulary (the words of
    ``relation.json``, ``association``) are its object mentions. A mention on the global safe list
    is never a hallucination. A mention that is a truth object or one of its associated words covers
    that truth object; otherwise, a mention that is a hallucination-target object or associated with
    one hits that target; then, with ``similar(word, other)`` (AMBER: spaCy similarity > 0.8; None
    turns synonym matching off), the first similar target is hit and a mention similar to a truth
    word covers it instead of being a hallucination. Every other mention is hallucinated.

    - ``chair``: % of mentions that are hallucinated;
    - ``cover``: % of truth objects covered;
    - ``hal``: % of responses with at least one hallucinated mention;
    - ``cog``: % of hallucination-target objects hit;
    - ``n``: responses; ``mentions``: mentions counted.
    """
    vocab = set(association)
    for words in association.values():
        vocab.update(words)
    safe = set(safe_words)
    totals = {"mentions": 0, "hallucinated": 0, "truth": 0, "covered": 0, "targets": 0, "hit": 0, "hal": 0}
    for index, (text, ann) in enumerate(zip(responses, annotations, strict=True)):
        truth, hallu = list(ann.get("truth") or []), list(ann.get("hallu") or [])
        for word in truth + hallu:
            if word not in association:
                raise ValueError(f"AMBER annotation {index}: object {word!r} is not in relation.json")
        # (word, object index) in AMBER's order: associated words first, then the objects themselves
        safe_pairs = [(w, i) for i, t in enumerate(truth) for w in association[t]] + [(t, i) for i, t in enumerate(truth)]
        hallu_pairs = [(w, i) for i, h in enumerate(hallu) for w in association[h]] + [(h, i) for i, h in enumerate(hallu)]
        covered, hit = [False] * len(truth), [False] * len(hallu)
        nouns = [n for n in extract_nouns(text or "") if n in vocab]
        hallucinated = 0
        for noun in nouns:
            if noun in safe:
                continue
            idx = next((i for w, i in safe_pairs if w == noun), None)
            if idx is not None:
                covered[idx] = True
                continue
            idx = next((i for w, i in hallu_pairs if w == noun), None)
            if idx is not None:
                hit[idx] = True
            if similar is not None:
                idx = next((i for w, i in hallu_pairs if similar(noun, w)), None)
                if idx is not None:
                    hit[idx] = True
                idx = next((i for w, i in safe_pairs if similar(noun, w)), None)
                if idx is not None:
                    covered[idx] = True
                    continue
            hallucinated += 1
        totals["mentions"] += len(nouns)
        totals["hallucinated"] += hallucinated
        totals["truth"] += len(truth)
        totals["covered"] += sum(covered)
        totals["targets"] += len(hallu)
        totals["hit"] += sum(hit)
        totals["hal"] += hallucinated > 0
    n = len(responses)
    return {
        "chair": _pct(totals["hallucinated"], totals["mentions"]),
        "cover": _pct(totals["covered"], totals["truth"]),
        "hal": _pct(totals["hal"], n),
        "cog": _pct(totals["hit"], totals["targets"]),
        "n": n,
        "mentions": totals["mentions"],
    }


# ---------------------------------------------------------------------------------------------
# Object HalBench (CHAIR)
# ---------------------------------------------------------------------------------------------


def chair_scores(captions: list[str], gt_objects: list[set[str]], objects: Any = None) -> dict[str, Any]:
    """CHAIR (Rohrbach et al. 2018) as Object HalBench reports it, in percent.

    Each caption's COCO object mentions are found with the synonym table
    (:class:`groundpo.eval.coco.CocoObjects`; plurals and two-word names such as "hot dog", "teddy
    bear", "dining table" included); ``gt_objects[i]`` are the COCO categories (or synonyms) of
    caption i's image. A mention is hallucinated when its category is not in the ground truth.

    - ``chair_s``: % of captions with at least one hallucinated mention;
    - ``chair_i``: % of all mentions that are hallucinated (every mention counts, repeats too);
    - ``recall``: % of ground-truth objects mentioned (per caption, distinct categories), summed
      over captions as Object HalBench's ``obj_rec``;
    - ``n``, ``mentions``, ``hallucinated_mentions``.
    """
    from .coco import default_objects

    objects = objects or default_objects()
    if len(captions) != len(gt_objects):
        raise ValueError(f"{len(captions)} captions but {len(gt_objects)} ground-truth sets")
    hallucinated_caps = mentions = hallucinated = gt_total = found = 0
    for text, gt in zip(captions, gt_objects):
        truth = objects.normalise(gt)
        cats = [c for _, c in objects.mentions(text or "")]
        bad = [c for c in cats if c not in truth]
        mentions += len(cats)
        hallucinated += len(bad)
        hallucinated_caps += bool(bad)
        gt_total += len(truth)
        found += len(set(cats) & truth)
    return {
        "chair_s": _pct(hallucinated_caps, len(captions)),
        "chair_i": _pct(hallucinated, mentions),
        "recall": _pct(found, gt_total),
        "n": len(captions),
        "mentions": mentions,
        "hallucinated_mentions": hallucinated,
    }


# ---------------------------------------------------------------------------------------------
# MMHal-Bench
# ---------------------------------------------------------------------------------------------

# question type of item i is MMHAL_QUESTION_TYPES[i % 8] (the benchmark's 96 items cycle through them)
MMHAL_QUESTION_TYPES = ("attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic", "other")
_RATING_RE = re.compile(r"rating\s*:\s*\**\s*(\d+)", re.IGNORECASE)


def parse_mmhal_rating(text: str | None) -> int | None:
    """The judge's 0-6 rating from its review, or ``None``.

    The review must state one rating as "Rating: N" (case-insensitive; "Rating: **4**" too) with N
    in 0..6. No rating, a number out of range ("Rating: 7") or several different ratings give
    ``None``, which MMHal-Bench's scorer counts as 0 (:func:`mmhal_scores`)."""
    if not isinstance(text, str):
        return None
    values = {int(m.group(1)) for m in _RATING_RE.finditer(text)}
    if len(values) != 1:
        return None
    value = values.pop()
    return value if 0 <= value <= 6 else None


def mmhal_scores(ratings: list[int | None]) -> dict[str, Any]:
    """MMHal-Bench scores: ``score`` = mean rating (0-6); ``hallucination_rate`` = % of ratings
    below 3; a missing rating (``None``: the review stated none, several or one out of range) counts
    as 0, as in MMHal-Bench's scorer; ``n`` and ``unparsed`` (the ``None`` count)."""
    values = []
    for i, r in enumerate(ratings):
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= 6):
            raise ValueError(f"rating {i} is {r!r}; expected an integer 0-6 or None")
        values.append(0 if r is None else r)
    n = len(values)
    return {
        "score": sum(values) / n if n else None,
        "hallucination_rate": _pct(sum(v < 3 for v in values), n),
        "n": n,
        "unparsed": sum(r is None for r in ratings),
    }
