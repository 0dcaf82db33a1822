"""Model backends: OpenAI-compatible chat endpoints and local transformers models.

Chat (:class:`ChatBackend`): the official ``openai`` client against any OpenAI-compatible
server: the OpenAI API (GPT-4o), a vLLM server (Qwen2.5-VL, Qwen2-Audio, Qwen2.5-Omni),
``llamafactory-cli api``. The key comes from an environment variable only. A request is retried
on rate limits (429), server errors (5xx), 408/409, timeouts and lost connections, with
exponential backoff and jitter (``Retry-After`` wins when the server sends it); other refusals
(a bad key, an unknown model, a malformed request) stop the run at once. JSON answers are
checked against a pydantic model; a malformed answer is asked again ``answer_retries`` times and
then rejected with its reason (``invalid_json``, ``schema``, ``empty_answer``, or the pipeline's
own check). Token usage is counted when the server reports it.

Local (:class:`ImageEmbedder`, :class:`TextEmbedder`, :class:`ZeroShotDetector`,
:class:`BoxSegmenter`, :class:`ImageTagger`): transformers models loaded from a folder (CLIP,
DINOv2, SigLIP; any sentence encoder; Grounding DINO, OWL-ViT/OWLv2; SAM; any image classifier).
torch and transformers are imported only when one is used.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import FatalBackendError, InputError, Reject, TransientError


# ---------------------------------------------------------------- usage accounting
@dataclass
class Meter:
    """Requests, retries and tokens of whatever ran while this meter was current (one item)."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    unreported: int = 0  # answers that came without a usage block
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def as_record(self) -> dict[str, int]:
        return {
            k: getattr(self, k)
            for k in ("requests", "retries", "prompt_tokens", "completion_tokens", "total_tokens", "unreported")
        }


_current = threading.local()


@contextmanager
def metered(meter: Meter) -> Iterator[Meter]:
    """Count every request made in this thread into ``meter`` while the block runs."""
    previous = getattr(_current, "meter", None)
    _current.meter = meter
    try:
        yield meter
    finally:
        _current.meter = previous


def _meter() -> Meter:
    meter = getattr(_current, "meter", None)
    if meter is None:
        meter = _current.meter = Meter()
    return meter


