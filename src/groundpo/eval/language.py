"""Language tools AMBER's generative scorer needs: NLTK nouns and lemmas, spaCy word similarity.

Neither the NLTK data nor the spaCy model is on PyPI, and this package never downloads them: pass
where they are (``--nltk_data``, ``--spacy_model``), and a missing piece fails before any model is
loaded, with the command that fetches it.

- :func:`nltk_noun_extractor`: AMBER's ``extract_nouns``: NLTK ``word_tokenize`` (``punkt_tab``),
  ``pos_tag`` (``averaged_perceptron_tagger_eng``), every ``NN*`` token lemmatised by WordNet's
  lemmatiser (``wordnet``).
- :func:`spacy_similarity`: AMBER's ``check_synonyms_word``: spaCy ``similarity`` of two words
  above a threshold (AMBER: 0.8 with ``en_core_web_lg``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache

__all__ = ["NLTK_RESOURCES", "LanguageDataError", "nltk_noun_extractor", "spacy_similarity"]

# NLTK resource -> where nltk.data.find looks for it
NLTK_RESOURCES = {
    "punkt_tab": "tokenizers/punkt_tab/english/",
    "averaged_perceptron_tagger_eng": "taggers/averaged_perceptron_tagger_eng/",
    "wordnet": "corpora/wordnet",
}


_ADDED: set[str] = set()  # folders this module put on nltk.data.path


class LanguageDataError(RuntimeError):
    """A language resource (NLTK data, a spaCy model) is missing; the message says how to get it."""


def nltk_noun_extractor(nltk_data: str | os.PathLike | None = None) -> Callable[[str], list[str]]:
    """A function text -> lemmatised nouns, as AMBER extracts them. ``nltk_data`` is a folder with
    the NLTK data (searched first; NLTK's usual places are searched too)."""
    try:
        import nltk
        from nltk.stem import WordNetLemmatizer
    except ImportError:
        raise LanguageDataError(
            "AMBER's generative scores need NLTK: pip install 'groundpo[eval]' (or pip install nltk)"
        ) from None
    # NLTK's search path is process-wide: folders added for earlier calls do not count for this one
    search = [p for p in nltk.data.path if p not in _ADDED]
    if nltk_data:
        folder = os.path.abspath(str(nltk_data))
        if not os.path.isdir(folder):
            raise LanguageDataError(f"--nltk_data {folder} is not a folder")
        search.insert(0, folder)
    missing = []
    for name, where in NLTK_RESOURCES.items():
        try:
            nltk.data.find(where, paths=search)
        except LookupError:
            missing.append(name)
    if missing:
        target = str(nltk_data) if nltk_data else "DIR"
        raise LanguageDataError(
            f"NLTK data missing for AMBER's generative scores: {', '.join(missing)} (looked in "
            f"{', '.join(map(str, search[:4]))}, ...). Get it with\n"
            f"  python -m nltk.downloader -d {target} {' '.join(NLTK_RESOURCES)}\n"
            "and pass --nltk_data " + target
        )
    if nltk_data and folder not in nltk.data.path:
        nltk.data.path.insert(0, folder)
        _ADDED.add(folder)
    lemmatizer = WordNetLemmatizer()

    def extract_nouns(text: str) -> list[str]:
        tagged = nltk.pos_tag(nltk.word_tokenize(text))
        return [lemmatizer.lemmatize(word) for word, pos in tagged if pos.startswith("NN")]

    return extract_nouns


def spacy_similarity(model: str, threshold: float = 0.8) -> Callable[[str, str], bool]:
    """A function (word, other) -> similarity > ``threshold`` with the spaCy pipeline ``model`` (a
    package name such as ``en_core_web_lg`` or a folder)."""
    try:
        import spacy
    except ImportError:
        raise LanguageDataError(
            "AMBER's synonym matching needs spaCy and a model with word vectors: pip install spacy, then "
            "python -m spacy download en_core_web_lg (or pass --spacy_model FOLDER). "
            "--spacy_model none turns synonym matching off (not AMBER's official setting)."
        ) from None
    try:
        nlp = spacy.load(model)
    except OSError as e:
        raise LanguageDataError(
            f"spaCy model {model!r} is not installed ({e}). Get it with: python -m spacy download {model} "
            "(or pass --spacy_model FOLDER; --spacy_model none turns synonym matching off)"
        ) from None

    @cache
    def doc(word: str):
        return nlp(word)

    def similar(word: str, other: str) -> bool:
        return doc(word).similarity(doc(other)) > threshold

    return similar
