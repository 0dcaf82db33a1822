"""COCO object words for CHAIR (Object HalBench): the synonym table and the ground truth.

- :class:`CocoObjects` reads the synonym table (``data/coco_synonyms.txt``, shipped with the package,
  or any file in the same format) and finds the COCO objects a caption mentions, in order:
  ``CocoObjects().mentions("Two dogs and a hot dog.")`` -> ``[("dogs", "dog"), ("hot dog", "hot dog")]``.
- :func:`coco_ground_truth` collects, for each image id, the objects COCO knows are there: the
  categories of its instance annotations plus the objects its reference captions mention (the way
  CHAIR, Rohrbach et al. 2018, builds the ground truth, and RLHF-V's Object HalBench scorer with it).

Matching rules (``CocoObjects.mentions``): the caption is lower-cased and split into words; at each
word the longest phrase of the table wins (three words, then two, then one), so "hot dog", "teddy
bear", "dining table" and "baby elephant" are one mention each; each form also matches in its
plural; "seat" is not a chair in a caption that mentions a toilet.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

__all__ = ["COCO_CATEGORIES", "CocoObjects", "MissingCocoAnnotations", "coco_ground_truth", "default_objects"]

# COCO's 80 categories (instances_*.json "categories" names), in id order
COCO_CATEGORIES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
_WORD_RE = re.compile(r"[a-z]+")
_NONE = "-"


class MissingCocoAnnotations(FileNotFoundError):
    """COCO annotation files that CHAIR's ground truth needs are not there."""


def _plural(word: str) -> str:
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _phrase_plural(phrase: str) -> str:
    words = phrase.split(" ")
    return " ".join(words[:-1] + [_plural(words[-1])])


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


class CocoObjects:
    """The synonym table: surface forms -> COCO category, and the mention finder."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        if path is None:
            text = resources.files("groundpo.eval").joinpath("data/coco_synonyms.txt").read_text(encoding="utf-8")
            self.source = "groundpo/eval/data/coco_synonyms.txt"
        else:
            p = Path(path)
            if not p.is_file():
                raise FileNotFoundError(f"synonyms file {p} does not exist")
            text, self.source = p.read_text(encoding="utf-8"), str(p)
        self.forms: dict[str, str | None] = {}  # phrase -> category (None: no COCO object)
        self.categories: list[str] = []
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if "->" in line:
                phrase, target = (s.strip().lower() for s in line.split("->", 1))
                self._add(phrase, None if target == _NONE else target, plural=True)
                continue
            if ":" in line:
                category, rest = line.split(":", 1)
                forms = [category, *rest.split(",")]
            else:  # one comma-separated line per category, the category first
                forms = line.split(",")
            forms = [" ".join(_words(f)) for f in forms]
            forms = [f for f in forms if f]
            if not forms:
                raise ValueError(f"{self.source}: line {lineno} names no category")
            category = forms[0]
            self.categories.append(category)
            for form in forms:
                self._add(form, category, plural=True)
        for phrase, target in list(self.forms.items()):
            if target is not None and target not in self.categories:
                raise ValueError(f"{self.source}: {phrase!r} points to {target!r}, which is no category of the table")
        self.max_words = max(len(f.split(" ")) for f in self.forms)

    def _add(self, form: str, category: str | None, plural: bool) -> None:
        self.forms.setdefault(form, category)
        if plural:
            self.forms.setdefault(_phrase_plural(form), category)

    def category(self, word: str) -> str | None:
        """The category a word or phrase names (``None`` if none): "dogs" -> "dog"."""
        return self.forms.get(" ".join(_words(word)))

    def mentions(self, text: str) -> list[tuple[str, str]]:
        """``(phrase, category)`` of every COCO object the text mentions, in order (repeats kept)."""
        words = _words(text)
        out: list[tuple[str, str]] = []
        i = 0
        while i < len(words):
            for n in range(min(self.max_words, len(words) - i), 0, -1):
                phrase = " ".join(words[i : i + n])
                if phrase in self.forms:
                    category = self.forms[phrase]
                    if category is not None:
                        out.append((phrase, category))
                    i += n
                    break
            else:
                i += 1
        if any(c == "toilet" for _, c in out):  # "the seat of the toilet" is no chair
            out = [(p, c) for p, c in out if p not in ("seat", "seats")]
        return out

    def normalise(self, objects: Iterable[str]) -> set[str]:
        """Ground-truth object names -> categories (a category stays itself, a synonym maps to its
        category); an unknown name raises."""
        out = set()
        for name in objects:
            n = " ".join(_words(str(name)))
            category = n if n in self.categories else self.forms.get(n)
            if category is None:
                raise ValueError(f"ground-truth object {name!r} is no COCO category or synonym in {self.source}")
            out.add(category)
        return out


_DEFAULT: CocoObjects | None = None


def default_objects() -> CocoObjects:
    """The shipped table, read once."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = CocoObjects()
    return _DEFAULT


