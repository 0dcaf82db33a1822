"""``groundpo-data acpo``: ACPO's audio-contrastive pairs (seed 002; the project page describes
the data, no code or paper text is public).

(a) Curation. Each clip's joint audiovisual caption (``--captions``, e.g. VALOR32K's) is
decomposed by an endpoint into a visual description, an audio description and audio tags; without
joint captions the clip's visual and audio captions come from :mod:`.annotate` (caption files or
VLM / audio endpoints). For clip A a partner B is drawn (seeded) and kept only when their audio
content really differs: tag distance 1 - Jaccard(tags_A, tags_B) (``--curation tags``) or text
embedding distance 1 - cos (``--curation embedding`` with ``--text_model``) at least
``--min_audio_distance``; up to ``--max_swap_tries`` partners are tried, then the clip is rejected
with the distances it saw. The swapped input is A's video muxed with B's audio track (PyAV).

(b) Pairs (``--pair_types``):

- audio attribution (``pair_type: output``): the swapped input and an audio-focused question;
  chosen = what is really heard (B's audio), rejected = what A's picture suggests one would hear
  (a visually driven answer), both written by the endpoint in the same style;
- audio sensitivity (``pair_type: input``): one response, A's original audiovisual caption,
  chosen under A's own audio (``audios``) and rejected under B's mismatched audio
  (``rejected_audios``).

Rows (the ``acpo`` stage): ``<video><audio>`` + question, chosen, rejected, ``videos``, ``audios``,
``rejected_audios`` (input pairs), ``pair_type``, ``video_source``, ``audio_source``,
``audio_distance``. Questions come from ``prompts/acpo/*_questions.lines``.

Requests per clip: 1 decomposition (each clip once, also as a partner) + 1 attribution pair;
without joint captions add the two stage-1 captions per clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from .annotate import Annotator, Clip, ClipOptions, read_clips, read_text_table
from .backends import TextEmbedder, require_different
from .errors import InputError, Reject
from .options import AudioEndpointOptions, CommonOptions, VisionEndpointOptions, check_subset, opt
from .runner import Item, ItemResult, Pipeline, sharegpt_row

PAIR_TYPES = ("output", "input")


class Decomposition(BaseModel):
    visual: str = Field(min_length=1)
    audio: str = Field(min_length=1)
    audio_tags: list[str]
    joint: str = ""


class AttributionPair(BaseModel):
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)


def _tag(text: str) -> str:
    word = " ".join(text.lower().strip().strip(".").split())
    return word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) > 3 else word


def tag_distance(a: list[str], b: list[str]) -> float:
    """1 - Jaccard similarity of two tag sets (case, spacing and plural -s ignored); 0 when both are empty."""
    sa, sb = {_tag(t) for t in a if t.strip()}, {_tag(t) for t in b if t.strip()}
    if not sa and not sb:
        return 0.0
    return 1.0 - len(sa & sb) / len(sa | sb)


@dataclass(kw_only=True)
class ACPOOptions(ClipOptions, AudioEndpointOptions, VisionEndpointOptions, CommonOptions):
    captions: str | None = opt(None, help='joint audiovisual captions (JSON/JSONL/CSV of {"id", "caption"}, e.g. VALOR32K); '
                                          "without them the visual and audio captions of stage 1 are used")
    pair_types: list[str] = opt(["output", "input"], help="output (audio attribution) and/or input (audio sensitivity)")
    curation: str = opt("tags", help="how audio difference is measured: tags (Jaccard) or embedding (--text_model)")
    text_model: str | None = opt(None, help="local text embedding model for --curation embedding")
    min_audio_distance: float = opt(0.5, help="a swap is kept when the two audio tracks are at least this far apart (0..1)")
    max_swap_tries: int = opt(5, help="partners tried per clip before it is rejected")

    def check(self) -> None:
        super().check()
        self.check_clip_options()
        check_subset("pair_types", self.pair_types, PAIR_TYPES)
        if self.curation not in ("tags", "embedding"):
            raise InputError(f"--curation must be tags or embedding, got {self.curation!r}")
        if self.curation == "embedding" and not self.text_model:
            raise InputError("--curation embedding needs --text_model (a local text embedding model folder)")
        if self.max_swap_tries < 1:
            raise InputError("--max_swap_tries must be >= 1")


class ACPOPipeline(Pipeline):
    name = "acpo"
    stage = "acpo"
    description = "ACPO pairs: curated audio swaps, audio-attribution and audio-sensitivity pairs"
    options_class = ACPOOptions
    columns = {"videos": "videos", "audios": "audios", "rejected_audios": "rejected_audios", "pair_type": "pair_type"}

    def items(self) -> list[Item]:
        clips = read_clips(self.options.videos)
        self.clips = {c.id: c for c in clips}
        self.annotator = Annotator(self.ctx, self.options)
        self.joint = read_text_table(self.options.captions, "captions") if self.options.captions else None
        if self.joint is not None:
            missing = [c.id for c in clips if c.id not in self.joint]
            if missing:
                raise InputError(f"--captions: no caption for {len(missing)} clip(s): {', '.join(map(repr, missing[:10]))}")
        else:
            self.annotator.check_ids(clips)
        if len(clips) < 2:
            raise InputError("--videos: ACPO swaps audio between clips; give at least two clips")
        return [Item(c.id, {"clip": c.id}) for c in clips]

    def roles(self) -> list[str]:
        return (self.annotator.roles() if self.joint is None else []) + ["text"]

    def setup(self) -> None:
        self.annotator.load_models()
        self.embedder = TextEmbedder(self.options.text_model, self.options.device) if self.options.curation == "embedding" else None

    def describe(self, clip: Clip) -> dict:
        """Visual description, audio description, audio tags and joint caption of a clip (once per clip)."""

        def ask() -> dict:
            if self.joint is not None:
                fields = dict(caption=self.joint[clip.id], visual_caption="(none)", audio_caption="(none)")
            else:
                fields = dict(caption="(none)", visual_caption=self.annotator.visual_caption(clip),
                              audio_caption=self.annotator.audio_caption(clip))
            answer = self.ctx.chat("text").ask_json(self.ctx.prompts.messages("decompose", **fields), Decomposition, "decompose")
            out = answer.model_dump()
            if self.joint is not None:
                out["joint"] = self.joint[clip.id]
            elif not out["joint"].strip():
                raise Reject("schema", "decompose: 'joint' is empty (needed without --captions)", request="decompose")
            return out

        return self.ctx.memo.get(f"describe\x1f{clip.id}", ask)

    def distance(self, a: dict, b: dict) -> float:
        if self.embedder is None:
            return tag_distance(a["audio_tags"], b["audio_tags"])
        vectors = self.embedder.embed([a["audio"], b["audio"]])
        return float(1.0 - np.clip(vectors[0] @ vectors[1], -1.0, 1.0))

    def process(self, item: Item) -> ItemResult:
        o = self.options
        clip = self.clips[item.data["clip"]]
        mine = self.describe(clip)
        others = [c for c in self.clips if c != clip.id]
        self.ctx.rng(clip.id, "partners").shuffle(others)
        tried = []
        partner = None
        for other in others[: o.max_swap_tries]:
            try:
                theirs = self.describe(self.clips[other])
            except Reject as reject:
                tried.append(f"{other} (no description: {reject.reason})")
                continue
            distance = self.distance(mine, theirs)
            if distance >= o.min_audio_distance:
                partner = (self.clips[other], theirs, distance)
                break
            tried.append(f"{other} ({distance:.3f})")
        if partner is None:
            raise Reject("audio_too_similar", f"no partner with audio distance >= {o.min_audio_distance} among: {', '.join(tried)}")
        other_clip, theirs, distance = partner
        columns = dict(video_source=clip.id, audio_source=other_clip.id, audio_distance=round(distance, 4))
        result = ItemResult()
        if "output" in o.pair_types:
            question = self.ctx.rng(clip.id, "audio_question").choice(self.ctx.prompts.lines("audio_questions"))

            try:
                pair = self.ctx.chat("text").ask_json(
                    self.ctx.prompts.messages("attribution_pair", question=question, heard=theirs["audio"], seen=mine["visual"]),
                    AttributionPair, "attribution_pair", check=lambda p: require_different(p.chosen, p.rejected),
                )
            except Reject as reject:
                result.rejects.append({**reject.as_record(), "pair_type": "output"})
            else:
                video, audio = self.annotator.context_media(clip, other_clip)
                result.rows.append(sharegpt_row(
                    f"<video><audio>{question}", pair.chosen.strip(), pair.rejected.strip(),
                    videos=[video], audios=[audio], pair_type="output", **columns,
                ))
        if "input" in o.pair_types:
            question = self.ctx.rng(clip.id, "av_question").choice(self.ctx.prompts.lines("av_questions"))
            video, audio = self.annotator.context_media(clip, clip)
            _, mismatched = self.annotator.context_media(clip, other_clip)
            result.rows.append(sharegpt_row(
                f"<video><audio>{question}", mine["joint"], mine["joint"],
                videos=[video], audios=[audio], rejected_audios=[mismatched], pair_type="input", **columns,
            ))
        return result
