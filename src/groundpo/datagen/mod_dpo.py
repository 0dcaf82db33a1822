"""``groundpo-data mod_dpo``: MoD-DPO's preference data (seed 000, Sec. 4.3 and Supp. B.1).

Stage 1 (:mod:`.annotate`): decouple audio and video. Visual captions from frames at 1 fps, visual
tags, audio captions from the audio track alone; caption files can stand in for any annotator.
Each clip gives one audiovisual *context*: its own video and audio (matched), or, with
probability ``--mismatch_ratio``, its video muxed with the audio of another clip (mismatched;
both sources are recorded in the rows). The paper does the latter "in most cases".

Stage 2: QA pairs. Captioning: "Describe only the video in detail." / "Describe only the audio in
detail." answered from that modality's caption. Presence: an endpoint sorts the objects and events
of the context into the five AVHBench-style categories, and :func:`presence_qas` turns each into
template questions with the paper's yes/no rules (Supp. B.1.2):

====================  =====================================  ===========================================
category              "Is the {x} visible in the video?"     "Is the {x} making sound in the audio?"
====================  =====================================  ===========================================
in-view sound source  Yes                                    Yes
in-view sound         (not asked)                            Yes
in-view silent object (not asked)                            No
out-of-view source    No                                     (not asked)
out-of-view sound     No                                     (not asked)
====================  =====================================  ===========================================

An optional verification pass (``--verify``, on by default as in the paper) asks the endpoint to
confirm each QA against the annotations; the ones it rejects land in ``rejects.jsonl``.

Stage 3: hard negatives. For each QA the endpoint writes the chosen answer from the relevant
modality and a rejected answer that leans on the *irrelevant* modality's information (a visual
question answered with what is heard, and vice versa).

Rows: ``<video><audio>`` + question, chosen, rejected, ``videos``, ``audios``, ``modality``
(visual / audio; audiovisual with ``--tasks ...,audiovisual``), and provenance columns
(``task``, ``category``, ``video_source``, ``audio_source``, ``mismatched``).

Requests per clip (endpoint annotators, defaults): 1 visual caption + 1 audio caption (each clip
once, shared by the contexts that use it) + 1 classification + 1 verification + 2 captioning pairs
+ up to ``--max_presence_questions`` presence pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field, field_validator

from .annotate import Annotator, ClipOptions, read_clips
from .backends import require_different
from .errors import InputError, Reject
from .options import AudioEndpointOptions, CommonOptions, VisionEndpointOptions, check_subset, opt
from .runner import Item, ItemResult, Pipeline, sharegpt_row

# ---------------------------------------------------------------- the paper's rules (Supp. B.1.2)
CATEGORIES = (
    "in-view sound source",
    "in-view sound",
    "in-view silent object",
    "out-of-view sound source",
    "out-of-view sound",
)
VISUAL_PRESENCE = "Is the {x} visible in the video?"
AUDIO_PRESENCE = "Is the {x} making sound in the audio?"
VISUAL_ANSWERS = {"in-view sound source": "Yes", "out-of-view sound source": "No", "out-of-view sound": "No"}
AUDIO_ANSWERS = {"in-view sound source": "Yes", "in-view sound": "Yes", "in-view silent object": "No"}
CAPTION_QUESTIONS = {"visual": "Describe only the video in detail.", "audio": "Describe only the audio in detail."}
AUDIOVISUAL_QUESTION = "Describe what you see and hear in detail."
TASKS = ("captioning", "presence", "audiovisual")


def normalise_category(text: str) -> str:
    """``"In view sound-sources"`` -> ``"in-view sound source"``; unknown text raises ValueError."""
    words = " ".join(text.lower().replace("_", " ").replace("-", " ").split())
    words = words.replace("in view", "in-view").replace("out of view", "out-of-view")
    for suffix, singular in (("sources", "source"), ("sounds", "sound"), ("objects", "object")):
        if words.endswith(suffix):
            words = words[: -len(suffix)] + singular
    if words not in CATEGORIES:
        raise ValueError(f"unknown category {text!r}; expected one of {', '.join(CATEGORIES)}")
    return words


@dataclass(frozen=True)
class PresenceQA:
    name: str
    category: str
    modality: str  # visual: "visible in the video?"; audio: "making sound in the audio?"
    question: str
    answer: str  # Yes / No


def presence_qas(name: str, category: str) -> list[PresenceQA]:
    """The template questions for one object/event and their yes/no answers (Supp. B.1.2)."""
    category = normalise_category(category)
    out = []
    if category in VISUAL_ANSWERS:
        out.append(PresenceQA(name, category, "visual", VISUAL_PRESENCE.format(x=name), VISUAL_ANSWERS[category]))
    if category in AUDIO_ANSWERS:
        out.append(PresenceQA(name, category, "audio", AUDIO_PRESENCE.format(x=name), AUDIO_ANSWERS[category]))
    return out


# ---------------------------------------------------------------- answer schemas
class DetectedObject(BaseModel):
    name: str = Field(min_length=1, max_length=60)
    category: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = " ".join(v.strip().strip(".").split())
        if not v:
            raise ValueError("empty name")
        return v

    @field_validator("category")
    @classmethod
    def _category(cls, v: str) -> str:
        return normalise_category(v)


class Classification(BaseModel):
    objects: list[DetectedObject]


class Verdict(BaseModel):
    index: int
    correct: bool
    reason: str = ""


class Verification(BaseModel):
    verdicts: list[Verdict]


class PreferencePair(BaseModel):
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)


def starts_with(text: str, word: str) -> bool:
    head = text.strip().lstrip("\"'*").lower()
    return head.startswith(word.lower()) and (len(head) == len(word) or not head[len(word)].isalpha())


# ---------------------------------------------------------------- the pipeline
@dataclass(kw_only=True)
class ModDPOOptions(ClipOptions, AudioEndpointOptions, VisionEndpointOptions, CommonOptions):
    mismatch_ratio: float = opt(0.7, help="share of clips whose context pairs their video with another clip's audio")
    tasks: list[str] = opt(["captioning", "presence"], help="QA tasks: captioning, presence, audiovisual (optional joint captioning)")
    max_presence_questions: int = opt(2, help="presence questions kept per context (balanced over visual/audio and yes/no)")
    verify: bool = opt(True, help="verify each presence QA with the endpoint (Supp. B.1.2); failures go to rejects")

    def check(self) -> None:
        super().check()
        self.check_clip_options()
        if not 0.0 <= self.mismatch_ratio <= 1.0:
            raise InputError(f"--mismatch_ratio must be in [0, 1], got {self.mismatch_ratio}")
        check_subset("tasks", self.tasks, TASKS)


class ModDPOPipeline(Pipeline):
    name = "mod_dpo"
    stage = "mod_dpo"
    description = "MoD-DPO preference data: decoupled captions, presence QA by the paper's rules, cross-modal hard negatives"
    options_class = ModDPOOptions
    columns = {"videos": "videos", "audios": "audios", "modality": "modality"}

    def items(self) -> list[Item]:
        self.clips = {c.id: c for c in read_clips(self.options.videos)}
        self.annotator = Annotator(self.ctx, self.options)
        self.annotator.check_ids(list(self.clips.values()))
        ids = list(self.clips)
        items = []
        for clip_id in ids:
            audio_id = clip_id
            others = [o for o in ids if o != clip_id]
            if others and self.ctx.rng(clip_id, "mismatch").random() < self.options.mismatch_ratio:
                audio_id = self.ctx.rng(clip_id, "partner").choice(others)
            items.append(Item(clip_id, {"video": clip_id, "audio": audio_id}))
        return items

    def roles(self) -> list[str]:
        return self.annotator.roles() + ["text"]

    def setup(self) -> None:
        self.annotator.load_models()

    # ------------------------------------------------------------ one context
    def process(self, item: Item) -> ItemResult:
        video, audio = self.clips[item.data["video"]], self.clips[item.data["audio"]]
        visual_caption = self.annotator.visual_caption(video)
        tags = self.annotator.visual_tags(video)
        audio_caption = self.annotator.audio_caption(audio)
        video_path, audio_path = self.annotator.context_media(video, audio)
        info = {
            "visual": visual_caption + (f"\nVisual tags: {', '.join(tags)}" if tags else ""),
            "audio": audio_caption,
        }
        columns = {
            "videos": [video_path], "audios": [audio_path], "video_source": video.id, "audio_source": audio.id,
            "mismatched": video.id != audio.id,
        }
        result = ItemResult()
        if "captioning" in self.options.tasks:
            for modality, question in CAPTION_QUESTIONS.items():
                self._row(result, "caption_pair", question, info, modality, columns, task="captioning")
        if "presence" in self.options.tasks:
            self._presence(item, info, tags, columns, result)
        if "audiovisual" in self.options.tasks:
            self._row(result, "audiovisual_pair", AUDIOVISUAL_QUESTION, info, "audiovisual", columns, task="audiovisual")
        return result

    def _presence(self, item: Item, info: dict, tags: list[str], columns: dict, result: ItemResult) -> None:
        chat = self.ctx.chat("text")
        try:
            found = chat.ask_json(
                self.ctx.prompts.messages("classify", visual=info["visual"], audio=info["audio"], categories="\n".join(f"- {c}" for c in CATEGORIES)),
                Classification, "classify",
            )
        except Reject as reject:
            result.rejects.append({**reject.as_record(), "task": "presence"})
            return
        qas = self._select(item, [qa for obj in found.objects for qa in presence_qas(obj.name, obj.category)])
        if qas and self.options.verify:
            qas = self._verify(qas, info, result)
        for qa in qas:
            self._row(
                result, "presence_pair", qa.question, info, qa.modality, columns, task="presence", answer=qa.answer,
                category=qa.category, object=qa.name,
            )

    def _select(self, item: Item, qas: list[PresenceQA]) -> list[PresenceQA]:
        """Up to ``max_presence_questions`` distinct QAs, round-robin over (visual/audio, yes/no), seeded by the item."""
        unique = list({qa.question.lower(): qa for qa in qas}.values())
        groups = {}
        for key in (("visual", "Yes"), ("audio", "No"), ("audio", "Yes"), ("visual", "No")):
            group = [qa for qa in unique if (qa.modality, qa.answer) == key]
            self.ctx.rng(item.id, "presence", *key).shuffle(group)
            groups[key] = group
        picked: list[PresenceQA] = []
        while len(picked) < self.options.max_presence_questions and any(groups.values()):
            for group in groups.values():
                if group and len(picked) < self.options.max_presence_questions:
                    picked.append(group.pop(0))
        return picked

    def _verify(self, qas: list[PresenceQA], info: dict, result: ItemResult) -> list[PresenceQA]:
        listing = "\n".join(f"{i}. {qa.question} Answer: {qa.answer}" for i, qa in enumerate(qas))

        def every_index(answer: Verification) -> None:
            indices = sorted(v.index for v in answer.verdicts)
            if indices != list(range(len(qas))):
                raise Reject("schema", f"expected one verdict for each of the indices 0..{len(qas) - 1}, got {indices}")

        try:
            answer = self.ctx.chat("text").ask_json(
                self.ctx.prompts.messages("verify", visual=info["visual"], audio=info["audio"], qas=listing),
                Verification, "verify", check=every_index,
            )
        except Reject as reject:
            result.rejects.append({**reject.as_record(), "task": "presence", "questions": [qa.question for qa in qas]})
            return []
        verdicts = {v.index: v for v in answer.verdicts}
        kept = []
        for i, qa in enumerate(qas):
            if verdicts[i].correct:
                kept.append(qa)
            else:
                result.rejects.append({
                    "reason": "verification_failed", "detail": verdicts[i].reason or "the verifier marked it incorrect",
                    "task": "presence", "question": qa.question, "answer": qa.answer, "category": qa.category,
                })
        return kept

    def _row(self, result: ItemResult, prompt: str, question: str, info: dict, modality: str, columns: dict, *,
             task: str, answer: str | None = None, **extra) -> None:
        relevant, irrelevant = {
            "visual": (info["visual"], info["audio"]),
            "audio": (info["audio"], info["visual"]),
            "audiovisual": (f"Video: {info['visual']}\nAudio: {info['audio']}", ""),
        }[modality]

        def check(pair: PreferencePair) -> None:
            require_different(pair.chosen, pair.rejected)
            if answer is not None:
                opposite = "No" if answer == "Yes" else "Yes"
                if not starts_with(pair.chosen, answer):
                    raise Reject("schema", f"chosen must start with {answer!r}: {pair.chosen[:80]!r}")
                if not starts_with(pair.rejected, opposite):
                    raise Reject("schema", f"rejected must start with {opposite!r}: {pair.rejected[:80]!r}")

        fields = dict(question=question, answer=answer or "", relevant=relevant, irrelevant=irrelevant,
                      modality={"visual": "video", "audio": "audio", "audiovisual": "video and audio"}[modality],
                      other={"visual": "audio", "audio": "video", "audiovisual": ""}[modality],
                      visual=info["visual"], audio=info["audio"])
        try:
            pair = self.ctx.chat("text").ask_json(self.ctx.prompts.messages(prompt, **fields), PreferencePair, prompt, check=check)
        except Reject as reject:
            result.rejects.append({**reject.as_record(), "task": task, "question": question, "modality": modality})
            return
        result.rows.append(sharegpt_row(
            f"<video><audio>{question}", pair.chosen.strip(), pair.rejected.strip(), modality=modality, task=task,
            **columns, **extra,
        ))
