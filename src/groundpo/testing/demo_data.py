"""Deterministic demo preference datasets with real generated media (``data/demo/``).

``make_demo_dataset(out_dir, seed)`` writes four LLaMA-Factory ``sharegpt`` ranking datasets and
their media; every byte is a function of the seed (fixed row order, media names from the row
index, sorted JSON keys, bit-exact media writers from :mod:`groundpo.testing.media`):

* ``mod_pref.json`` (MoD-DPO): 40 video+audio rows, 16 ``visual``, 16 ``audio``, 8 ``audiovisual``;
* ``jompo_pref.json`` (JoMPO, reused by MFPO): 16 image pairs differing in one attribute;
* ``mfpo_pref.json`` (MFPO): 16 image rows with the shape's ``region``, half with a pre-perturbed
  ``rejected_images`` file;
* ``acpo_pref.json`` (ACPO): 16 video+audio rows, 8 ``output`` (audio attribution) and 8
  ``input`` (audio sensitivity) pairs;
* ``mbpo_offline.json`` / ``mbpo_online.json`` (MBPO on images): 16 pairs whose rejected answer
  ignores the image (the language prior an adversarial image triggers), and 16 closed-ended prompts
  (yes/no and multiple choice) with their gold ``answer``; ``mbpo_omni_offline.json`` /
  ``mbpo_omni_online.json``: the same on the MoD-DPO videos with their audio. They reuse the media
  of the files above and add none;
* ``mbpo_source.json``: 8 instruction rows (image, question, answer) for ``groundpo-data mbpo``,
  which turns them into MBPO pairs (not a dataset of ``dataset_info.json``).

The "natural" shape<->sound association (:data:`SOUND_OF_SHAPE`) is what makes the negatives hard:
a MoD-DPO rejected answer is the answer one gets by trusting the OTHER modality, e.g. naming the
shape that the heard sound belongs to when asked what is seen. ``data/README.md`` has the rules.

The row specs (``mod_dpo_specs`` etc.) are pure functions of the seed, so tests can check the
generator-side facts (such as whether a row's audio matches its video) without decoding media.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .media import (
    COLOURS,
    DIRECTIONS,
    SHAPES,
    draw_shape,
    shape_bbox,
    shape_radius,
    write_image,
    write_png,
    write_shape_video,
    write_tone_wav,
)

SOUND_OF_SHAPE = {"circle": "low_hum", "square": "high_beeps", "triangle": "noise_bursts"}
SHAPE_OF_SOUND = {sound: shape for shape, sound in SOUND_OF_SHAPE.items()}
SOUND_PHRASES = {
    "low_hum": "a steady low hum",
    "high_beeps": "short high beeps",
    "noise_bursts": "bursts of noise",
    "rising_tone": "a rising tone",
    "falling_tone": "a falling tone",
    "silence": "silence",
}
DIRECTION_PHRASES = {
    "left_to_right": "from left to right",
    "right_to_left": "from right to left",
    "top_to_bottom": "from top to bottom",
    "bottom_to_top": "from bottom to top",
}
POSITION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
OPPOSITE_POSITION = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}

# Media settings of the demo (kept small: the whole folder stays around 1 MB).
VIDEO_KWARGS = {"seconds": 1.0, "fps": 8, "size": 56}
AUDIO_KWARGS = {"seconds": 1.0, "sample_rate": 8000}
IMAGE_SIZE = 56
MEDIA_PREFIX = "demo/media"  # media paths in rows are relative to the ``data/`` folder
DATASET_FILES = {
    "demo_mod_dpo": "mod_pref.json",
    "demo_jompo": "jompo_pref.json",
    "demo_mfpo": "mfpo_pref.json",
    "demo_acpo": "acpo_pref.json",
    "demo_mbpo_offline": "mbpo_offline.json",
    "demo_mbpo_online": "mbpo_online.json",
    "demo_mbpo_omni_offline": "mbpo_omni_offline.json",
    "demo_mbpo_omni_online": "mbpo_omni_online.json",
}
# prompt datasets (``"ranking": false``): MBPO's online rows, a question and its gold answer
PROMPT_DATASETS = ("demo_mbpo_online", "demo_mbpo_omni_online")

VISUAL_QUESTIONS = {
    "colour": "What colour is the moving shape?",
    "shape": "What shape is moving in the video?",
    "direction": "Which way does the shape move?",
}
AUDIO_QUESTIONS = ("What do you hear in the audio?", "Describe the sound.", "What kind of sound is it?")
AUDIOVISUAL_QUESTIONS = ("Describe what you see and hear.", "What do you see and hear?")
IMAGE_QUESTIONS = {
    "colour": "What colour is the shape?",
    "shape": "What shape is in the image?",
    "position": "Where is the shape?",
}


def sub_seed(seed: int, name: str) -> int:
    """A stable 32-bit seed for one media file, from the dataset seed and the file's stem."""
    return zlib.crc32(f"{seed}/{name}".encode())


