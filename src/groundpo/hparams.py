"""groundpo's YAML keys, as dataclasses, in LLaMA-Factory's style.

Each method's keys live in one dataclass named after the method. ``GroundpoFinetuningArguments``
joins them to upstream's ``FinetuningArguments``, and ``groundpo.integration.parser`` puts it in
the place of upstream's class when ``llamafactory-cli train`` parses a config. A key is accepted
only by the stages whose :class:`~groundpo.registry.StageSpec` lists its dataclass; anything
else is a clear error at start-up. β is upstream's ``pref_beta`` throughout; when a config does
not set it, a stage's paper value applies (``StageSpec.default_beta``, e.g. 0.05 for JoMPO).

Every key is documented in ``docs/configuration.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llamafactory.hparams.finetuning_args import FinetuningArguments

CORRUPTIONS = ("diffusion", "gaussian", "zeros", "shuffle")
DIFFUSION_STEPS = 1000  # VCD's schedule: t indexes steps 0..999 (t = 500 is the papers' choice)
# upstream `dpo` options that groundpo's objectives do not implement: giving one is an error, not a no-op
UNSUPPORTED_UPSTREAM = {
    "dpo_label_smoothing": (0.0, "cDPO label smoothing"),
    "pref_bco_weight": (0.0, "the BCO term"),
    "ld_alpha": (None, "LD-DPO's length desensitisation"),
}


def _check_choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"`{key}` must be one of {', '.join(map(str, choices))}; got {value!r}.")


def _check_range(key: str, value: float, low: float | None = None, high: float | None = None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ValueError(f"`{key}` must lie in {bounds}; got {value!r}.")


@dataclass
class ModDPOArguments:
    r"""MoD-DPO / MoD-DPO++ (stage ``mod_dpo``), arXiv 2603.03192 Eq. 5-12.

    margin = τ·lr_policy − β·lr_ref − β_inv·lr_inv + β_sens·lr_sens − γ_LPD·lr_text.
    """

    mod_beta_inv: float = field(
        default=0.02,
        metadata={"help": "β_inv: weight of the invariance term (irrelevant modality corrupted). Paper: 0.02."},
    )
    mod_beta_sens: float = field(
        default=0.05,
        metadata={"help": "β_sens: weight of the sensitivity term (relevant modality corrupted). Paper: 0.05."},
    )
    mod_gamma_lpd: float = field(
        default=0.0,
        metadata={
            "help": "γ_LPD: language-prior debiasing weight (text-only reference pass). 0 = MoD-DPO, "
            ">0 = MoD-DPO++ (paper: 0.05)."
        },
    )
    mod_tau: Literal["paper", "derived"] = field(
        default="paper",
        metadata={
            "help": "Coefficient τ of the policy log-ratio: 'paper' = β+β_inv+β_sens (Eq. 8), "
            "'derived' = β+β_inv−β_sens (from Eq. 13-16)."
        },
    )
    mod_corruption: Literal["diffusion", "gaussian", "zeros", "shuffle"] = field(
        default="diffusion",
        metadata={"help": "How a modality is corrupted: diffusion (VCD forward noise), gaussian, zeros, shuffle."},
    )
    mod_corruption_visual: str | None = field(
        default=None,
        metadata={"help": "Override of `mod_corruption` for the visual side (images and video frames)."},
    )
    mod_corruption_audio: str | None = field(
        default=None,
        metadata={"help": "Override of `mod_corruption` for the audio side."},
    )
    mod_diffusion_steps: int = field(
        default=500,
        metadata={"help": "Diffusion step t of the 1000-step VCD schedule (paper: 500; larger = noisier)."},
    )
    mod_noise_std: float = field(
        default=1.0,
        metadata={"help": "Standard deviation of the `gaussian` corruption (added to the normalised features)."},
    )
    mod_alternate_modalities: bool = field(
        default=True,
        metadata={"help": "Form modality-homogeneous batches that alternate visual and audio prompts."},
    )
    mod_precompute_reference: bool = field(
        default=False,
        metadata={"help": "Compute the clean and text-only reference log-probs once before training."},
    )

    def check_mod_dpo(self) -> None:
        for key in ("mod_beta_inv", "mod_beta_sens", "mod_gamma_lpd", "mod_noise_std"):
            _check_range(key, getattr(self, key), 0.0)
        _check_choice("mod_tau", self.mod_tau, ("paper", "derived"))
        _check_choice("mod_corruption", self.mod_corruption, CORRUPTIONS)
        for key in ("mod_corruption_visual", "mod_corruption_audio"):
            if getattr(self, key) is not None:
                _check_choice(key, getattr(self, key), CORRUPTIONS)
        _check_range("mod_diffusion_steps", self.mod_diffusion_steps, 0, DIFFUSION_STEPS - 1)
        if getattr(self, "stage", None) == "mod_dpo":
            from .losses.mod_dpo import mod_dpo_tau

            tau = mod_dpo_tau(self.pref_beta, self.mod_beta_inv, self.mod_beta_sens, self.mod_tau)
            if tau <= 0:
                raise ValueError(
                    f"`mod_tau: {self.mod_tau}` gives τ = β + β_inv − β_sens = {tau:.4g} ≤ 0 (β={self.pref_beta}, "
                    f"β_inv={self.mod_beta_inv}, β_sens={self.mod_beta_sens}): the policy's log-ratio would enter the "
                    "margin with a non-positive weight. Lower `mod_beta_sens` or use `mod_tau: paper`."
                )

    def corruption_for(self, modality: str) -> str:
        """The corruption used for ``modality`` ('visual' or 'audio'), with the per-modality override."""
        override = self.mod_corruption_visual if modality == "visual" else self.mod_corruption_audio
        return override or self.mod_corruption


@dataclass
class OmniDPOArguments:
    r"""OmniDPO (stage ``omni_dpo``, arXiv 2509.00723; the baseline of MoD-DPO):
    L = L_DPO + λ_V·L_vis + λ_A·L_aud, with zero-mean Gaussian noise as the corruption."""

    omni_dpo_lambda_v: float = field(default=1.0, metadata={"help": "λ_V: weight of the visual-corruption term."})
    omni_dpo_lambda_a: float = field(default=1.0, metadata={"help": "λ_A: weight of the audio-corruption term."})
    omni_dpo_noise_std: float = field(
        default=1.0,
        metadata={"help": "σ of the zero-mean Gaussian noise added to the normalised features (not reported)."},
    )

    def check_omni_dpo(self) -> None:
        for key in ("omni_dpo_lambda_v", "omni_dpo_lambda_a", "omni_dpo_noise_std"):
            _check_range(key, getattr(self, key), 0.0)


@dataclass
class MDPOArguments:
    r"""mDPO (stage ``mdpo``, Wang et al. 2024): DPO + conditional preference on a cropped image + anchor."""

    mdpo_anchor_delta: float = field(default=0.0, metadata={"help": "δ of the reward anchor (0 in mDPO's code)."})
    mdpo_crop_min: float = field(default=0.01, metadata={"help": "Smallest crop, as a fraction of the image area."})
    mdpo_crop_max: float = field(default=0.2, metadata={"help": "Largest crop, as a fraction of the image area."})

    def check_mdpo(self) -> None:
        _check_range("mdpo_crop_min", self.mdpo_crop_min, 0.0, 1.0)
        _check_range("mdpo_crop_max", self.mdpo_crop_max, self.mdpo_crop_min, 1.0)


@dataclass
class MFPOArguments:
    r"""MFPO (stage ``mfpo``, seed 004 Eq. 5-7): L = w_t·L_text + w_i·L_image + w_m·L_margin, with m' the
    image noised inside the keyword region, and an easy-to-hard curriculum."""

    mfpo_margin_eta: float = field(default=0.0, metadata={"help": "η of the margin term (paper: 0 is best)."})
    mfpo_weight_text: float = field(default=1.0, metadata={"help": "w_t (paper: 1:1:1 is best)."})
    mfpo_weight_image: float = field(default=1.0, metadata={"help": "w_i."})
    mfpo_weight_margin: float = field(default=1.0, metadata={"help": "w_m."})
    mfpo_diffusion_steps: int = field(
        default=500, metadata={"help": "Diffusion step t of the region noise making m' on the fly (paper: 500)."}
    )
    mfpo_curriculum: bool = field(
        default=True,
        metadata={"help": "Easy-to-hard: rank rows by the policy's token entropy on y_w, train the thirds in order."},
    )

    def check_mfpo(self) -> None:
        for key in ("mfpo_weight_text", "mfpo_weight_image", "mfpo_weight_margin"):
            _check_range(key, getattr(self, key), 0.0)
        _check_range("mfpo_diffusion_steps", self.mfpo_diffusion_steps, 0, DIFFUSION_STEPS - 1)


@dataclass
class ACPOArguments:
    r"""ACPO (stage ``acpo``, seed 002): DPO over (input, response) pairs of two types, audio attribution
    (``pair_type: output``) and audio sensitivity (``pair_type: input``)."""

    acpo_lambda_output: float = field(default=1.0, metadata={"help": "Weight of output-contrastive pairs."})
    acpo_lambda_input: float = field(default=1.0, metadata={"help": "Weight of input-contrastive pairs."})

    def check_acpo(self) -> None:
        _check_range("acpo_lambda_output", self.acpo_lambda_output, 0.0)
        _check_range("acpo_lambda_input", self.acpo_lambda_input, 0.0)


@dataclass
class MBPOArguments:
    r"""MBPO (stage ``mbpo``, seed 003 Sec. 4): GRPO over a hybrid batch of offline pairs (fixed rewards) and
    online closed-ended prompts (G sampled responses, verified rewards), with a k3 KL to the reference.
    The paper's values of ε, β_KL and G were lost in extraction; the defaults are DeepSeekMath's GRPO values
    (see docs/methods.md)."""

    mbpo_num_generations: int = field(
        default=8, metadata={"help": "G: responses sampled per online prompt (a group; the advantage is normalised in it)."}
    )
    mbpo_epsilon: float = field(default=0.2, metadata={"help": "ε of the clipped ratio clip(ρ, 1−ε, 1+ε)."})
    mbpo_beta_kl: float = field(
        default=0.04,
        metadata={"help": "β_KL: weight of the k3 KL estimate to the frozen reference (0: no reference model is loaded)."},
    )
    mbpo_num_iterations: int = field(
        default=1,
        metadata={"help": "μ: policy updates per batch of generated responses (1: on-policy, ρ = 1 and the clip is inactive)."},
    )
    mbpo_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the online responses."})
    mbpo_top_p: float = field(default=1.0, metadata={"help": "Nucleus (top-p) sampling of the online responses."})
    mbpo_max_new_tokens: int = field(default=128, metadata={"help": "Longest online response, in tokens."})
    mbpo_reward_chosen: float = field(default=1.0, metadata={"help": "Fixed reward of an offline chosen response y_w."})
    mbpo_reward_rejected: float = field(default=0.0, metadata={"help": "Fixed reward of an offline rejected response y_l."})
    mbpo_loss_aggregation: Literal["row", "response"] = field(
        default="row",
        metadata={
            "help": "How response losses form the batch loss: 'row' = Eq. 7 (mean over each row's responses, then over "
            "rows), 'response' = mean over all responses."
        },
    )
    mbpo_log_iig: bool = field(
        default=True,
        metadata={"help": "Log the IIG of offline chosen/rejected responses (one no-grad pass on blank media per step)."},
    )
    mbpo_generation_backend: Literal["huggingface", "vllm"] = field(
        default="huggingface",
        metadata={"help": "Who samples online responses: 'huggingface' (model.generate) or 'vllm' (colocated; needs vLLM and a GPU)."},
    )
    mbpo_vllm_gpu_memory_utilization: float = field(
        default=0.3, metadata={"help": "Share of GPU memory the colocated vLLM engine may take (mbpo_generation_backend: vllm)."}
    )

    def check_mbpo(self) -> None:
        if self.mbpo_num_generations < 2:
            raise ValueError(f"`mbpo_num_generations` must be at least 2 (a group needs two responses); got {self.mbpo_num_generations}.")
        _check_range("mbpo_epsilon", self.mbpo_epsilon, 0.0, 1.0)
        _check_range("mbpo_beta_kl", self.mbpo_beta_kl, 0.0)
        if self.mbpo_num_iterations < 1:
            raise ValueError(f"`mbpo_num_iterations` must be at least 1; got {self.mbpo_num_iterations}.")
        if self.mbpo_temperature <= 0:
            raise ValueError(f"`mbpo_temperature` must be > 0 (MBPO samples its online responses); got {self.mbpo_temperature}.")
        if not 0 < self.mbpo_top_p <= 1:
            raise ValueError(f"`mbpo_top_p` must lie in (0, 1]; got {self.mbpo_top_p}.")
        if self.mbpo_max_new_tokens < 1:
            raise ValueError(f"`mbpo_max_new_tokens` must be at least 1; got {self.mbpo_max_new_tokens}.")
        _check_choice("mbpo_loss_aggregation", self.mbpo_loss_aggregation, ("row", "response"))
        _check_choice("mbpo_generation_backend", self.mbpo_generation_backend, ("huggingface", "vllm"))
        _check_range("mbpo_vllm_gpu_memory_utilization", self.mbpo_vllm_gpu_memory_utilization, 0.0, 1.0)
        if getattr(self, "stage", None) == "mbpo":
            if self.mbpo_reward_chosen <= self.mbpo_reward_rejected:
                raise ValueError(
                    f"`mbpo_reward_chosen` ({self.mbpo_reward_chosen}) must exceed `mbpo_reward_rejected` "
                    f"({self.mbpo_reward_rejected}): offline pairs would push the policy away from y_w or carry no signal."
                )
            if getattr(self, "pref_ftx", 0.0) > 0:
                raise ValueError("`pref_ftx` (an SFT term on y_w) is an upstream `dpo` option that stage 'mbpo' does not implement.")
            if self.mbpo_generation_backend == "vllm":
                from .train.mbpo_vllm import check_vllm

                check_vllm()  # vLLM installed and a GPU present, before any model is loaded


@dataclass
class ViewEngineArguments:
    r"""How the view engine runs a step, for every DPO-family stage of groundpo (``docs/benchmarks.md``)."""

    share_prompt_prefix: bool = field(
        default=True,
        metadata={
            "help": "Score y_w and y_l of a pair in one sequence [prompt, y_w, y_l] with block attention, so the "
            "prompt and its media run once per pass instead of once per response. Exact (the same log-probs); "
            "pairs whose sides differ in media stay two sequences. Off: two sequences per pair, as upstream DPO."
        },
    )
    share_media_encodings: bool = field(
        default=True,
        metadata={
            "help": "Within a step, each distinct media input goes through a frozen vision/audio tower once and "
            "serves every pass, policy and reference alike. Exact; a trained tower shares only its no-grad uses."
        },
    )


# Every argument dataclass of groundpo, in the order their keys are documented.
STAGE_ARGUMENTS: tuple[type, ...] = (
    ModDPOArguments,
    OmniDPOArguments,
    MDPOArguments,
    MFPOArguments,
    ACPOArguments,
    MBPOArguments,
    ViewEngineArguments,
)


@dataclass
class GroundpoFinetuningArguments(
    FinetuningArguments, ViewEngineArguments, ModDPOArguments, OmniDPOArguments, MDPOArguments, MFPOArguments,
    ACPOArguments, MBPOArguments,
):
    r"""Upstream's ``FinetuningArguments`` plus the keys of every groundpo stage."""

    stage: str = field(
        default="sft",
        metadata={"help": "Which stage will be performed in training: an upstream stage or a groundpo stage."},
    )

    def __post_init__(self):
        from .registry import UnknownStageError, get_stage, is_registered, unknown_stage_message, upstream_stages

        if self.stage not in upstream_stages() and not is_registered(self.stage):
            raise UnknownStageError(unknown_stage_message(self.stage))

        super().__post_init__()
        for cls in STAGE_ARGUMENTS:
            for name in dir(cls):
                if name.startswith("check_"):
                    getattr(cls, name)(self)

        if is_registered(self.stage):
            spec = get_stage(self.stage)
            if self.pref_loss != "sigmoid":
                raise ValueError(
                    f"`pref_loss: {self.pref_loss}` is an upstream `dpo` option; stage {self.stage!r} "
                    "optimises its own objective. Remove `pref_loss`."
                )
            for key, (default, what) in UNSUPPORTED_UPSTREAM.items():
                if getattr(self, key, default) != default:
                    raise ValueError(
                        f"`{key}` ({what}) is an upstream `dpo` option that stage {self.stage!r} does not implement; "
                        f"remove it (it would be silently ignored)."
                    )
            if self.use_mca:
                raise ValueError(f"Stage {self.stage!r} does not support MCA (`USE_MCA`).")
            self.use_ref_model = spec.uses_reference(self) if callable(spec.uses_reference) else spec.uses_reference
            if self.pissa_init and self.use_ref_model:
                raise ValueError("Cannot use PiSSA for current training stage.")
