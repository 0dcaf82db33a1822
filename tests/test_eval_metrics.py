"""Scoring rules of groundpo.eval.metrics against hand-computed values (no model, no media)."""

import math

import pytest

from groundpo.eval.metrics import (
    choice_scores,
    cmm_official_hit,
    cmm_scores,
    harmonic_mean,
    parse_choice,
    parse_yes_no,
    split_options,
    yes_no_scores,
)

# ------------------------------------------------------------------------------------- yes / no

YES_NO_CASES = [
    # plain answers
    ("Yes", "yes"),
    ("Yes.", "yes"),
    ("yes", "yes"),
    ("YES!", "yes"),
    ("No", "no"),
    ("No.", "no"),
    ("NO", "no"),
    ("no", "no"),
    ("No, there is no dog in the video.", "no"),
    ("Yes, the man is visible.", "yes"),
    ("  Yes\n", "yes"),
    ("**Yes**", "yes"),
    ('"No"', "no"),
    ("'yes'", "yes"),
    ("(no)", "no"),
    ("Yeah", "yes"),
    ("Yep, definitely.", "yes"),
    ("Nope.", "no"),
    ("Nah", "no"),
    ("Not at all", "no"),
    ("Not really.", "no"),
    ("Definitely not.", "no"),
    # stated answers
    ("The answer is yes", "yes"),
    ("The answer is: No.", "no"),
    ("Answer: yes", "yes"),
    ("The final answer is no.", "no"),
    ("I think the answer is no.", "no"),
    ("Based on the video, the answer is yes.", "yes"),
    # the first answer wins
    ("Yes, but no dog barks.", "yes"),
    ("No, yes is wrong here.", "no"),
    # sentences
    ("There is no dog in the video.", "no"),
    ("No one is visible.", "no"),
    ("There is a dog, so yes.", "yes"),
    # echoes of the instruction
    ("yes/no", None),
    ("Yes or no?", None),
    ("Yes and no", None),
    ("yes or no", None),
    ("Answer with yes or no. Yes.", "yes"),
    ("Please answer yes or no: no", "no"),
    # refusals and hedges
    ("I don't know", None),
    ("I do not know.", None),
    ("I'm not sure.", None),
    ("I cannot determine that from the video.", None),
    ("There is no way to know.", None),
    ("It is unclear.", None),
    # 'no' / 'yes' inside other words
    ("piano", None),
    ("The sound comes from a piano.", None),
    ("know", None),
    ("I know", None),
    ("nothing", None),
    ("noise", None),
    ("snow", None),
    ("nose", None),
    ("Yesterday", None),
    ("Nobody knows", None),
    # no yes/no at all
    ("The man is not visible.", None),
    ("A dog.", None),
    ("", None),
    ("   ", None),
    (None, None),
    ("yes yes", "yes"),
    ("I see no reason to say yes", None),
]


@pytest.mark.parametrize("text,expected", YES_NO_CASES)
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) == expected


def test_parse_yes_no_avoids_the_substring_bug():
    # a third-party AVHBench scorer tests `"no" in pred`, which marks all of these "no"
    for text in ("I don't know", "piano", "I know it", "A piano plays.", "Nothing is known."):
        assert "no" in text.lower()
        assert parse_yes_no(text) is None


# ------------------------------------------------------------------------------------- choices

OPTIONS = ["(A) cat", "(B) dog", "(C) bird", "(D) fish"]

CHOICE_CASES = [
    ("(B)", "B"),
    ("B", "B"),
    ("b", "B"),
    ("B.", "B"),
    ("[D]", "D"),
    ("**C**", "C"),
    (" (b). ", "B"),
    ("The answer is B.", "B"),
    ("The answer is (C)", "C"),
    ("Answer: (C)", "C"),
    ("answer is b", "B"),
    ("Option D", "D"),
    ("My choice is A.", "A"),
    ("The correct option is (A) cat.", "A"),
    ("The answer is (B), not (A).", "B"),
    ("The answer is B because option A is wrong.", "B"),
    ("B. dog", "B"),
    ("B) dog", "B"),
    ("C: bird", "C"),
    ("B, because it barks.", "B"),
    ("My answer: D) fish", "D"),
    ("A", "A"),
    ("A.", "A"),
    ("(A) cat", "A"),
    ("dog", "B"),
    ("It is a dog.", "B"),
    ("A dog is barking.", "B"),
    ("Answer: A dog", "B"),
    ("The bird.", "C"),
    ("I would go with B", "B"),
    ("I pick (C) here.", "C"),
    # unparsable
    ("E", None),
    ("(E)", None),
    ("", None),
    ("   ", None),
    (None, None),
    ("I don't know", None),
    ("None of the above", None),
    ("B or C", None),
    ("B, C", None),
    ("B/C", None),
    ("(B) and (C)", None),
    ("The answer is B or C", None),
    ("cat and dog", None),
    ("A man is walking.", None),
]


@pytest.mark.parametrize("text,expected", CHOICE_CASES)
def test_parse_choice(text, expected):
    assert parse_choice(text, OPTIONS) == expected