def _other(rng: random.Random, options, exclude: str) -> str:
    return rng.choice([o for o in options if o != exclude])


def _balanced(rng: random.Random, options, n: int) -> list:
    items = [options[i % len(options)] for i in range(n)]
    rng.shuffle(items)
    return items


# --------------------------------------------------------------------------------------- MoD-DPO
@dataclass(frozen=True)
class ModSpec:
    """One MoD-DPO row: what the video shows, what the audio plays, and what is asked."""

    index: int
    modality: str  # visual | audio | audiovisual
    question: str  # the question text (without media tags)
    topic: str  # colour | shape | direction (visual), sound (audio), both (audiovisual)
    shape: str
    colour: str
    direction: str
    sound: str  # the sound kind actually in the wav
    matched: bool  # sound == SOUND_OF_SHAPE[shape]
    swap: str = ""  # audiovisual rows: which half the rejected answer replaces, "visual" | "audio"

    @property
    def stem(self) -> str:
        return f"mod_{self.index:03d}"


def mod_dpo_specs(seed: int = 0) -> list[ModSpec]:
    """The 40 MoD-DPO row specs, interleaved ``visual, audio, visual, audio, audiovisual`` x 8.

    Visual and audio rows are half matched, half mismatched; audiovisual rows are all mismatched
    (in a matched clip the association gives back the true half, so there is no hard negative).
    """
    rng = random.Random(seed)
    groups: dict[str, list[dict]] = {}
    for modality, n in (("visual", 16), ("audio", 16), ("audiovisual", 8)):
        shapes = _balanced(rng, SHAPES, n)
        matched = _balanced(rng, (True, False), n) if modality != "audiovisual" else [False] * n
        rows = []
        for k in range(n):
            shape = shapes[k]
            sound = SOUND_OF_SHAPE[shape] if matched[k] else SOUND_OF_SHAPE[_other(rng, SHAPES, shape)]
            if modality == "visual":
                topic = ("colour", "shape", "direction")[k % 3]
                question, swap = VISUAL_QUESTIONS[topic], ""
            elif modality == "audio":
                topic, question, swap = "sound", AUDIO_QUESTIONS[k % 3], ""
            else:
                topic, question, swap = "both", AUDIOVISUAL_QUESTIONS[k % 2], ("visual", "audio")[k % 2]
            rows.append(
                {
                    "modality": modality,
                    "question": question,
                    "topic": topic,
                    "shape": shape,
                    "colour": rng.choice(sorted(COLOURS)),
                    "direction": rng.choice(DIRECTIONS),
                    "sound": sound,
                    "matched": matched[k],
                    "swap": swap,
                }
            )
        groups[modality] = rows
    order = ["visual", "audio", "visual", "audio", "audiovisual"] * 8
    cursors = {m: 0 for m in groups}
    specs = []
    for index, modality in enumerate(order):
        specs.append(ModSpec(index=index, **groups[modality][cursors[modality]]))
        cursors[modality] += 1
    return specs


def _visual_answer(topic: str, shape: str, colour: str, direction: str) -> str:
    if topic == "colour":
        return f"The {shape} is {colour}."
    if topic == "shape":
        return f"It is a {colour} {shape}."
    return f"The {shape} moves {DIRECTION_PHRASES[direction]}."


def _scene(shape: str, colour: str, direction: str, sound: str) -> str:
    return f"A {colour} {shape} moves {DIRECTION_PHRASES[direction]} with {SOUND_PHRASES[sound]}."


