r"""Decode-time hallucination defences: VCD and AVCD as a transformers logits processor.

**VCD** (Leng et al. 2024, Visual Contrastive Decoding): next-token logits

    z = (1 + α)·l(v, x) − α·l(v*, x),   z_k = −∞ where l_k < log β + max_j l_j

with v* the image (or video) under forward-diffusion noise at step t (``--cd_noise_step``, 500;
:func:`groundpo.corruption.diffusion_noise`, VCD's 1000-step schedule), α = ``--cd_alpha`` (1),
β = ``--cd_beta`` (0.1). :func:`contrastive_logits` is that formula. The adaptive plausibility
constraint masks with −∞, so an implausible token can never win (the AVCD authors' code fills
−1e-4 instead, which lets a masked token beat every plausible token whose contrasted logit is
below −1e-4).

**AVCD** (Jung et al. 2025, Audio-Visual Contrastive Decoding) for inputs with audio and video:

1. The dominant modality D ∈ {language, visual, audio} is the one whose tokens receive the most
   attention per token from the last prompt token, averaged over heads and over all decoder layers
   but the last (one eager forward of the clean prompt, :func:`modality_attention`).
2. The other modalities N₁, N₂ are perturbed: visual and audio inputs with the same diffusion noise
   as VCD (shape-preserving, so every stream keeps the clean token positions and KV layout); the
   question's most-attended tokens (attention at or above the median over the question) are masked
   out of attention (AVCD's attentive masking).
3. With both N₁ and N₂ present, the logits combine the clean stream l, the stream with both
   perturbed (l₁₂) and those with one perturbed (l₁, l₂) as the AVCD authors' code does:
   z = (2 + 2α)·l − 2α·l₁₂ + l₁ + l₂; with one non-dominant modality (an image question) it is
   VCD's z = (1 + α)·l − α·l₁. The plausibility mask is VCD's, on l. Defaults from their code:
   α = 0.5, β = 0.2.
4. Entropy gate: when the entropy of softmax(l) is below ``--cd_entropy_threshold`` (0.6) the
   model is confident and the clean logits are used as they are.

**Cached decoding.** The streams of a batch of B items are rows of one batch of S·B rows (stream s
of item i is row s·B + i) passed to ``model.generate``: every stream keeps its own rows of the KV
cache, all streams advance in one forward per token, and :class:`ContrastiveLogitsProcessor`
writes the combined logits into every stream's row, so all streams of an item pick the same token
(greedy) and stay in step. The AVCD authors' code instead re-runs four full forwards of the whole
sequence for every token, without a cache.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

__all__ = [
    "DECODING_METHODS",
    "ContrastiveLogitsProcessor",
    "DecodingConfig",
    "avcd_logits",
    "concat_streams",
    "contrastive_logits",
    "entropy",
    "last_token_attention",
    "modality_attention",
]

DECODING_METHODS = ("greedy", "vcd", "avcd")
LANGUAGE, VISUAL, AUDIO = "language", "visual", "audio"
# per-method defaults: VCD's paper/code (α 1, β 0.1, no gate); the AVCD authors' code (α 0.5, β 0.2, gate 0.6)
_DEFAULTS = {
    "greedy": {"alpha": 0.0, "beta": 0.0, "entropy_threshold": 0.0},
    "vcd": {"alpha": 1.0, "beta": 0.1, "entropy_threshold": 0.0},
    "avcd": {"alpha": 0.5, "beta": 0.2, "entropy_threshold": 0.6},
}


@dataclass(frozen=True)
class DecodingConfig:
    """``--decoding`` and its ``--cd_*`` options; ``None`` takes the method's default."""

    method: str = "greedy"
    alpha: float | None = None
    beta: float | None = None
    noise_step: int = 500
    entropy_threshold: float | None = None
    seed: int = 0

    def resolved(self) -> DecodingConfig:
        if self.method not in DECODING_METHODS:
            raise ValueError(f"--decoding must be one of {', '.join(DECODING_METHODS)}, not {self.method!r}")
        filled = {k: v if getattr(self, k) is None else getattr(self, k) for k, v in _DEFAULTS[self.method].items()}
        out = replace(self, **filled)
        if out.alpha < 0:
            raise ValueError(f"--cd_alpha must be >= 0, got {out.alpha}")
        if not 0 <= out.beta <= 1:
            raise ValueError(f"--cd_beta must be in [0, 1], got {out.beta}")
        if not 0 <= out.noise_step < 1000:
            raise ValueError(f"--cd_noise_step must be in [0, 999] (VCD's 1000-step schedule), got {out.noise_step}")
        return out

    @property
    def contrastive(self) -> bool:
        return self.method != "greedy"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self.resolved())


