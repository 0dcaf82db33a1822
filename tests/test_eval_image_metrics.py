"""Scorers of the image hallucination benchmarks against hand-computed cases (no model, no media):
POPE, AMBER (discriminative and generative), Object HalBench's CHAIR, MMHal-Bench."""

import json

import pytest

from groundpo.eval.coco import (
    COCO_CATEGORIES,
    CocoObjects,
    MissingCocoAnnotations,
    coco_ground_truth,
)
from groundpo.eval.language import (
    LanguageDataError,
    nltk_noun_extractor,
    spacy_similarity,
)
from groundpo.eval.metrics import (
    amber_answer,
    amber_discriminative_scores,
    amber_generative_scores,
    chair_scores,
    mmhal_scores,
    parse_mmhal_rating,
    pope_answer,
    pope_scores,
)
from groundpo.eval.synthetic import write_nltk_data

# ------------------------------------------------------------------------------------------ POPE


@pytest.mark.parametrize(
    "text,official,lenient",
    [
        ("Yes", "yes", "yes"),
        ("No", "no", "no"),
        ("No.", "no", "no"),
        ("No, there is no dog.", "no", "no"),
        ("There is not a dog in the image.", "no", None),
        ("Yes, there is a dog. No cat though.", "yes", "yes"),  # official: first sentence only
        ("I don't know", "yes", None),  # official: anything without no/not is a yes
        ("Nope", "yes", "no"),  # official matches whole words "No", "no", "not" only
        ("no,", "no", "no"),  # commas dropped before splitting
        ("piano", "yes", None),
        ("", "yes", None),
    ],
)
def test_pope_answer_official_and_lenient(text, official, lenient):
    assert pope_answer(text, "official") == official
    assert pope_answer(text, "lenient") == lenient


def test_pope_scores_hand_computed():
    golds = ["yes", "yes", "yes", "no", "no", "no", "no", "yes"]
    preds = ["Yes", "No", "Yes.", "No", "Yes", "I don't know", "No", "There is not."]
    # official answers: yes no yes no yes yes no no
    s = pope_scores(golds, preds)
    # TP = 2 (items 0, 2); said yes = 4 (0, 2, 4, 5); gold yes = 4; correct = 0, 2, 3, 6 -> 4
    assert s["accuracy"] == 50.0
    assert s["precision"] == 50.0 and s["recall"] == 50.0 and s["f1"] == 50.0
    assert s["yes_ratio"] == 50.0 and s["n"] == 8 and s["unparsed"] == 0
    lenient = pope_scores(golds, preds, rule="lenient")
    # lenient answers: yes no yes no yes None no None -> correct 0, 2, 3, 6; said yes 3; TP 2
    assert lenient["accuracy"] == 50.0 and lenient["unparsed"] == 2
    assert lenient["precision"] == pytest.approx(200 / 3) and lenient["yes_ratio"] == 37.5
    assert lenient["f1"] == pytest.approx(2 * (200 / 3) * 50 / (200 / 3 + 50))
    with pytest.raises(ValueError, match="rule"):
        pope_scores(golds, preds, rule="strict")
    with pytest.raises(ValueError, match="gold answer 1"):
        pope_scores(["yes", "maybe"], ["Yes", "No"])


# ----------------------------------------------------------------------------------------- AMBER


@pytest.mark.parametrize(
    "text,official,lenient",
    [
        ("Yes", "yes", "yes"),
        ("No", "no", "no"),
        ("  No\n", "no", "no"),
        ("Yes.", None, "yes"),
        ("yes", None, "yes"),
        ("No, there is none.", None, "no"),
        ("I don't know", None, None),
    ],
)
def test_amber_answer_official_vs_lenient(text, official, lenient):
    assert amber_answer(text, "official") == official
    assert amber_answer(text, "lenient") == lenient