def mod_dpo_answers(spec: ModSpec) -> tuple[str, str]:
    """``(chosen, rejected)`` for a MoD-DPO row; the rejected one trusts the other modality.

    * visual, mismatched: same answer with the shape the heard sound belongs to;
      visual, matched: the heard sound described as if seen ("I see a steady low hum.");
    * audio, mismatched: "I hear" the sound the visible shape belongs to;
      audio, matched: the visual content described as if heard;
    * audiovisual: the ``swap`` half is replaced by the other modality's association.
    """
    s = spec
    if s.modality == "visual":
        chosen = _visual_answer(s.topic, s.shape, s.colour, s.direction)
        if s.matched:
            rejected = f"I see {SOUND_PHRASES[s.sound]}."
        else:
            rejected = _visual_answer(s.topic, SHAPE_OF_SOUND[s.sound], s.colour, s.direction)
    elif s.modality == "audio":
        chosen = f"I hear {SOUND_PHRASES[s.sound]}."
        if s.matched:
            rejected = f"I hear a {s.colour} {s.shape} moving {DIRECTION_PHRASES[s.direction]}."
        else:
            rejected = f"I hear {SOUND_PHRASES[SOUND_OF_SHAPE[s.shape]]}."
    else:
        chosen = _scene(s.shape, s.colour, s.direction, s.sound)
        if s.swap == "visual":
            rejected = _scene(SHAPE_OF_SOUND[s.sound], s.colour, s.direction, s.sound)
        else:
            rejected = _scene(s.shape, s.colour, s.direction, SOUND_OF_SHAPE[s.shape])
    return chosen, rejected


def _turns(tags: str, question: str, chosen: str, rejected: str) -> dict:
    return {
        "conversations": [{"from": "human", "value": tags + question}],
        "chosen": {"from": "gpt", "value": chosen},
        "rejected": {"from": "gpt", "value": rejected},
    }


def _write_mod_dpo(out: Path, seed: int, prefix: str) -> list[dict]:
    rows = []
    for s in mod_dpo_specs(seed):
        write_shape_video(out / f"{s.stem}.mp4", shape=s.shape, colour=s.colour, direction=s.direction, **VIDEO_KWARGS)
        write_tone_wav(out / f"{s.stem}.wav", kind=s.sound, seed=sub_seed(seed, s.stem), **AUDIO_KWARGS)
        row = _turns("<video><audio>", s.question, *mod_dpo_answers(s))
        row.update(videos=[f"{prefix}/{s.stem}.mp4"], audios=[f"{prefix}/{s.stem}.wav"], modality=s.modality)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------- JoMPO
@dataclass(frozen=True)
class ImagePairSpec:
    """One JoMPO row: a winning and a losing image that differ in ``attribute`` only."""

    index: int
    attribute: str  # colour | shape | position
    shape_w: str
    colour_w: str
    position_w: str
    shape_l: str
    colour_l: str
    position_l: str

    @property
    def stem(self) -> str:
        return f"jompo_{self.index:03d}"


def position_centre(position: str, size: int = IMAGE_SIZE) -> tuple[float, float]:
    """Pixel centre of a named position (``left``/``right``/``top``/``bottom``)."""
    near, far, mid = size * 0.27, size * 0.73, size / 2.0
    return {"left": (near, mid), "right": (far, mid), "top": (mid, near), "bottom": (mid, far)}[position]


def jompo_specs(seed: int = 0) -> list[ImagePairSpec]:
    """16 image pairs cycling the differing attribute ``colour, shape, position``."""
    rng = random.Random(seed + 1)
    specs = []
    for i in range(16):
        attribute = ("colour", "shape", "position")[i % 3]
        shape, colour, position = rng.choice(SHAPES), rng.choice(sorted(COLOURS)), rng.choice(sorted(POSITION_PHRASES))
        lose = {"shape": shape, "colour": colour, "position": position}
        if attribute == "colour":
            lose["colour"] = _other(rng, sorted(COLOURS), colour)
        elif attribute == "shape":
            lose["shape"] = _other(rng, SHAPES, shape)
        else:
            lose["position"] = OPPOSITE_POSITION[position]
        specs.append(
            ImagePairSpec(i, attribute, shape, colour, position, lose["shape"], lose["colour"], lose["position"])
        )
    return specs


def _image_answer(attribute: str, shape: str, colour: str, position: str) -> str:
    if attribute == "colour":
        return f"The {shape} is {colour}."
    if attribute == "shape":
        return f"It is a {colour} {shape}."
    return f"The {colour} {shape} is {POSITION_PHRASES[position]}."


def jompo_answers(spec: ImagePairSpec) -> tuple[str, str]:
    """``(chosen, rejected)``: the description of the ``_w`` image and of the ``_l`` image."""
    s = spec
    return (
        _image_answer(s.attribute, s.shape_w, s.colour_w, s.position_w),
        _image_answer(s.attribute, s.shape_l, s.colour_l, s.position_l),
    )


