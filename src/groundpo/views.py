"""Views: what the prompt's media look like in one forward pass of one row.

Every objective here is a function of log π(y | view). Two kinds of view exist, because the
processed tensors constrain what can change without re-tokenising:

- **Tensor views** keep every shape and token count: one or both modalities of the collated
  batch are corrupted in place (noise, zeros, shuffle, crop). The trainer builds them from the
  clean batch (``groundpo.corruption``). Which modality a tensor view corrupts may depend on the
  row's ``modality`` (MoD-DPO's invariance and sensitivity views).
- **Token views** change the token sequence: media removed (text only) or replaced by other media
  (another image, a swapped audio track). They are tokenised at preprocessing
  (``groundpo.data.processor``) and collated into their own sub-batch.

The text-only view of MoD-DPO++ and JoMPO's ``m_none`` are the same token view, ``text``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

VISUAL, AUDIO = "visual", "audio"
SIDES = (VISUAL, AUDIO)


@dataclass(frozen=True)
class TensorView:
    """A shape-preserving view: ``sides(row)`` names the modalities to corrupt in a row.

    ``row`` is the pair's metadata (``modality``, ``pair_type``, ``region``, ``has_contrast``);
    ``base`` is the view whose tensors are corrupted: the clean batch or a token view.
    """

    name: str
    sides: Callable[[dict], frozenset[str]]
    base: str = "clean"

    def sides_per_row(self, rows: list[dict]) -> list[frozenset[str]]:
        return [self.sides(row) for row in rows]


MEDIA_KINDS = ("images", "videos", "audios")


@dataclass(frozen=True)
class TokenView:
    """A view tokenised at preprocessing.

    ``media(row)`` returns the view's (images, videos, audios) for an aligned row (a dict with
    ``_images``, ``_rejected_images``, ...); ``strip_placeholders`` removes the media placeholders
    from the prompt (text-only views).
    """

    name: str
    media: Callable[[dict], tuple[list, list, list]]
    strip_placeholders: bool = False


def _no_media(row: dict) -> tuple[list, list, list]:
    return [], [], []


def _contrast_media(row: dict) -> tuple[list, list, list]:
    """Each kind from its ``rejected_*`` column where the row has one, else the clean media."""
    return tuple(row.get(f"_rejected_{kind}") or row.get(f"_{kind}") or [] for kind in MEDIA_KINDS)


def _irrelevant(row: dict) -> frozenset[str]:
    """MoD-DPO's invariance view: corrupt the modality the prompt is *not* about (Eq. 6, Supp. A.4)."""
    return {"visual": frozenset({AUDIO}), "audio": frozenset({VISUAL})}.get(row.get("modality"), frozenset())


def _relevant(row: dict) -> frozenset[str]:
    """MoD-DPO's sensitivity view: corrupt the modality the prompt is about; both for audiovisual (A.5)."""
    return {
        "visual": frozenset({VISUAL}),
        "audio": frozenset({AUDIO}),
        "audiovisual": frozenset({VISUAL, AUDIO}),
    }.get(row.get("modality"), frozenset())


def _visual(row: dict) -> frozenset[str]:
    return frozenset({VISUAL})


def _audio(row: dict) -> frozenset[str]:
    return frozenset({AUDIO})


def _visual_unless_given(row: dict) -> frozenset[str]:
    """MFPO's m': perturb the image on the fly only where the row brings no perturbed file."""
    return frozenset() if row.get("has_contrast") else frozenset({VISUAL})


INVARIANCE = TensorView("inv", _irrelevant)
SENSITIVITY = TensorView("sens", _relevant)
VISUAL_CORRUPTED = TensorView("vcorrupt", _visual)  # OmniDPO v', mDPO's cropped image
AUDIO_CORRUPTED = TensorView("acorrupt", _audio)  # OmniDPO a'
PERTURBED = TensorView("perturbed", _visual_unless_given, base="contrast")  # MFPO m'

TEXT_ONLY = TokenView("text", _no_media, strip_placeholders=True)
CONTRAST = TokenView("contrast", _contrast_media)

TOKEN_VIEWS = {view.name: view for view in (TEXT_ONLY, CONTRAST)}
TENSOR_VIEWS = {view.name: view for view in (INVARIANCE, SENSITIVITY, VISUAL_CORRUPTED, AUDIO_CORRUPTED, PERTURBED)}


# ---------------------------------------------------------------- passes and plans
CLEAN = "clean"
POLICY, REFERENCE = "policy", "reference"


@dataclass(frozen=True)
class Pass:
    """One forward pass: a model on a view of the batch (chosen and rejected rows together).

    ``chosen_only`` passes score y_w alone (OmniDPO's, mDPO's and MFPO's conditional terms use no
    log π(y_l | corrupted view)): only the B chosen rows run, and the table holds None for y_l.
    Every pass with gradient of a step runs in ONE forward (the engine concatenates their inputs),
    so DDP, ZeRO-3 and FSDP see one forward and one backward per step.
    """

    view: str = CLEAN  # "clean", a TensorView name or a TokenView name
    model: str = POLICY  # "policy" or "reference"
    grad: bool = False  # the policy passes a loss differentiates
    chosen_only: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.view)


@dataclass(frozen=True)
class StagePlan:
    """What a stage computes per step, built from its arguments by ``StageSpec.plan``."""

    passes: tuple[Pass, ...]
    corruptions: dict = field(default_factory=dict)  # side -> groundpo.corruption.CorruptionSpec
    row_checks: tuple = ()  # groundpo.data.rows checks every row must pass
    homogeneous_batches: bool = False  # modality-homogeneous batches (groundpo.data.sampler)
    precompute_reference: bool = False  # reference passes on clean/token views computed once
    # rows whose rejected side is the chosen response under the contrast media (ACPO's input pairs)
    input_contrastive: Callable[[dict], bool] | None = None
    curriculum: bool = False  # easy-to-hard thirds by the policy's token entropy on y_w (MFPO)
    plot_keys: tuple[str, ...] = ("loss", "rewards/accuracies")

    @property
    def token_views(self) -> tuple[TokenView, ...]:
        names = {p.view for p in self.passes if p.view in TOKEN_VIEWS}
        names |= {TENSOR_VIEWS[p.view].base for p in self.passes if p.view in TENSOR_VIEWS} & set(TOKEN_VIEWS)
        return tuple(TOKEN_VIEWS[name] for name in sorted(names))

    @property
    def ordered_passes(self) -> tuple[Pass, ...]:
        """No-grad passes first: their activations are freed before the policy's graph is built."""
        return tuple(sorted(self.passes, key=lambda p: p.grad))


LogpTable = dict  # (model, view) -> (chosen_logps [B], rejected_logps [B] or None for chosen-only passes)