def test_amber_discriminative_scores_hand_computed():
    kinds = [
        "discriminative-hallucination",
        "discriminative-hallucination",
        "discriminative-attribute-state",
        "discriminative-attribute-number",
        "discriminative-attribute-action",
        "discriminative-relation",
    ]
    golds = ["yes", "no", "no", "yes", "no", "no"]
    preds = ["Yes", "No", "No.", "No", "No", "Yes"]
    s = amber_discriminative_scores(golds, preds, kinds)
    # official answers: yes no None no no yes -> correct: 0, 1, 4 -> 3/6
    o = s["overall"]
    assert o["accuracy"] == 50.0 and o["unparsed"] == 1 and o["n"] == 6
    # "No" answers: items 1, 3, 4 -> right (truth no): 1, 4 -> precision 2/3; truth no: 1, 2, 4, 5 -> recall 2/4
    assert o["precision"] == pytest.approx(200 / 3) and o["recall"] == 50.0
    assert o["f1"] == pytest.approx(2 * (200 / 3) * 50 / (200 / 3 + 50))
    assert s["existence"]["accuracy"] == 100.0 and s["existence"]["n"] == 2
    assert s["attribute"]["n"] == 3 and s["attribute"]["accuracy"] == pytest.approx(100 / 3)
    assert s["state"]["accuracy"] == 0.0 and s["number"]["precision"] == 0.0 and s["number"]["recall"] is None
    assert s["relation"] == {"accuracy": 0.0, "precision": None, "recall": 0.0, "f1": None, "n": 1, "unparsed": 0}
    lenient = amber_discriminative_scores(golds, preds, kinds, rule="lenient")
    assert lenient["overall"]["accuracy"] == pytest.approx(400 / 6) and lenient["state"]["accuracy"] == 100.0
    only_existence = amber_discriminative_scores(["yes"], ["Yes"], ["discriminative-hallucination"])
    assert set(only_existence) == {"overall", "existence"}


ASSOCIATION = {
    "dog": ["puppy", "hound"],
    "grass": ["lawn"],
    "cat": ["kitten"],
    "frisbee": [],
    "car": ["truck"],
    "tree": [],
}
SAFE = ["picture", "image"]


def _words(text):
    return [w.strip(".,").lower() for w in text.split()]


def test_amber_generative_scores_hand_computed():
    annotations = [
        {"truth": ["dog", "grass"], "hallu": ["cat", "frisbee"]},
        {"truth": ["car"], "hallu": ["tree"]},
        {"truth": ["tree"], "hallu": ["dog"]},
    ]
    responses = [
        "A puppy on the lawn with a cat and a frisbee in the image.",  # puppy, lawn: cover; cat, frisbee: hallucinated + hit
        "A truck.",  # truck covers car
        "A tree and a hound.",  # tree covers; hound is a dog word: hallucinated, hits dog
    ]
    s = amber_generative_scores(responses, annotations, ASSOCIATION, SAFE, _words)
    # mentions (in vocab): [puppy, lawn, cat, frisbee, image? no: image not in vocab] = 4; [truck] = 1; [tree, hound] = 2
    assert s["mentions"] == 7
    assert s["chair"] == pytest.approx(100 * 3 / 7)  # cat, frisbee, hound
    assert s["cover"] == 100.0  # dog, grass, car, tree all covered
    assert s["hal"] == pytest.approx(200 / 3)  # responses 1 and 3
    assert s["cog"] == 75.0  # cat, frisbee, dog hit; tree (response 2) not
    assert s["n"] == 3


def test_amber_generative_safe_words_and_synonyms():
    association = {**ASSOCIATION, "picture": []}  # a global safe word that is in the vocabulary
    ann = [{"truth": ["dog"], "hallu": ["cat"]}]
    s = amber_generative_scores(["picture of a kitten"], ann, association, SAFE, _words)
    assert s["mentions"] == 2 and s["chair"] == 50.0 and s["cog"] == 100.0 and s["cover"] == 0.0
    # with a similarity that calls "kitten" a "dog": the kitten still hits cat, then covers dog instead
    similar = lambda a, b: (a, b) == ("kitten", "dog")
    s = amber_generative_scores(["picture of a kitten"], ann, association, SAFE, _words, similar=similar)
    assert s["chair"] == 0.0 and s["cover"] == 100.0 and s["cog"] == 100.0
    with pytest.raises(ValueError, match="'bird' is not in relation.json"):
        amber_generative_scores(["x"], [{"truth": ["bird"], "hallu": []}], association, SAFE, _words)