def _write_jompo(out: Path, seed: int, prefix: str) -> list[dict]:
    rows = []
    for s in jompo_specs(seed):
        for tag, shape, colour, position in (
            ("w", s.shape_w, s.colour_w, s.position_w),
            ("l", s.shape_l, s.colour_l, s.position_l),
        ):
            write_image(
                out / f"{s.stem}_{tag}.png",
                shape=shape,
                colour=colour,
                size=IMAGE_SIZE,
                position=position_centre(position),
            )
        row = _turns("<image>", IMAGE_QUESTIONS[s.attribute], *jompo_answers(s))
        row.update(images=[f"{prefix}/{s.stem}_w.png"], rejected_images=[f"{prefix}/{s.stem}_l.png"])
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ MFPO
@dataclass(frozen=True)
class RegionSpec:
    """One MFPO row: an image, a hallucinated attribute for the rejected answer, the shape's box."""

    index: int
    attribute: str  # colour | shape
    shape: str
    colour: str
    centre: tuple[int, int]
    hallucinated: str  # the wrong colour or shape named by the rejected answer
    region: tuple[int, int, int, int]  # [x0, y0, x1, y1], x1/y1 exclusive
    perturbed: bool  # whether a pre-perturbed ``rejected_images`` file is provided

    @property
    def stem(self) -> str:
        return f"mfpo_{self.index:03d}"


def mfpo_specs(seed: int = 0) -> list[RegionSpec]:
    """16 image rows at seeded positions; even rows get a pre-perturbed rejected image."""
    rng = random.Random(seed + 2)
    margin = shape_radius(IMAGE_SIZE) + 2
    specs = []
    for i in range(16):
        attribute = ("colour", "shape")[i % 2]
        shape, colour = rng.choice(SHAPES), rng.choice(sorted(COLOURS))
        centre = (rng.randint(margin, IMAGE_SIZE - margin), rng.randint(margin, IMAGE_SIZE - margin))
        wrong = _other(rng, sorted(COLOURS), colour) if attribute == "colour" else _other(rng, SHAPES, shape)
        region = tuple(shape_bbox(shape, IMAGE_SIZE, centre))
        specs.append(RegionSpec(i, attribute, shape, colour, centre, wrong, region, perturbed=i % 2 == 0))
    return specs


def mfpo_answers(spec: RegionSpec) -> tuple[str, str]:
    """``(chosen, rejected)``: the true attribute, and the hallucinated one."""
    s = spec
    if s.attribute == "colour":
        return _image_answer("colour", s.shape, s.colour, ""), _image_answer("colour", s.shape, s.hallucinated, "")
    return _image_answer("shape", s.shape, s.colour, ""), _image_answer("shape", s.hallucinated, s.colour, "")


