"""Generation through LLaMA-Factory's chat engine (``llamafactory.chat.ChatModel``).

The model is loaded exactly as ``llamafactory-cli chat`` loads it (same ``ModelArguments``:
``model_name_or_path``, ``adapter_name_or_path``, ``template``, ``infer_backend``,
``use_audio_in_video``, ``video_fps``, ...), so a checkpoint evaluates with the template and
media processing it was trained with. Decoding is greedy (``do_sample: false``,
``temperature: 0``).

What upstream's engines can and cannot do here (LLaMA-Factory 0.9.5):

- ``ChatModel.chat`` takes one conversation. With vLLM, ``batch_size`` conversations are kept in
  flight and vLLM batches them. Upstream's Hugging Face engine generates a batch of one per call
  (and its ``MAX_CONCURRENT`` semaphore runs calls one after another), so for the Hugging Face
  backend :func:`create_engine` returns :class:`groundpo.eval.batched.BatchedEngine`, which loads
  the model through ``ChatModel`` and generates ``batch_size`` left-padded items per call.
- ``use_audio_in_video``: the Hugging Face engine puts an ``<audio>`` placeholder in front of
  the ``<video>`` one when a message has none, and the Qwen2.5-Omni plugin then refuses
  ("Each <video> must be followed by an <audio>"): we always write ``<video><audio>`` ourselves.
  The engine also does not pass ``use_audio_in_video`` to ``model.generate``, so the thinker
  would compute its rotary positions as if audio and video were separate, unlike training
  (the collator passes the flag). For Qwen omni thinkers we wrap the loaded model's
  ``generate`` to pass it when a video and its audio are both present.
- The vLLM engine cannot interleave audio and video (the plugin runs with
  ``expand_mm_tokens=False`` and fails on ``use_audio_in_video``), so ``infer_backend: auto``
  picks vLLM only when no item needs it, and ``infer_backend: vllm`` with such items is an error.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .readers import EvalItem

logger = logging.getLogger(__name__)

__all__ = ["ChatEngine", "GenerationResult", "ItemGenerationError", "create_engine", "resolve_backend", "vllm_available"]

# upstream ModelArguments defaults we need to know to sample clips and frame folders ourselves
UPSTREAM_VIDEO_FPS = 2.0
UPSTREAM_VIDEO_MAXLEN = 128
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class GenerationResult:
    text: str
    prompt_length: int | None = None
    response_length: int | None = None
    finish_reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # extra fields for predictions.jsonl (decoding details)


class ItemGenerationError(RuntimeError):
    """Generation failed for one item; the message names the item and its media."""


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_backend(requested: str, use_audio_in_video: bool, needs_audio_in_video: bool) -> str:
    """``auto`` -> ``vllm`` when vLLM is installed, a GPU is present and no item needs audio
    interleaved with its video; else ``huggingface``. Explicit choices are checked."""
    requested = (requested or "auto").lower()
    if requested in ("hf", "huggingface"):
        return "huggingface"
    blocked = use_audio_in_video and needs_audio_in_video
    if requested == "vllm":
        if not vllm_available():
            raise RuntimeError("--infer_backend vllm: vLLM is not installed (pip install vllm), or use huggingface")
        if blocked:
            raise RuntimeError(
                "--infer_backend vllm cannot run use_audio_in_video: upstream's vLLM engine does not interleave a "
                "video with its audio. Use --infer_backend huggingface, or --no-use_audio_in_video to feed the "
                "audio as a separate input."
            )
        return "vllm"
    if requested != "auto":
        raise ValueError(f"--infer_backend must be auto, huggingface or vllm, not {requested!r}")
    if vllm_available() and not blocked:
        try:
            import torch

            if torch.cuda.is_available():
                return "vllm"
        except ImportError:  # pragma: no cover
            pass
    return "huggingface"


def _sample_times(start: float, end: float, fps: float, maxlen: int) -> list[float]:
    """Evenly spaced times in ``[start, end]``: ``fps`` per second, at most ``maxlen``, at least 1."""
    n = min(maxlen, max(1, math.floor((end - start) * fps)))
    if n == 1:
        return [start]
    step = (end - start) / (n - 1)
    return [start + i * step for i in range(n)]


def clip_frames(path: str, start: float, end: float, fps: float, maxlen: int) -> list[Any]:
    """Frames (PIL images) of ``path`` between ``start`` and ``end`` seconds, ``fps`` per second,
    at most ``maxlen`` (the decoded frame nearest to each sampling time; no frame twice): what
    upstream does for a whole video, for a window of it."""
    import av

    targets = _sample_times(start, end, fps, maxlen)
    frames: list[Any] = []
    chosen: set[int] = set()

    def take(frame: Any, key: int) -> None:
        if key not in chosen:
            chosen.add(key)
            frames.append(frame.to_image())

    with av.open(path) as container:
        stream = container.streams.video[0]
        if start > 0 and stream.time_base:
            container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
        prev: tuple[Any, float, int] | None = None
        for n, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else 0.0
            if t > end + 1e-6:
                break
            while targets and t >= targets[0] - 1e-6:
                if prev is not None and targets[0] - prev[1] < t - targets[0]:
                    take(prev[0], prev[2])
                else:
                    take(frame, n)
                targets.pop(0)
            prev = (frame, t, n)
            if not targets:
                break
        if targets and prev is not None:  # sampling times after the last frame (or past the end)
            take(prev[0], prev[2])
    if not frames:
        raise ValueError(f"no frames decoded from {path} between {start}s and {end}s")
    return frames


def _natural_key(name: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def folder_frames(folder: str, src_fps: float, clip: tuple[float, float] | None, fps: float, maxlen: int) -> list[str]:
    """Paths of the frames of a frame folder (taken at ``src_fps``) inside ``clip``, resampled
    to ``fps``, at most ``maxlen``."""
    names = sorted((n for n in os.listdir(folder) if n.lower().endswith(_IMAGE_EXTS)), key=_natural_key)
    if not names:
        raise ValueError(f"no image frames in {folder}")
    duration = len(names) / src_fps
    start, end = clip if clip else (0.0, duration)
    start, end = max(0.0, start), min(end, duration)
    if end <= start:
        start, end = 0.0, duration
    picked = []
    for t in _sample_times(start, end, fps, maxlen):
        i = min(len(names) - 1, round(t * src_fps))
        if not picked or picked[-1] != i:
            picked.append(i)
    return [os.path.join(folder, names[i]) for i in picked]


def _pass_audio_in_video_to_generate(model: Any) -> None:
    """Make ``model.generate`` receive ``use_audio_in_video=True`` when a call carries video
    pixels and audio features together, as the training collator does for the rope index."""
    generate = model.generate

    @functools.wraps(generate)
    def generate_with_audio_in_video(*args, **kwargs):
        if "input_features" in kwargs and "pixel_values_videos" in kwargs:
            kwargs.setdefault("use_audio_in_video", True)
        return generate(*args, **kwargs)

    model.generate = generate_with_audio_in_video


def create_engine(model_args: dict[str, Any], *, decoding: Any = None, **kwargs: Any) -> ChatEngine:
    """The engine for ``model_args["infer_backend"]``: :class:`~groundpo.eval.batched.BatchedEngine`
    (batched, greedy or contrastive) for huggingface, :class:`ChatEngine` (conversations in flight,
    batched by vLLM) for vllm, which decodes greedily only."""
    backend = str(model_args.get("infer_backend", "huggingface"))
    if backend == "vllm":
        if decoding is not None and decoding.method != "greedy":
            raise ValueError(f"--decoding {decoding.method} needs --infer_backend huggingface (vLLM decodes greedily here)")
        return ChatEngine(model_args, **kwargs)
    from .batched import BatchedEngine

    return BatchedEngine(model_args, decoding=decoding, **kwargs)


class ChatEngine:
    """Greedy generation for :class:`EvalItem` s with ``llamafactory.chat.ChatModel``.

    ``model_args`` is the dict ``ChatModel`` takes (upstream's ModelArguments, DataArguments
    and GeneratingArguments keys); ``infer_backend`` must already be resolved (see
    :func:`resolve_backend`).
    """

    def __init__(
        self,
        model_args: dict[str, Any],
        *,
        max_new_tokens: int = 32,
        caption_max_new_tokens: int = 128,
        batch_size: int = 1,
        system: str | None = None,
    ) -> None:
        from llamafactory.chat import ChatModel

        if batch_size < 1:
            raise ValueError("--batch_size must be >= 1")
        args = dict(model_args)
        args.setdefault("do_sample", False)
        args.setdefault("max_new_tokens", max_new_tokens)
        self.backend = str(args.get("infer_backend", "huggingface"))
        self.use_audio_in_video = bool(args.get("use_audio_in_video", False))
        self.video_fps = float(args.get("video_fps", UPSTREAM_VIDEO_FPS))
        self.video_maxlen = int(args.get("video_maxlen", UPSTREAM_VIDEO_MAXLEN))
        self.max_new_tokens = max_new_tokens
        self.caption_max_new_tokens = caption_max_new_tokens
        self.batch_size = batch_size
        self.system = system
        self.chat_model = ChatModel(args)
        if self.backend == "huggingface" and self.use_audio_in_video:
            model = self.chat_model.engine.model
            model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
            if "omni" in model_type and "qwen" in model_type:
                _pass_audio_in_video_to_generate(model)
                logger.info("use_audio_in_video: passing the flag to %s.generate (upstream's engine does not)", type(model).__name__)
        self._loop = asyncio.new_event_loop()

    # -- inputs ---------------------------------------------------------------------------------

    def inputs(self, item: EvalItem) -> tuple[list[dict[str, str]], dict[str, list[Any] | None]]:
        """The conversation and media lists for ``ChatModel.chat``. Placeholders are written
        here: ``<image>``s, then each ``<video>`` directly followed by its ``<audio>`` (what
        ``use_audio_in_video`` requires), then audio without video, then the prompt."""
        from llamafactory.extras.constants import (
            AUDIO_PLACEHOLDER,
            IMAGE_PLACEHOLDER,
            VIDEO_PLACEHOLDER,
        )

        videos: list[Any] = []
        for path in item.videos:
            if item.frame_fps:
                videos.append(folder_frames(path, item.frame_fps, item.clip, self.video_fps, self.video_maxlen))
            elif item.clip:
                videos.append(clip_frames(path, item.clip[0], item.clip[1], self.video_fps, self.video_maxlen))
            else:
                videos.append(path)
        content = IMAGE_PLACEHOLDER * len(item.images)
        for i in range(len(videos)):
            content += VIDEO_PLACEHOLDER + (AUDIO_PLACEHOLDER if i < len(item.audios) else "")
        content += AUDIO_PLACEHOLDER * max(0, len(item.audios) - len(videos))
        content += item.prompt
        media = {
            "images": list(item.images) or None,
            "videos": videos or None,
            "audios": list(item.audios) or None,
        }
        return [{"role": "user", "content": content}], media

    # -- generation -----------------------------------------------------------------------------

    async def _achat(self, item: EvalItem) -> GenerationResult:
        try:
            messages, media = self.inputs(item)
            max_new = self.caption_max_new_tokens if item.kind == "caption" else self.max_new_tokens
            responses = await self.chat_model.achat(
                messages, system=self.system, **media, temperature=0.0, max_new_tokens=max_new
            )
        except Exception as e:
            paths = ", ".join(p for _, p in item.media())
            raise ItemGenerationError(f"generation failed for item {item.id} (media: {paths}): {type(e).__name__}: {e}") from e
        r = responses[0]
        return GenerationResult(
            text=r.response_text,
            prompt_length=getattr(r, "prompt_length", None),
            response_length=getattr(r, "response_length", None),
            finish_reason=getattr(r, "finish_reason", None),
        )

    def generate(
        self, items: Iterable[EvalItem], return_errors: bool = False
    ) -> Iterator[tuple[EvalItem, GenerationResult | ItemGenerationError]]:
        """Yield ``(item, result)`` as each generation finishes, keeping ``batch_size``
        conversations in flight. A failing item raises :class:`ItemGenerationError`, or, with
        ``return_errors``, is yielded with that error as its result and the others go on."""
        source = iter(items)
        pending: dict[asyncio.Task, tuple[int, EvalItem]] = {}
        counter = 0

        def fill() -> None:
            nonlocal counter
            while len(pending) < self.batch_size:
                item = next(source, None)
                if item is None:
                    return
                pending[self._loop.create_task(self._achat(item))] = (counter, item)
                counter += 1

        try:
            fill()
            while pending:
                done, _ = self._loop.run_until_complete(asyncio.wait(list(pending), return_when=asyncio.FIRST_COMPLETED))
                for task in sorted(done, key=lambda t: pending[t][0]):
                    _, item = pending.pop(task)
                    error = task.exception()
                    if error is not None and return_errors and isinstance(error, ItemGenerationError):
                        logger.error("%s", error)
                        yield item, error
                    else:
                        yield item, task.result()
                fill()
        finally:
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.close()