@pytest.fixture
def nltk_path(monkeypatch):
    """NLTK's search path is process-wide: each test gets its own copy."""
    import nltk

    monkeypatch.setattr(nltk.data, "path", [p for p in nltk.data.path])


def test_nltk_noun_extractor_on_the_tiny_nltk_data(tmp_path, nltk_path):
    data = write_nltk_data(tmp_path / "nltk_data")
    extract = nltk_noun_extractor(data)
    assert extract("Two dogs sit on the grass next to a red car. The men and puppies.") == ["dog", "grass", "car", "man", "puppy"]
    ann = [{"truth": ["dog", "grass"], "hallu": ["cat", "car"]}]
    assoc = {"dog": ["puppy"], "grass": [], "cat": [], "car": [], "man": []}
    s = amber_generative_scores(["Two dogs sit on the grass next to a red car."], ann, assoc, [], extract)
    assert s["mentions"] == 3 and s["chair"] == pytest.approx(100 / 3) and s["cover"] == 100.0 and s["cog"] == 50.0


def test_missing_language_data_says_what_and_how(tmp_path, nltk_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LanguageDataError) as err:
        nltk_noun_extractor(tmp_path / "empty")
    msg = str(err.value)
    assert "punkt_tab" in msg and "averaged_perceptron_tagger_eng" in msg and "wordnet" in msg
    assert "python -m nltk.downloader -d" in msg and "--nltk_data" in msg
    with pytest.raises(LanguageDataError, match="not a folder"):
        nltk_noun_extractor(tmp_path / "nope")
    with pytest.raises(LanguageDataError, match="spacy"):  # spaCy is not installed here, or the model is missing
        spacy_similarity(str(tmp_path / "no-such-model"))


# ------------------------------------------------------------------------------------------ CHAIR


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Two men and a woman.", ["person", "person"]),
        ("Three puppies and a dog.", ["dog", "dog"]),
        ("Buses and taxis.", ["bus", "car"]),
        ("Two wine glasses on the dining table.", ["wine glass", "dining table"]),
        ("A hot dog and hot dogs, no dog.", ["hot dog", "hot dog", "dog"]),
        ("A teddy bear next to a bear.", ["teddy bear", "bear"]),
        ("A baby elephant and a baby.", ["elephant", "person"]),
        ("The train tracks are empty.", []),
        ("A toilet with the seat up.", ["toilet"]),
        ("A seat by the window.", ["chair"]),
        ("Several cell phones and a TV.", ["cell phone", "tv"]),
        ("Knives, forks, mice and skis.", ["knife", "fork", "mouse", "skis"]),
        ("Ponies!", ["horse"]),
        ("Nothing here.", []),
    ],
)
def test_coco_mentions_synonyms_plurals_and_phrases(text, expected):
    assert [c for _, c in CocoObjects().mentions(text)] == expected


def test_synonym_table_covers_the_80_categories():
    objects = CocoObjects()
    assert sorted(objects.categories) == sorted(COCO_CATEGORIES) and len(COCO_CATEGORIES) == 80
    assert all(objects.category(c) == c for c in COCO_CATEGORIES)
    assert objects.category("Hot Dogs") == "hot dog" and objects.category("teddy bears") == "teddy bear"


def test_chair_scores_hand_computed():
    captions = [
        "A man throws a frisbee to two dogs.",  # person ok, frisbee ok, dog hallucinated
        "People sit at a dining table with cups.",  # person, dining table, cup: all in gt
        "A teddy bear.",  # teddy bear hallucinated
        "An empty street.",  # no mention
    ]
    gt = [{"person", "frisbee"}, {"person", "dining table", "cup", "pizza"}, {"bed"}, {"car"}]
    s = chair_scores(captions, gt)
    assert s["n"] == 4 and s["mentions"] == 7 and s["hallucinated_mentions"] == 2
    assert s["chair_s"] == 50.0  # captions 1 and 3
    assert s["chair_i"] == pytest.approx(100 * 2 / 7)
    # distinct right objects: 2 + 3 + 0 + 0 = 5 of 2 + 4 + 1 + 1 = 8 ground-truth objects
    assert s["recall"] == pytest.approx(62.5)
    # ground truth given as synonyms normalises; an unknown name is an error
    assert chair_scores(["two dogs"], [{"puppy"}])["chair_i"] == 0.0
    with pytest.raises(ValueError, match="'unicorn' is no COCO category"):
        chair_scores(["a dog"], [{"unicorn"}])
    with pytest.raises(ValueError, match="2 captions but 1"):
        chair_scores(["a", "b"], [set()])
    assert chair_scores(["nothing"], [set()])["chair_i"] is None