# ---------------------------------------------------------------- message parts
def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def image_part(image: Any, max_side: int | None = None, fmt: str = "png") -> dict[str, Any]:
    """An ``image_url`` part with the image inline (PIL image, array or path), longest side capped."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as img:
            image = img.convert("RGB")
    elif not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if fmt == "jpeg" else "PNG", **({"quality": 90} if fmt == "jpeg" else {}))
    data = base64.b64encode(buffer.getvalue()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/{fmt};base64,{data}"}}


def audio_part(wav_path: str | os.PathLike, kind: str = "input_audio") -> dict[str, Any]:
    """A wav inline: an ``input_audio`` part (OpenAI's format; vLLM takes it) or an ``audio_url`` data URL
    (vLLM, ``llamafactory-cli api``)."""
    data = base64.b64encode(Path(wav_path).read_bytes()).decode()
    if kind == "audio_url":
        return {"type": "audio_url", "audio_url": {"url": f"data:audio/wav;base64,{data}"}}
    return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}


# ---------------------------------------------------------------- answers
def extract_json(text: str) -> Any:
    """The JSON value in an answer: the whole text, a fenced ```json block, or the outermost {...}."""
    candidates = [text.strip()]
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.S)
    if fenced:
        candidates.append(fenced.group(1).strip())
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    raise Reject("invalid_json", f"no JSON object in the answer: {_short(text)}")


def validate_answer(text: str, schema: type) -> Any:
    """The answer parsed into the pydantic model ``schema``; a :class:`Reject` says what is wrong."""
    import pydantic

    value = extract_json(text)
    try:
        return schema.model_validate(value)
    except pydantic.ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'answer'}: {err['msg']}" for err in e.errors()[:5]
        )
        raise Reject("schema", f"{problems} (answer: {_short(text)})") from None


def require_different(chosen: str, rejected: str) -> None:
    """A preference pair whose two answers are the same text (ignoring case and spacing) teaches nothing."""
    if " ".join(chosen.split()).lower() == " ".join(rejected.split()).lower():
        raise Reject("identical_answers", f"chosen and rejected are the same text: {_short(chosen, 120)}")


def _short(text: str, n: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


# ---------------------------------------------------------------- chat endpoints
RETRYABLE_STATUS = (408, 409, 429)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_delay)
        return min(self.max_delay, self.base_delay * 2**attempt) * (0.5 + random.random() / 2)


class ChatBackend:
    """One OpenAI-compatible endpoint and model; safe to use from several threads."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        *,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 300.0,
        temperature: float | None = 0.0,
        max_tokens: int | None = 1024,
        seed: int | None = None,
        response_format: str = "json_schema",
        answer_retries: int = 2,
        role: str = "",
    ) -> None:
        from openai import OpenAI

        if not base_url or not model:
            what = f"--{role}_api_base / --{role}_api_model (or --api_base / --api_model)" if role else "--api_base and --api_model"
            raise InputError(f"this pipeline sends requests to a chat endpoint: give {what}")
        self.model = model
        self.base_url = base_url
        self.retry = retry
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.response_format = response_format
        self.answer_retries = answer_retries
        # servers without keys (vLLM, llamafactory-cli api) accept any non-empty string
        self.client = OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY", max_retries=0, timeout=timeout)

    def __repr__(self) -> str:  # never shows the key
        return f"ChatBackend({self.base_url!r}, model={self.model!r})"

    def complete(self, messages: list[dict[str, Any]], schema: type | None = None, name: str = "answer") -> str:
        """The text of one answer, retried through rate limits and server errors."""
        import openai

        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if self.max_tokens:
            kwargs["max_tokens"] = self.max_tokens
        if self.seed is not None:
            kwargs["seed"] = self.seed
        if schema is not None and self.response_format == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema.model_json_schema(), "strict": False},
            }
        elif schema is not None and self.response_format == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        meter = _meter()
        attempt = 0
        while True:
            with meter.lock:
                meter.requests += 1
            try:
                response = self.client.chat.completions.create(**kwargs)
                break
            except (openai.APIConnectionError, openai.APIStatusError) as e:
                status = getattr(e, "status_code", None)
                retryable = status is None or status in RETRYABLE_STATUS or status >= 500
                if not retryable:
                    raise FatalBackendError(
                        f"{self.base_url} refused a {name!r} request for model {self.model!r}: HTTP {status}: {_short(str(e))}"
                        + ("; if the server does not take response_format, use --response_format none" if status in (400, 422) else "")
                    ) from None
                if attempt >= self.retry.max_retries:
                    raise TransientError(
                        f"{self.base_url}: {name!r} request failed after {attempt + 1} attempts: {_short(str(e))}"
                    ) from None
                retry_after = None
                response_obj = getattr(e, "response", None)
                if response_obj is not None:
                    try:
                        retry_after = float(response_obj.headers.get("retry-after"))
                    except (TypeError, ValueError):
                        retry_after = None
                with meter.lock:
                    meter.retries += 1
                time.sleep(self.retry.delay(attempt, retry_after))
                attempt += 1
        usage = getattr(response, "usage", None)
        with meter.lock:
            if usage is not None and getattr(usage, "total_tokens", None) is not None:
                meter.prompt_tokens += int(usage.prompt_tokens or 0)
                meter.completion_tokens += int(usage.completion_tokens or 0)
                meter.total_tokens += int(usage.total_tokens or 0)
            else:
                meter.unreported += 1
        choices = getattr(response, "choices", None) or []
        if not choices or choices[0].message is None:
            return ""
        text = choices[0].message.content or ""
        if choices[0].finish_reason == "length":
            text += "\n[groundpo: the answer was cut off at max_tokens]"
        return text

    def ask_json(
        self,
        messages: list[dict[str, Any]],
        schema: type,
        name: str,
        check: Callable[[Any], None] | None = None,
    ) -> Any:
        """A schema-valid answer; ``check(answer)`` may raise :class:`Reject` for pipeline rules.

        A malformed answer is asked again up to ``answer_retries`` times; the last reason is raised.
        """
        last: Reject | None = None
        for _ in range(self.answer_retries + 1):
            text = self.complete(messages, schema=schema, name=name)
            try:
                answer = validate_answer(text, schema)
                if check is not None:
                    check(answer)
                return answer
            except Reject as reject:
                last = reject
        raise Reject(last.reason, f"{name}: {last.detail}", **{**last.extra, "request": name})

    def ask_text(self, messages: list[dict[str, Any]], name: str) -> str:
        """A non-empty free-text answer (captions)."""
        text = ""
        for _ in range(self.answer_retries + 1):
            text = self.complete(messages, name=name).strip()
            if text and "[groundpo: the answer was cut off" not in text:
                return text
        reason = "empty answer" if not text else "answer cut off at max_tokens"
        raise Reject("empty_answer" if not text else "truncated_answer", f"{name}: {reason}", request=name)


# ---------------------------------------------------------------- local transformers models
def resolve_device(name: str = "auto") -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _model_dir(path: str, option: str) -> str:
    if not path or not Path(path).is_dir():
        raise InputError(f"--{option}: model folder {path!r} not found (local transformers models are loaded from a path)")
    return path


def _features(output: Any) -> Any:
    """Embeddings from a model output: a tensor, a pooled output, or the first token's state."""
    import torch

    if torch.is_tensor(output):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is not None:
        return pooled
    return output.last_hidden_state[:, 0]


def serialised(method: Callable) -> Callable:
    """One call at a time per model object (items run in threads; a local model runs one batch at a time)."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def _normalised(x: Any) -> Any:
    import numpy as np

    x = x.float().cpu().numpy().astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class LocalModel:
    """A transformers model and its processor loaded from a folder (``model_class`` / ``processor_class``
    name ``transformers`` auto classes), in eval mode on ``device``; calls are serialised."""

    model_class = "AutoModel"
    processor_class = "AutoProcessor"
    option = "model"  # the option naming the folder, for error messages

    def __init__(self, path: str, device: str = "auto", option: str | None = None, batch_size: int = 64) -> None:
        import transformers

        folder = _model_dir(path, option or self.option)
        self.device = resolve_device(device)
        self.processor = getattr(transformers, self.processor_class).from_pretrained(folder)
        self.model = getattr(transformers, self.model_class).from_pretrained(folder).to(self.device).eval()
        self.batch_size = batch_size
        self._lock = threading.Lock()


class Embedder(LocalModel, ABC):
    """A local model that maps inputs to L2-normalised vectors; a subclass says how (``_features``)."""

    @serialised
    def embed(self, inputs: list[Any]) -> Any:
        """L2-normalised embeddings of ``inputs``, ``batch_size`` at a time."""
        import numpy as np
        import torch

        out = []
        for start in range(0, len(inputs), self.batch_size):
            with torch.no_grad():
                out.append(_normalised(self._features(inputs[start : start + self.batch_size])))
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    @abstractmethod
    def _features(self, batch: list[Any]) -> Any:
        """Unnormalised feature vectors [len(batch), D] of one batch (a tensor)."""


class ImageEmbedder(Embedder):
    """Image embeddings: CLIP/SigLIP image features, else the pooled output (DINOv2)."""

    processor_class = "AutoImageProcessor"
    option = "image_model"

    def _features(self, batch: list[Any]) -> Any:
        inputs = self.processor(images=[img.convert("RGB") for img in batch], return_tensors="pt").to(self.device)
        if hasattr(self.model, "get_image_features"):
            return _features(self.model.get_image_features(pixel_values=inputs["pixel_values"]))
        return _features(self.model(**inputs))


class TextEmbedder(Embedder):
    """Text embeddings: CLIP/SigLIP text features, else mean-pooled hidden states (sentence encoders)."""

    processor_class = "AutoTokenizer"
    option = "text_model"

    def _features(self, batch: list[str]) -> Any:
        inputs = self.processor(list(batch), padding=True, truncation=True, return_tensors="pt").to(self.device)
        if hasattr(self.model, "get_text_features"):
            return _features(self.model.get_text_features(**inputs))
        hidden = self.model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


class ZeroShotDetector(LocalModel):
    """Text-prompted boxes (Grounding DINO, OWL-ViT, OWLv2) in pixel coordinates of the image."""

    model_class = "AutoModelForZeroShotObjectDetection"
    option = "detector_model"

    def __init__(self, path: str, device: str = "auto", threshold: float = 0.3) -> None:
        super().__init__(path, device)
        self.threshold = threshold

    @serialised
    def detect(self, image: Any, labels: list[str]) -> list[tuple[str, list[float], float]]:
        """``(label, [x0, y0, x1, y1], score)`` of every box above the threshold, best first."""
        import torch

        image = image.convert("RGB")
        if not labels:
            return []
        if self.model.config.model_type == "grounding-dino":
            text: Any = ". ".join(labels) + "."
        else:
            text = [labels]
        inputs = self.processor(images=image, text=text, return_tensors="pt", padding=True, truncation=True).to(self.device)
        with torch.no_grad():
            outputs = self.model(**inputs)
        kwargs = {"threshold": self.threshold, "target_sizes": [(image.height, image.width)], "text_labels": [labels]}
        if self.model.config.model_type == "grounding-dino":
            kwargs["input_ids"] = inputs["input_ids"]
            kwargs["text_threshold"] = self.threshold
        result = self.processor.post_process_grounded_object_detection(outputs, **kwargs)[0]
        names = result.get("text_labels", result.get("labels"))
        found = []
        for label, box, score in zip(names, result["boxes"].tolist(), result["scores"].tolist()):
            if isinstance(label, int):
                label = labels[label]
            found.append((str(label), [float(v) for v in box], float(score)))
        return sorted(found, key=lambda f: -f[2])


class BoxSegmenter(LocalModel):
    """Masks inside boxes with a box-prompted segmenter (SAM, SAM-HQ) loaded from a folder."""

    option = "segmenter_model"

    @serialised
    def masks(self, image: Any, boxes: list[list[float]]) -> list[Any]:
        """One boolean ``(height, width)`` array per box."""
        import torch

        if not boxes:
            return []
        image = image.convert("RGB")
        inputs = self.processor(images=image, input_boxes=[[list(map(float, b)) for b in boxes]], return_tensors="pt")
        with torch.no_grad():
            outputs = self.model(
                pixel_values=inputs["pixel_values"].to(self.device),
                input_boxes=inputs["input_boxes"].to(self.device),
                multimask_output=False,
            )
        masks = self.processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"]
        )[0]
        return [m[0].numpy().astype(bool) for m in masks]


class ImageTagger(LocalModel):
    """Multi-label tags from an image classifier (sigmoid scores above a threshold, union over frames)."""

    model_class = "AutoModelForImageClassification"
    processor_class = "AutoImageProcessor"
    option = "tagger_model"

    def __init__(self, path: str, device: str = "auto", threshold: float = 0.5, top_k: int = 20) -> None:
        super().__init__(path, device)
        self.threshold = threshold
        self.top_k = top_k

    @serialised
    def tags(self, images: list[Any]) -> list[str]:
        import torch

        if not images:
            return []
        inputs = self.processor(images=[img.convert("RGB") for img in images], return_tensors="pt").to(self.device)
        with torch.no_grad():
            scores = torch.sigmoid(self.model(**inputs).logits).max(dim=0).values.cpu()
        order = torch.argsort(scores, descending=True)[: self.top_k].tolist()
        labels = self.model.config.id2label
        return [str(labels[i]) for i in order if scores[i] >= self.threshold]
