"""Stage 1 of the audiovisual pipelines (MoD-DPO Sec. 4.3 / Supp. B.1.1, ACPO's curation): the
clips, their audio tracks, and their decoupled annotations.

- visual caption: frames at ``--fps`` (1 fps in the paper) sent to a VLM endpoint, or a caption file;
- visual tags: a caption-free tagger (an image classifier from a path, union of its tags over
  the frames, as the paper does with RAM++), a tag file, or none (stage 2 then finds the objects
  and events in the captions);
- audio caption: the audio track alone sent to an audio-capable endpoint, or a caption file.

Existing captions (MSR-VTT, VALOR32K and AudioCaps ship them) stand in for any annotator. Each
annotation from an endpoint is asked once per clip and kept in ``progress/memo.jsonl``: a clip
that serves several contexts (its own and mismatched ones) is annotated once.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends import audio_part, image_part
from .errors import InputError
from .media import VIDEO_EXTENSIONS, extract_audio, list_files, mux, sample_frames, trim_wav, video_duration
from .options import opt
from .runner import Context, safe_name

ID_FIELDS = ("id", "video_id", "clip_id", "youtube_id", "audio_id", "image_id")
TEXT_FIELDS = ("caption", "text", "description", "sentence")


@dataclass(kw_only=True)
class ClipOptions:
    """Where the clips and their existing annotations are, and how frames and audio are taken."""

    videos: str = opt(help="folder of videos (searched recursively; id = path without extension) or a JSON/JSONL list of "
                           '{"id", "video", "audio"?} (relative paths from the list\'s folder; "audio" = a separate audio file)')
    visual_captions: str | None = opt(None, help='caption file standing in for the VLM: JSON/JSONL/CSV of {"id", "caption"} '
                                                  "(several lines for one id are joined; MSR-VTT's {\"sentences\": [...]} works as is)")
    audio_captions: str | None = opt(None, help="caption file standing in for the audio captioner (same formats)")
    visual_tags: str | None = opt(None, help='tag file: JSON/JSONL of {"id", "tags": [...]} (e.g. RAM++ output)')
    tagger_model: str | None = opt(None, help="local image classifier (transformers folder) tagging frames; union over frames")
    tag_threshold: float = opt(0.5, help="sigmoid score a tag needs (--tagger_model)")
    fps: float = opt(1.0, help="frames per second sent to the VLM (the paper: 1)")
    max_frames: int = opt(32, help="most frames per clip (evenly thinned beyond)")
    frame_size: int = opt(512, help="longest side of a frame sent to the VLM, in pixels")
    audio_rate: int = opt(16000, help="sample rate of the audio files written (and sent to the audio endpoint)")

    def check_clip_options(self) -> None:
        self.check_audio_part()
        if self.fps <= 0:
            raise InputError(f"--fps must be > 0, got {self.fps}")


@dataclass(frozen=True)
class Clip:
    id: str
    video: str
    audio: str | None = None  # a separate audio file; None = the video's own track


def read_clips(source: str) -> list[Clip]:
    """Clips of a folder or a list file, in a stable order; every file is checked to exist."""
    path = Path(source)
    clips: list[Clip] = []
    if path.is_dir():
        for video in list_files(path, VIDEO_EXTENSIONS):
            clips.append(Clip(video.relative_to(path).with_suffix("").as_posix(), str(video)))
    elif path.is_file():
        for where, entry in read_entries(path):
            video = entry.get("video")
            if not isinstance(video, str) or not video:
                raise InputError(f"{where}: field 'video' missing (each entry needs a video path)")
            audio = entry.get("audio")
            if audio is not None and not isinstance(audio, str):
                raise InputError(f"{where}: field 'audio' must be a path, got {audio!r}")
            clip_id = str(_first(entry, ID_FIELDS) or Path(video).with_suffix("").as_posix())
            resolve = lambda p: str(p if Path(p).is_absolute() else path.parent / p)  # noqa: E731
            clips.append(Clip(clip_id, resolve(video), resolve(audio) if audio else None))
    else:
        raise InputError(f"--videos: {source!r} is neither a folder nor a list file")
    missing = [f"clip {c.id!r} {field}: {p}" for c in clips for field, p in (("video", c.video), ("audio", c.audio)) if p and not Path(p).is_file()]
    if missing:
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise InputError(f"--videos: {len(missing)} media file(s) not found:\n  {shown}")
    if not clips:
        raise InputError(f"--videos: no clips in {source!r} (video extensions: {', '.join(VIDEO_EXTENSIONS)})")
    return clips


def _first(entry: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if entry.get(name) not in (None, ""):
            return entry[name]
    return None


def read_source(path: str, media_dir: str | None, option: str = "--source") -> tuple[Path, list[tuple[str, dict[str, Any]]]]:
    """The folder a source file's media paths are relative to (``media_dir``, else the file's folder)
    and the file's entries (``read_entries``)."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{option}: file {path!r} not found")
    return (Path(media_dir) if media_dir else file.parent), read_entries(file)