def test_another_synonyms_file_in_the_comma_format(tmp_path):
    path = tmp_path / "synonyms.txt"
    path.write_text("dog, doggy, pooch\ncat, kitty\n")
    objects = CocoObjects(path)
    assert objects.categories == ["dog", "cat"] and objects.category("pooches") == "dog"
    assert chair_scores(["A doggy and a kitty."], [{"dog"}], objects=objects)["chair_i"] == 50.0
    with pytest.raises(FileNotFoundError):
        CocoObjects(tmp_path / "none.txt")


def _coco(tmp_path, split="val", images=(1, 2)):
    root = tmp_path / "annotations"
    root.mkdir(exist_ok=True)
    cats = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 62, "name": "chair"}]
    instances = {
        "images": [{"id": i} for i in images],
        "categories": cats,
        "annotations": [{"id": 1, "image_id": 1, "category_id": 18}, {"id": 2, "image_id": 2, "category_id": 1}],
    }
    captions = {
        "images": [{"id": i} for i in images],
        "annotations": [
            {"id": 1, "image_id": 1, "caption": "A puppy on a sofa."},
            {"id": 2, "image_id": 2, "caption": "A woman sits on a bench."},
        ],
    }
    (root / f"instances_{split}2014.json").write_text(json.dumps(instances))
    (root / f"captions_{split}2014.json").write_text(json.dumps(captions))
    return root


def test_coco_ground_truth_from_instances_and_captions(tmp_path):
    root = _coco(tmp_path)
    assert coco_ground_truth(root, [1, 2]) == {1: {"dog", "couch"}, 2: {"person", "bench"}}
    with pytest.raises(MissingCocoAnnotations, match=r"image id\(s\) have no COCO annotation.*\[3\]"):
        coco_ground_truth(root, [1, 3])
    with pytest.raises(MissingCocoAnnotations) as err:
        coco_ground_truth(tmp_path / "nowhere", [1])
    assert "instances_val2014.json" in str(err.value) and "--coco_annotations" in str(err.value)


# ---------------------------------------------------------------------------------------- MMHal


@pytest.mark.parametrize(
    "text,rating",
    [
        ("Explanation: the answer is right.\nRating: 6", 6),
        ("rating: 0", 0),
        ("Rating:3", 3),
        ("Rating: **4**", 4),
        ("Rating: 4. To repeat, rating: 4", 4),  # the same rating twice
        ("No rating given.", None),  # none
        ("Rating: 2 or maybe Rating: 5", None),  # several
        ("Rating: 7", None),  # out of range
        ("Rating: 10", None),  # out of range (not "1")
        ("", None),
        (None, None),
    ],
)
def test_parse_mmhal_rating(text, rating):
    assert parse_mmhal_rating(text) == rating


def test_mmhal_scores_hand_computed():
    s = mmhal_scores([6, 2, None, 3, 5, 0])
    # None counts 0: (6 + 2 + 0 + 3 + 5 + 0) / 6 = 16 / 6; below 3: 2, 0 (None), 0 -> 3 of 6
    assert s["score"] == pytest.approx(16 / 6) and s["hallucination_rate"] == 50.0
    assert s["n"] == 6 and s["unparsed"] == 1
    assert mmhal_scores([]) == {"score": None, "hallucination_rate": None, "n": 0, "unparsed": 0}
    with pytest.raises(ValueError, match="rating 1 is 9"):
        mmhal_scores([1, 9])