def perturb_region(pixels: np.ndarray, region, seed: int, keep: float = 0.5) -> np.ndarray:
    """Diffusion-style noising inside ``region`` only: ``sqrt(keep) * x + sqrt(1 - keep) * eps``.

    Pixels are mapped to ``[-1, 1]``, ``eps`` is standard normal from ``default_rng(seed)``; the
    result is rounded back to ``uint8``. Pixels outside the box are returned unchanged.
    """
    x0, y0, x1, y1 = region
    out = pixels.copy()
    patch = out[y0:y1, x0:x1].astype(np.float64) / 127.5 - 1.0
    eps = np.random.default_rng(seed).standard_normal(patch.shape)
    noisy = np.sqrt(keep) * patch + np.sqrt(1.0 - keep) * eps
    out[y0:y1, x0:x1] = np.clip(np.round((noisy + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return out


def _write_mfpo(out: Path, seed: int, prefix: str) -> list[dict]:
    rows = []
    for s in mfpo_specs(seed):
        pixels = draw_shape(s.shape, s.colour, IMAGE_SIZE, s.centre)
        write_png(out / f"{s.stem}.png", pixels)
        row = _turns("<image>", IMAGE_QUESTIONS[s.attribute], *mfpo_answers(s))
        row.update(images=[f"{prefix}/{s.stem}.png"], region=list(s.region))
        if s.perturbed:
            write_png(out / f"{s.stem}_l.png", perturb_region(pixels, s.region, sub_seed(seed, s.stem)))
            row["rejected_images"] = [f"{prefix}/{s.stem}_l.png"]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ ACPO
@dataclass(frozen=True)
class AcpoSpec:
    """One ACPO row. ``aligned`` is the sound of the visible shape, ``swapped`` another shape's."""

    index: int
    pair_type: str  # output (audio attribution) | input (audio sensitivity)
    shape: str
    colour: str
    direction: str
    aligned: str
    swapped: str

    @property
    def stem(self) -> str:
        return f"acpo_{self.index:03d}"


def acpo_specs(seed: int = 0) -> list[AcpoSpec]:
    """16 rows alternating ``output`` (even index) and ``input`` (odd index) pairs."""
    rng = random.Random(seed + 3)
    shapes = _balanced(rng, SHAPES, 16)
    specs = []
    for i, shape in enumerate(shapes):
        swapped = SOUND_OF_SHAPE[_other(rng, SHAPES, shape)]
        specs.append(
            AcpoSpec(
                i,
                ("output", "input")[i % 2],
                shape,
                rng.choice(sorted(COLOURS)),
                rng.choice(DIRECTIONS),
                SOUND_OF_SHAPE[shape],
                swapped,
            )
        )
    return specs


def acpo_answers(spec: AcpoSpec) -> tuple[str, str, str]:
    """``(question, chosen, rejected)``.

    ``output`` rows play the swapped sound: chosen describes it, rejected describes the sound the
    visible shape implies. ``input`` rows share one caption, true for the aligned audio.
    """
    s = spec
    if s.pair_type == "output":
        return AUDIO_QUESTIONS[0], f"I hear {SOUND_PHRASES[s.swapped]}.", f"I hear {SOUND_PHRASES[s.aligned]}."
    caption = _scene(s.shape, s.colour, s.direction, s.aligned)
    return AUDIOVISUAL_QUESTIONS[0], caption, caption


def _write_acpo(out: Path, seed: int, prefix: str) -> list[dict]:
    rows = []
    for s in acpo_specs(seed):
        write_shape_video(out / f"{s.stem}.mp4", shape=s.shape, colour=s.colour, direction=s.direction, **VIDEO_KWARGS)
        heard = s.swapped if s.pair_type == "output" else s.aligned
        write_tone_wav(out / f"{s.stem}.wav", kind=heard, seed=sub_seed(seed, s.stem), **AUDIO_KWARGS)
        question, chosen, rejected = acpo_answers(s)
        row = _turns("<video><audio>", question, chosen, rejected)
        row.update(videos=[f"{prefix}/{s.stem}.mp4"], audios=[f"{prefix}/{s.stem}.wav"], pair_type=s.pair_type)
        if s.pair_type == "input":
            rej = f"{s.stem}_l"
            write_tone_wav(out / f"{rej}.wav", kind=s.swapped, seed=sub_seed(seed, rej), **AUDIO_KWARGS)
            row["rejected_audios"] = [f"{prefix}/{rej}.wav"]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ MBPO
# The language prior of the rejected answers: what a model says when it does not look (MBPO's
# adversarial negatives rely on the LLM backbone instead of the image).
PRIOR_SHAPE, PRIOR_COLOUR = "circle", "red"
OPTION_LETTERS = "ABCD"


def _prior_answer(shape: str, colour: str) -> str:
    """The answer of a model that ignores the image: the prior shape and colour, unless they are the truth."""
    return _image_answer("shape", PRIOR_SHAPE if shape != PRIOR_SHAPE else "square", PRIOR_COLOUR if colour != PRIOR_COLOUR else "blue", "")


def _prompt_row(tags: str, question: str, reference: str, answer: str, options: list[str] | None = None) -> dict:
    """An online row: the question, a reference answer turn (upstream's sharegpt reader needs one), the gold answer."""
    row = {
        "conversations": [{"from": "human", "value": tags + question}, {"from": "gpt", "value": reference}],
        "answer": answer,
    }
    if options is not None:
        row["options"] = options
    return row


def _choice(question: str, values: list[str], truth: str) -> tuple[str, str, str, list[str]]:
    """(question with its lettered options, reference answer, gold letter, options) of a multiple-choice row."""
    options = [f"{letter}. {value}" for letter, value in zip(OPTION_LETTERS, values)]
    letter = OPTION_LETTERS[values.index(truth)]
    return f"{question} " + " ".join(options), f"{letter}. {truth}", letter, options


def _write_mbpo_offline(out: Path, seed: int, prefix: str) -> list[dict]:
    """16 image pairs (the MFPO images): the true description, and the prior's."""
    rows = []
    for s in mfpo_specs(seed):
        row = _turns("<image>", IMAGE_QUESTIONS["shape"], _image_answer("shape", s.shape, s.colour, ""), _prior_answer(s.shape, s.colour))
        row["images"] = [f"{prefix}/{s.stem}.png"]
        rows.append(row)
    return rows


def _write_mbpo_online(out: Path, seed: int, prefix: str) -> list[dict]:
    """16 closed-ended prompts on the JoMPO winning images: yes/no on colour and shape, and multiple choice."""
    rng = random.Random(seed + 4)
    colours = sorted(COLOURS)
    rows = []
    for i, s in enumerate(jompo_specs(seed)):
        kind = ("yes_no_colour", "yes_no_shape", "choice_colour", "choice_shape")[i % 4]
        if kind == "yes_no_colour":
            asked = s.colour_w if i % 8 < 4 else _other(rng, colours, s.colour_w)
            answer = "yes" if asked == s.colour_w else "no"
            row = _prompt_row("<image>", f"Is the shape {asked}? Answer yes or no.", f"{answer.capitalize()}.", answer)
        elif kind == "yes_no_shape":
            asked = s.shape_w if i % 8 >= 4 else _other(rng, SHAPES, s.shape_w)
            answer = "yes" if asked == s.shape_w else "no"
            row = _prompt_row("<image>", f"Is there a {asked}? Answer yes or no.", f"{answer.capitalize()}.", answer)
        elif kind == "choice_colour":
            question, reference, letter, options = _choice("What colour is the shape?", colours, s.colour_w)
            row = _prompt_row("<image>", question, reference, letter, options)
        else:
            question, reference, letter, options = _choice("What shape is in the image?", list(SHAPES), s.shape_w)
            row = _prompt_row("<image>", question, reference, letter, options)
        row["images"] = [f"{prefix}/jompo_{s.index:03d}_w.png"]
        rows.append(row)
    return rows


def _write_mbpo_source(out: Path, seed: int, prefix: str) -> list[dict]:
    """8 instruction rows on the JoMPO winning images, the input of ``groundpo-data mbpo``."""
    return [
        {"id": f"mbpo_src_{s.index:03d}", "image": f"{prefix}/jompo_{s.index:03d}_w.png",
         "question": IMAGE_QUESTIONS["shape"], "answer": _image_answer("shape", s.shape_w, s.colour_w, "")}
        for s in jompo_specs(seed)[:8]
    ]


def _av_media(s: ModSpec, prefix: str) -> dict:
    return {"videos": [f"{prefix}/{s.stem}.mp4"], "audios": [f"{prefix}/{s.stem}.wav"]}


def _write_mbpo_omni_offline(out: Path, seed: int, prefix: str) -> list[dict]:
    """8 video+audio pairs (the first MoD-DPO visual rows): the true answer, and the prior's."""
    rows = []
    for s in [s for s in mod_dpo_specs(seed) if s.modality == "visual"][:8]:
        row = _turns("<video><audio>", VISUAL_QUESTIONS["shape"], _image_answer("shape", s.shape, s.colour, ""), _prior_answer(s.shape, s.colour))
        row.update(_av_media(s, prefix))
        rows.append(row)
    return rows


def _write_mbpo_omni_online(out: Path, seed: int, prefix: str) -> list[dict]:
    """8 closed-ended prompts on MoD-DPO clips: what is seen (yes/no), what is heard (yes/no), which way (choice)."""
    rows = []
    directions = list(DIRECTIONS)
    for i, s in enumerate([s for s in mod_dpo_specs(seed) if s.modality == "audio"][:8]):
        kind = ("seen", "heard", "direction", "heard")[i % 4]
        if kind == "seen":
            answer = "yes" if i % 8 < 4 else "no"
            asked = s.colour if answer == "yes" else _other(random.Random(sub_seed(seed, s.stem)), sorted(COLOURS), s.colour)
            row = _prompt_row("<video><audio>", f"Is the moving shape {asked}? Answer yes or no.", f"{answer.capitalize()}.", answer)
        elif kind == "heard":
            answer = "yes" if i % 8 >= 4 else "no"
            asked = s.sound if answer == "yes" else SOUND_OF_SHAPE[s.shape] if SOUND_OF_SHAPE[s.shape] != s.sound else "silence"
            row = _prompt_row("<video><audio>", f"Do you hear {SOUND_PHRASES[asked]}? Answer yes or no.", f"{answer.capitalize()}.", answer)
        else:
            phrases = [DIRECTION_PHRASES[d] for d in directions]
            question, reference, letter, options = _choice("Which way does the shape move?", phrases, DIRECTION_PHRASES[s.direction])
            row = _prompt_row("<video><audio>", question, reference, letter, options)
        row.update(_av_media(s, prefix))
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------- writing
def dumps_rows(rows: list[dict]) -> str:
    """The canonical JSON text of a dataset file."""
    return json.dumps(rows, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def make_demo_dataset(out_dir="data/demo", seed: int = 0, media_prefix: str = MEDIA_PREFIX) -> Path:
    """Write the four demo datasets and ``media/`` under ``out_dir``; returns ``out_dir``.

    ``media_prefix`` is what rows put before media file names (relative to LLaMA-Factory's
    ``dataset_dir``); keep the default when ``out_dir`` is ``<dataset_dir>/demo``. Files in
    ``media/`` that this call did not write are removed, so the folder is exactly the output.
    """
    out = Path(out_dir)
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    writers = {
        "mod_pref.json": _write_mod_dpo,
        "jompo_pref.json": _write_jompo,
        "mfpo_pref.json": _write_mfpo,
        "acpo_pref.json": _write_acpo,
        # MBPO's files reuse the media written above
        "mbpo_offline.json": _write_mbpo_offline,
        "mbpo_online.json": _write_mbpo_online,
        "mbpo_omni_offline.json": _write_mbpo_omni_offline,
        "mbpo_omni_online.json": _write_mbpo_omni_online,
        "mbpo_source.json": _write_mbpo_source,
    }
    for name, writer in writers.items():
        rows = writer(media, seed, media_prefix)
        (out / name).write_bytes(dumps_rows(rows).encode("utf-8"))
    written = {f"{p}" for row_file in writers for p in _media_of(out / row_file, media_prefix)}
    for path in media.iterdir():
        if path.name not in written:
            path.unlink()
    return out


def _media_of(dataset_file: Path, prefix: str) -> list[str]:
    names = []
    for row in json.loads(dataset_file.read_text(encoding="utf-8")):
        for key in ("images", "rejected_images", "videos", "audios", "rejected_audios"):
            names += [p[len(prefix) + 1 :] for p in row.get(key, [])]
        if isinstance(row.get("image"), str):  # mbpo_source.json
            names.append(row["image"][len(prefix) + 1 :])
    return names


def demo_dataset_info(folder: str = "demo") -> dict[str, dict]:
    """The ``dataset_info.json`` entries registering the demo datasets under ``<dataset_dir>/folder``."""
    common = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}
    columns = {
        "demo_mod_dpo": {"videos": "videos", "audios": "audios", "modality": "modality"},
        "demo_jompo": {"images": "images", "rejected_images": "rejected_images"},
        "demo_mfpo": {"images": "images", "rejected_images": "rejected_images", "region": "region"},
        "demo_acpo": {
            "videos": "videos",
            "audios": "audios",
            "rejected_audios": "rejected_audios",
            "pair_type": "pair_type",
        },
        "demo_mbpo_offline": {"images": "images"},
        "demo_mbpo_online": {"images": "images", "answer": "answer", "options": "options"},
        "demo_mbpo_omni_offline": {"videos": "videos", "audios": "audios"},
        "demo_mbpo_omni_online": {"videos": "videos", "audios": "audios", "answer": "answer", "options": "options"},
    }
    tags = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}
    entries = {}
    for name in DATASET_FILES:
        ranking = name not in PROMPT_DATASETS
        pair = common if ranking else {"messages": "conversations"}
        entries[name] = {
            "file_name": f"{folder}/{DATASET_FILES[name]}",
            "formatting": "sharegpt",
            "ranking": ranking,
            "columns": {**pair, **columns[name]},
            "tags": dict(tags),
        }
    return entries


def register_demo_datasets(dataset_info_path, folder: str = "demo") -> Path:
    """Add (or refresh) the demo entries in a ``dataset_info.json``, keeping any other entries."""
    path = Path(dataset_info_path)
    info = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    info.update(demo_dataset_info(folder))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((json.dumps(info, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
    return path
