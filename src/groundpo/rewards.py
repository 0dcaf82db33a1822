"""Verified rewards of MBPO's online data (seed 003, Sec. 4.2): 1 for a correct closed-ended answer, else 0.

One parser for evaluation and rewards: the option letter is read by
:func:`groundpo.eval.metrics.parse_choice` and yes/no by :func:`groundpo.eval.metrics.parse_yes_no`,
the same rules the benchmarks score with (whole words only: the "no" in "know" is no answer, a
hedge such as "I don't know" or "yes or no" is no answer, "B or C" is no answer).

Gold answers: with ``options`` (multiple choice) the answer is an option letter ("B", "(B)",
"b.") or the text of one option ("dog"); without options it is "yes" or "no" (any case, a trailing
full stop allowed). :func:`gold_answer` checks that once per row, before training starts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .eval.metrics import parse_choice, parse_yes_no, split_options

Options = Sequence[str] | Mapping[str, str] | None
_LETTER_RE = re.compile(r"^\s*[\(\[]?([A-Za-z])[\)\]]?\s*[.:]?\s*$")


class AnswerError(ValueError):
    """A gold answer that no response could ever match (the message says why)."""


def option_map(options: Options) -> dict[str, str] | None:
    """Options as ``{letter: text}`` (None without options). A ``{letter: text}`` mapping loses the
    letters whose text is missing (``datasets`` fills a mapping column's absent keys with None)."""
    if not options:
        return None
    if isinstance(options, Mapping):
        options = {k: v for k, v in options.items() if v is not None}
    return split_options(options) or None


def gold_answer(answer: str, options: Options = None) -> str:
    """The normalised gold answer: an option letter ("A".."Z") with options, else "yes" or "no"."""
    if not isinstance(answer, str) or not answer.strip():
        raise AnswerError(f"expected a non-empty answer, got {answer!r}")
    opts = option_map(options)
    if opts:
        match = _LETTER_RE.match(answer)
        if match and match.group(1).upper() in opts:
            return match.group(1).upper()
        by_text = [letter for letter, text in opts.items() if text.strip().lower() == answer.strip().lower()]
        if len(by_text) == 1:
            return by_text[0]
        raise AnswerError(
            f"answer {answer!r} is neither an option letter ({', '.join(opts)}) nor the text of exactly one option"
        )
    value = answer.strip().rstrip(".").strip().lower()
    if value in ("yes", "no"):
        return value
    raise AnswerError(f"answer {answer!r} without options must be 'yes' or 'no' (give `options` for multiple choice)")


def verified_reward(response: str, answer: str, options: Options = None) -> float:
    """1.0 when ``response`` gives the gold ``answer`` (its option letter, or its yes/no), else 0.0.

    An unparsable response (a hedge, two letters, "yes or no") earns 0.
    """
    gold = gold_answer(answer, options)
    opts = option_map(options)
    if opts:
        predicted = parse_choice(response, opts)
    else:
        predicted = parse_yes_no(response)
    return 1.0 if predicted == gold else 0.0