def contrastive_logits(logits: torch.Tensor, cd_logits: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """VCD: ``(1 + α)·logits − α·cd_logits``, −∞ where ``logits < log β + max(logits)`` (last dim)."""
    return _plausible((1 + alpha) * logits - alpha * cd_logits, logits, beta)


def _plausible(z: torch.Tensor, logits: torch.Tensor, beta: float) -> torch.Tensor:
    """VCD's adaptive plausibility constraint on the clean ``logits``, masking with −∞."""
    if beta <= 0:
        return z
    cutoff = math.log(beta) + logits.max(dim=-1, keepdim=True).values
    return z.masked_fill(logits < cutoff, float("-inf"))


def avcd_logits(
    logits: torch.Tensor, both: torch.Tensor, first: torch.Tensor, second: torch.Tensor, alpha: float, beta: float
) -> torch.Tensor:
    """AVCD's trimodal combination ``(2 + 2α)·l − 2α·l₁₂ + l₁ + l₂`` with VCD's plausibility mask."""
    return _plausible((2 + 2 * alpha) * logits - 2 * alpha * both + first + second, logits, beta)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) over the last dim."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


class ContrastiveLogitsProcessor:
    """A ``transformers`` logits processor over S streams of B items (row s·B + i).

    ``plans[i]`` says how item i combines its streams: ``("vcd",)`` (stream 1 is the contrast),
    ``("avcd2",)`` (streams 1, 2, 3: both perturbed, first, second) or ``("avcd1",)`` (one
    non-dominant modality: VCD on stream 1). Every stream row of an item receives the item's
    combined scores. ``contrast_steps[i]`` counts the steps where the contrast was applied (the
    entropy gate may skip it).
    """

    def __init__(self, n_items: int, n_streams: int, plans: Sequence[str], config: DecodingConfig) -> None:
        self.n_items, self.n_streams = n_items, n_streams
        self.plans = list(plans)
        self.config = config.resolved()
        self.contrast_steps = [0] * n_items
        self.steps = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != self.n_items * self.n_streams:
            raise RuntimeError(f"expected {self.n_items} x {self.n_streams} rows of scores, got {scores.shape[0]}")
        c = self.config
        streams = scores.view(self.n_streams, self.n_items, -1)
        clean = streams[0]
        combined = clean.clone()
        gate = entropy(clean) >= c.entropy_threshold if c.entropy_threshold > 0 else torch.ones(self.n_items, dtype=torch.bool)
        for i, plan in enumerate(self.plans):
            if not bool(gate[i]):
                continue
            if plan == "avcd2":
                combined[i] = avcd_logits(clean[i], streams[1, i], streams[2, i], streams[3, i], c.alpha, c.beta)
            else:  # "vcd" / "avcd1"
                combined[i] = contrastive_logits(clean[i], streams[1, i], c.alpha, c.beta)
            self.contrast_steps[i] += 1
        self.steps += 1
        return combined.repeat(self.n_streams, 1)