COCO_ANNOTATIONS_HELP = (
    "CHAIR's ground truth needs COCO 2014 annotations: instances_val2014.json and captions_val2014.json "
    "(and the train2014 pair when the images come from train2014), from annotations_trainval2014.zip at "
    "cocodataset.org (Download > 2014 Train/Val annotations). Unzip it and pass the folder with --coco_annotations."
)


def coco_ground_truth(
    annotations_dir: str | os.PathLike, image_ids: Iterable[int], objects: CocoObjects | None = None
) -> dict[int, set[str]]:
    """``image id -> set of categories`` from the COCO 2014 annotation files in ``annotations_dir``:
    the instance categories of each image plus the objects its reference captions mention."""
    objects = objects or default_objects()
    root = Path(annotations_dir)
    wanted = {int(i) for i in image_ids}
    instances = [root / f"instances_{s}2014.json" for s in ("val", "train") if (root / f"instances_{s}2014.json").is_file()]
    captions = [root / f"captions_{s}2014.json" for s in ("val", "train") if (root / f"captions_{s}2014.json").is_file()]
    if not root.is_dir() or not instances or not captions:
        missing = [n for n, found in (("instances_val2014.json", instances), ("captions_val2014.json", captions)) if not found]
        raise MissingCocoAnnotations(f"no {' or '.join(missing)} in {root}. {COCO_ANNOTATIONS_HELP}")
    truth: dict[int, set[str]] = {i: set() for i in wanted}
    seen: set[int] = set()
    for path in instances:
        data = _load(path)
        names = {c["id"]: c["name"] for c in data.get("categories", [])}
        for ann in data.get("annotations", []):
            imid = ann.get("image_id")
            if imid in truth:
                seen.add(imid)
                name = names.get(ann.get("category_id"))
                if name is None:
                    raise ValueError(f"{path}: annotation {ann.get('id')} has unknown category_id {ann.get('category_id')}")
                truth[imid] |= objects.normalise([name])
        seen |= {img["id"] for img in data.get("images", []) if img.get("id") in truth}
    for path in captions:
        for ann in _load(path).get("annotations", []):
            imid = ann.get("image_id")
            if imid in truth:
                seen.add(imid)
                truth[imid] |= {c for _, c in objects.mentions(str(ann.get("caption", "")))}
    unknown = sorted(wanted - seen)
    if unknown:
        files = ", ".join(p.name for p in instances + captions)
        raise MissingCocoAnnotations(
            f"{len(unknown)} image id(s) have no COCO annotation in {files} (e.g. {unknown[:5]}); "
            f"the train2014 files may be missing. {COCO_ANNOTATIONS_HELP}"
        )
    return truth


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict) or "annotations" not in data:
        raise ValueError(f"{path}: not a COCO annotation file (no 'annotations')")
    return data