@pytest.mark.parametrize(
    "options",
    [OPTIONS, ["A. cat", "B. dog", "C. bird", "D. fish"], ["cat", "dog", "bird", "fish"], {"A": "cat", "B": "dog", "C": "bird", "D": "fish"}],
)
def test_parse_choice_accepts_every_option_style(options):
    assert parse_choice("The answer is B.", options) == "B"
    assert parse_choice("a fish", options) == "D"


def test_parse_choice_option_text():
    mmau = ["A child", "Two men", "Two women", "A man and a child"]
    assert parse_choice("A man and a child", mmau) == "D"  # longer option beats the one inside it
    assert parse_choice("A child", mmau) == "A"  # "A child" is option text, not the letter A
    assert parse_choice("Woman", ["Man", "Woman", "Child"]) == "B"  # whole words: 'man' is not in 'woman'
    assert parse_choice("hot dog", ["dog", "hot dog"]) == "B"
    assert parse_choice("There are 3 of them.", ["2", "3", "12"]) == "B"


def test_split_options():
    assert split_options(["A. x", "B. y"]) == {"A": "x", "B": "y"}
    assert split_options(["(A) x", "(B) y"]) == {"A": "x", "B": "y"}
    assert split_options(["x", "y"]) == {"A": "x", "B": "y"}
    # labels are stripped only when every option has the label of its position
    assert split_options(["A child", "B. B. King"]) == {"A": "A child", "B": "B. B. King"}
    assert split_options({"a": "x", "b": "y"}) == {"A": "x", "B": "y"}


# --------------------------------------------------------------------------------- yes/no scores


def test_yes_no_scores_hand_computed():
    golds = ["yes", "yes", "yes", "no", "no", "Yes", "No", "no"]
    preds = ["Yes.", "no", "I don't know", "No, nothing.", "yes", "yes", "piano", "No"]
    # parsed:  yes   no    None           no             yes    yes    None     no
    s = yes_no_scores(golds, preds)
    # gold yes: items 0,1,2,5 -> correct 0,5 -> 2/4 = 50 ; gold no: items 3,4,6,7 -> correct 3,7 -> 2/4 = 50
    assert s["n"] == 8
    assert s["accuracy"] == pytest.approx(100 * 4 / 8)
    assert s["precision"] == pytest.approx(50.0)
    assert s["recall"] == pytest.approx(50.0)
    assert s["f1"] == pytest.approx(50.0)
    assert s["yes_ratio"] == pytest.approx(100 * 3 / 8)
    assert set(s) == {"accuracy", "precision", "recall", "f1", "yes_ratio", "n"}


def test_yes_no_scores_asymmetric():
    golds = ["yes"] * 3 + ["no"] * 2
    preds = ["yes", "yes", "no", "yes", "no"]
    s = yes_no_scores(golds, preds)
    p, r = 100 * 2 / 3, 100 * 1 / 2
    assert s["precision"] == pytest.approx(p)
    assert s["recall"] == pytest.approx(r)
    assert s["f1"] == pytest.approx(2 * p * r / (p + r))
    assert s["accuracy"] == pytest.approx(60.0)
    assert s["yes_ratio"] == pytest.approx(60.0)


def test_yes_no_scores_empty_classes_and_errors():
    s = yes_no_scores(["yes", "yes"], ["yes", "no"])
    assert s["precision"] == 50.0 and s["recall"] is None and s["f1"] is None
    assert yes_no_scores([], [])["accuracy"] is None
    with pytest.raises(ValueError, match="gold answer 1"):
        yes_no_scores(["yes", "maybe"], ["yes", "no"])
    with pytest.raises(ValueError):
        yes_no_scores(["yes"], ["yes", "no"])
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert math.isclose(harmonic_mean(40.0, 60.0), 48.0)


# ------------------------------------------------------------------------------------------ CMM

OFFICIAL_HITS = [
    # (gold, prediction, hit?) -- the official rule: gold in pred.strip().lower()[:5]
    ("yes", "Yes, there is a river in the video.", True),
    ("yes", "  YES", True),
    ("yes", "yes.", True),
    ("yes", "Yesterday", True),  # the rule's own quirk: first 5 characters only
    ("yes", "The answer is yes.", False),
    ("yes", "I think yes", False),
    ("yes", "", False),
    ("yes", None, False),
    ("no", "No, I did not see any tree.", True),
    ("no", "Nope", True),
    ("no", "Not at all", True),  # 'no' in 'not a'
    ("no", "Nothing", True),  # quirk: 'no' in 'nothi'
    ("no", "I don't know", False),
    ("no", "The answer is no", False),
    ("no", "NO.", True),
]


@pytest.mark.parametrize("gold,pred,hit", OFFICIAL_HITS)
def test_cmm_official_hit(gold, pred, hit):
    assert cmm_official_hit(gold, pred) is hit