def read_entries(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(where, entry)`` of a JSON list or mapping, a JSONL file (``.jsonl``, or JSON that is not one
    document) or a CSV with a header; ``where`` is the file and line/entry for error messages."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        return [(f"{path}:{n}", dict(row)) for n, row in enumerate(csv.DictReader(text.splitlines()), 2)]
    data: Any = None
    if path.suffix.lower() != ".jsonl":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
    if data is None:
        entries = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    entries.append((f"{path}:{n}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    else:
        if isinstance(data, dict) and isinstance(data.get("sentences"), list):  # MSR-VTT annotation file
            data = data["sentences"]
        if isinstance(data, dict):  # {id: caption or [captions]}
            entries = [(f"{path} key {k!r}", {"id": k, "caption": v}) for k, v in data.items()]
        elif isinstance(data, list):
            entries = [(f"{path} entry {n}", e) for n, e in enumerate(data)]
        else:
            raise InputError(f"{path}: expected a list or a mapping, got {type(data).__name__}")
    for where, entry in entries:
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected an object, got {entry!r}")
    return entries


def read_text_table(path: str, option: str, field_names: tuple[str, ...] = TEXT_FIELDS) -> dict[str, str]:
    """``id -> text`` of a caption file; several entries of one id are joined in file order."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"--{option}: file {path!r} not found")
    table: dict[str, list[str]] = {}
    for where, entry in read_entries(file):
        key, value = _first(entry, ID_FIELDS), _first(entry, field_names)
        if key is None:
            raise InputError(f"--{option}: {where}: no id field (one of {', '.join(ID_FIELDS)})")
        if isinstance(value, list):
            value = " ".join(str(v) for v in value)
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"--{option}: {where}: no text in {', '.join(field_names)} for id {key!r}")
        table.setdefault(str(key), []).append(value.strip())
    return {k: " ".join(v) for k, v in table.items()}


def read_tag_table(path: str, option: str) -> dict[str, list[str]]:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"--{option}: file {path!r} not found")
    table: dict[str, list[str]] = {}
    for where, entry in read_entries(file):
        key, tags = _first(entry, ID_FIELDS), entry.get("tags")
        if key is None:
            raise InputError(f"--{option}: {where}: no id field (one of {', '.join(ID_FIELDS)})")
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.replace("|", ",").split(",")]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InputError(f"--{option}: {where}: 'tags' must be a list of texts, got {tags!r}")
        table.setdefault(str(key), []).extend(t for t in tags if t)
    return table


class Annotator:
    """Stage-1 annotations of clips, from files or endpoints, each computed once."""

    def __init__(self, ctx: Context, options: ClipOptions) -> None:
        self.ctx = ctx
        self.options = options
        self.visual = read_text_table(options.visual_captions, "visual_captions") if options.visual_captions else None
        self.audio = read_text_table(options.audio_captions, "audio_captions") if options.audio_captions else None
        self.tags = read_tag_table(options.visual_tags, "visual_tags") if options.visual_tags else None
        self.tagger = None

    def check_ids(self, clips: list[Clip]) -> None:
        """Every clip has its line in each caption/tag file given (names the first ones missing)."""
        for option, table in (("visual_captions", self.visual), ("audio_captions", self.audio), ("visual_tags", self.tags)):
            if table is not None:
                missing = [c.id for c in clips if c.id not in table]
                if missing:
                    raise InputError(f"--{option}: no entry for {len(missing)} clip(s): {', '.join(map(repr, missing[:10]))}")

    def roles(self) -> list[str]:
        """The endpoints stage 1 calls: a VLM without visual captions, an audio LM without audio captions."""
        return (["vision"] if self.visual is None else []) + (["audio"] if self.audio is None else [])

    def load_models(self) -> None:
        if self.options.tagger_model and self.tags is None:
            from .backends import ImageTagger

            self.tagger = ImageTagger(self.options.tagger_model, self.options.device, self.options.tag_threshold)

    def audio_path(self, clip: Clip) -> Path:
        """The clip's audio as a wav in ``media/audio/`` (extracted once)."""
        dst = self.ctx.media_dir / "audio" / f"{safe_name(clip.id)}.wav"
        if not dst.exists():
            extract_audio(clip.audio or clip.video, dst, self.options.audio_rate)
        return dst

    def context_media(self, video: Clip, audio: Clip) -> tuple[str, str]:
        """Row paths (video, audio) of a context: a clip's own video and audio track, or, for a
        mismatched context, ``video``'s picture muxed with ``audio``'s track (cut to the video's
        length) in ``media/mux/<video>__<audio>.mp4`` and that cut track as a wav beside it."""
        wav = self.audio_path(audio)
        if video.id == audio.id:
            return self.ctx.place(video.video, f"video/{safe_name(video.id)}{Path(video.video).suffix}"), self.ctx.rel(wav)
        stem = f"{safe_name(video.id)}__{safe_name(audio.id)}"
        cut = self.ctx.media_dir / "mux" / f"{stem}.wav"
        if not cut.exists():
            trim_wav(wav, cut, video_duration(video.video))
        muxed = self.ctx.media_dir / "mux" / f"{stem}.mp4"
        if not muxed.exists():
            mux(video.video, cut, muxed)
        return self.ctx.rel(muxed), self.ctx.rel(cut)

    def visual_caption(self, clip: Clip) -> str:
        if self.visual is not None:
            return self.visual[clip.id]

        def ask() -> str:
            frames = sample_frames(clip.video, self.options.fps, self.options.max_frames)
            parts = [image_part(f, self.options.frame_size, fmt="jpeg") for f in frames]
            messages = self.ctx.prompts.messages("visual_caption", media=parts, frames=len(frames), fps=self.options.fps)
            return self.ctx.chat("vision").ask_text(messages, "visual_caption")

        return self.ctx.memo.get(f"visual_caption\x1f{clip.id}", ask)

    def audio_caption(self, clip: Clip) -> str:
        if self.audio is not None:
            return self.audio[clip.id]

        def ask() -> str:
            part = audio_part(self.audio_path(clip), self.options.audio_part)
            messages = self.ctx.prompts.messages("audio_caption", media=[part])
            return self.ctx.chat("audio").ask_text(messages, "audio_caption")

        return self.ctx.memo.get(f"audio_caption\x1f{clip.id}", ask)

    def visual_tags(self, clip: Clip) -> list[str]:
        if self.tags is not None:
            return list(dict.fromkeys(self.tags[clip.id]))
        if self.tagger is None:
            return []

        def tag() -> list[str]:
            return self.tagger.tags(sample_frames(clip.video, self.options.fps, self.options.max_frames))

        return self.ctx.memo.get(f"visual_tags\x1f{clip.id}", tag)