def concat_streams(batches: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One batch of the rows of ``batches`` in order (same keys): tensors and lists are
    concatenated along the first dim, anything else must be equal."""
    out: dict[str, Any] = {}
    for key in batches[0]:
        values = [b[key] for b in batches]
        if torch.is_tensor(values[0]):
            out[key] = torch.cat(values, dim=0)
        elif isinstance(values[0], list):
            out[key] = [x for v in values for x in v]
        else:
            if any(v != values[0] for v in values[1:]):
                raise ValueError(f"streams disagree on {key!r}")
            out[key] = values[0]
    return out


def item_seed(item_id: str, seed: int) -> int:
    """A stable noise key for an item: the same noise whatever batch it lands in."""
    return (zlib.crc32(item_id.encode("utf-8")) + 1_000_003 * seed) & 0x7FFFFFFF


def text_decoder(model: Any) -> Any:
    """The language model's decoder stack (``get_decoder()``; for models whose ``get_decoder``
    is the whole multimodal model, e.g. the Qwen2.5-Omni thinker, its text ``model``)."""
    decoder = model.get_decoder()
    if not hasattr(decoder, "layers"):
        for name in ("model", "language_model"):
            sub = getattr(decoder, name, None)
            if sub is not None and hasattr(sub, "layers"):
                return sub
        raise RuntimeError(f"AVCD: cannot find the text decoder of {type(model).__name__}")
    return decoder


@torch.no_grad()
def last_token_attention(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """[B, L]: the attention the last prompt token pays to every token, averaged over heads and
    over every decoder layer but the last, from one forward of ``batch`` with eager attention in
    the decoder (switched back afterwards)."""
    decoder = text_decoder(model)
    modules = [m for name, m in decoder.named_modules() if name.endswith("self_attn")]
    if not modules:
        raise RuntimeError(f"AVCD: no self_attn modules in {type(decoder).__name__}")
    captured: list[torch.Tensor] = []

    def hook(module, args, output):
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise RuntimeError("AVCD: the decoder returned no attention weights (eager attention needed)")
        captured.append(weights[:, :, -1, :].float().mean(1))  # [B, L]: last query, mean over heads

    previous = decoder.config._attn_implementation
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        decoder.set_attn_implementation("eager")
        model(**batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
        decoder.set_attn_implementation(previous)
    layers = captured[:-1] if len(captured) > 1 else captured
    return torch.stack(layers).mean(0)


def modality_attention(attn: torch.Tensor, masks: dict[str, torch.Tensor]) -> list[dict[str, float]]:
    """Per row, the mean of ``attn`` [B, L] over each modality's tokens (``masks``: modality ->
    [B, L] bool); a modality without tokens in a row gets no entry for that row."""
    out = []
    for row in range(attn.shape[0]):
        scores = {}
        for name, mask in masks.items():
            m = mask[row].to(attn.device)
            if bool(m.any()):
                scores[name] = float(attn[row][m].mean())
        out.append(scores)
    return out


def dominant(scores: dict[str, float]) -> str:
    """The modality with the most attention per token (ties: language, visual, audio order)."""
    order = (LANGUAGE, VISUAL, AUDIO)
    return max((m for m in order if m in scores), key=lambda m: (scores[m], -order.index(m)))


def attentive_mask(attention_row: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """Tokens of ``span`` (bool [L]) whose attention is at or above the span's median: AVCD's
    attentive masking of the language tokens."""
    values = attention_row[span]
    if values.numel() == 0:
        return span.clone()
    threshold = values.median()
    return span & (attention_row >= threshold)


def plan_streams(available: Sequence[str], dom: str) -> tuple[str, list[frozenset[str]]]:
    """AVCD for one item: its plan and the modalities perturbed in streams 1..3."""
    others = [m for m in (LANGUAGE, VISUAL, AUDIO) if m in available and m != dom]
    if len(others) >= 2:
        a, b = others[:2]
        return "avcd2", [frozenset({a, b}), frozenset({a}), frozenset({b})]
    if len(others) == 1:
        return "avcd1", [frozenset(others)] * 3
    return "avcd1", [frozenset()] * 3