def test_cmm_official_hit_is_the_plain_substring_rule():
    # the official scorer really does count "piano" as "no" (no word boundaries); we reproduce it
    assert cmm_official_hit("no", "piano") is True
    assert cmm_official_hit("no", "  a piano") is False  # 'a pia'


def _official_reference(records):
    """The CMM scorer's counting, written out from its description (fractions -> percent)."""
    tot = cor = ty = cy = tn = cn = 0
    for r in records:
        a = r["answer"].strip().lower()
        p = (r["pred"] or "").strip().lower()
        tot += 1
        cor += a in p[:5]
        if "yes" in a[:5]:
            ty += 1
            cy += "yes" in p[:5]
        elif "no" in a[:5]:
            tn += 1
            cn += "no" in p[:5]
    return 100 * cy / ty, 100 * cn / tn, 100 * cor / tot


CMM_RECORDS = [
    {"answer": "yes", "pred": "Yes, there is.", "sub_category": "visual dominance", "granularity": "object-level"},
    {"answer": "no", "pred": "Not at all.", "sub_category": "visual dominance", "granularity": "object-level"},
    {"answer": "yes", "pred": "The answer is yes.", "sub_category": "visual dominance", "granularity": "event-level"},
    {"answer": "no", "pred": "I don't know", "sub_category": "audio dominance", "granularity": "event-level"},
    {"answer": "no", "pred": "Nope", "sub_category": "audio dominance", "granularity": "event-level"},
    {"answer": "yes", "pred": "yesterday I heard it", "sub_category": "audio dominance", "granularity": "object-level"},
    {"answer": "no", "pred": "Yes", "sub_category": "language dominance", "granularity": "object-level"},
    {"answer": "yes", "pred": "", "sub_category": "language dominance", "granularity": "object-level"},
    {"answer": "no", "pred": "Nothing like that.", "sub_category": "language dominance", "granularity": "event-level"},
]


def test_cmm_scores_official_matches_the_official_rule():
    s = cmm_scores(CMM_RECORDS, rule="official")
    pa, hr, acc = _official_reference(CMM_RECORDS)
    assert s["overall"]["pa"] == pytest.approx(pa)
    assert s["overall"]["hr"] == pytest.approx(hr)
    assert s["overall"]["acc"] == pytest.approx(acc)
    # by hand: gold yes -> hits on records 0, 5 of {0,2,5,7} = 50 ; gold no -> hits 1, 4, 8 of {1,3,4,6,8} = 60
    assert s["overall"]["pa"] == pytest.approx(50.0)
    assert s["overall"]["hr"] == pytest.approx(60.0)
    assert s["overall"]["acc"] == pytest.approx(100 * 5 / 9)
    for sub in ("visual dominance", "audio dominance", "language dominance"):
        rows = [r for r in CMM_RECORDS if r["sub_category"] == sub]
        assert (s[sub]["pa"], s[sub]["hr"], s[sub]["acc"]) == pytest.approx(_official_reference(rows))
        assert s[sub]["n"] == 3
    for gran in ("object-level", "event-level"):
        rows = [r for r in CMM_RECORDS if r["granularity"] == gran]
        assert (s[gran]["pa"], s[gran]["hr"], s[gran]["acc"]) == pytest.approx(_official_reference(rows))
    assert set(s) == {"overall", "visual dominance", "audio dominance", "language dominance", "object-level", "event-level"}


def test_cmm_scores_strict():
    s = cmm_scores(CMM_RECORDS, rule="strict")
    # strict parses: yes, no, yes, None, no, None, yes, None, None
    assert s["overall"]["pa"] == pytest.approx(100 * 2 / 4)  # records 0, 2
    assert s["overall"]["hr"] == pytest.approx(100 * 2 / 5)  # records 1, 4
    assert s["overall"]["acc"] == pytest.approx(100 * 4 / 9)
    assert s["language dominance"]["pa"] == 0.0
    assert s["language dominance"]["hr"] == 0.0


def test_cmm_scores_groups_and_errors():
    s = cmm_scores([{"answer": "no", "prediction": "no", "sub_category": "x", "granularity": "g"}])
    assert s["x"]["pa"] is None and s["x"]["hr"] == 100.0  # empty group: None, not 0
    with pytest.raises(ValueError, match="rule"):
        cmm_scores(CMM_RECORDS, rule="loose")
    with pytest.raises(ValueError, match="sub_category"):
        cmm_scores([{"answer": "yes", "pred": "yes"}])
    with pytest.raises(ValueError, match="twice"):
        cmm_scores([{"answer": "yes", "pred": "yes", "sub_category": "g", "granularity": "g"}])


# -------------------------------------------------------------------------------- choice scores


def test_choice_scores():
    golds = ["A", "B", "C", "D"]
    s = choice_scores(golds, ["(A)", "The answer is C.", "bird", "???"], [OPTIONS] * 4)
    assert s == {"accuracy": 50.0, "n": 4, "unparsed": 1}
    s = choice_scores(golds, ["A", "B", None, "D"])
    assert s == {"accuracy": 75.0, "n": 4, "unparsed": 1}
