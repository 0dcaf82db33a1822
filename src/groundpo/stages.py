"""The built-in stages of groundpo, registered on first use of ``groundpo.registry``.

Each stage is three things next to its loss file: a plan (which passes on which views, which
corruption, which row checks), an input map (log-prob table -> the loss function's arguments) and
a :class:`~groundpo.registry.StageSpec`. MoD-DPO comes first: it is the flagship and the first
entry LlamaBoard lists.
"""

from __future__ import annotations

import torch

from . import hparams
from .corruption import CorruptionSpec
from .losses.mod_dpo import mod_dpo_tau
from .data.rows import check_audiovisual_media, check_contrast_image, check_modality, check_pair_type, check_visual_media
from .registry import StageSpec, register_stage
from .views import AUDIO, CLEAN, POLICY, REFERENCE, VISUAL, Pass, StagePlan

def _label(name: str) -> dict[str, str]:
    """A method's name, the same in every LlamaBoard language."""
    return dict.fromkeys(("en", "ru", "zh", "ko", "ja"), name)


ENGINE = (hparams.ViewEngineArguments,)  # the view engine's own keys, taken by every stage it runs
POLICY_CLEAN = Pass(CLEAN, POLICY, grad=True)
REFERENCE_CLEAN = Pass(CLEAN, REFERENCE)


def _clean_pairs(table) -> dict:
    """The four tensors of every DPO-family loss: policy and reference, chosen and rejected, clean view."""
    return dict(
        policy_chosen_logps=table[(POLICY, CLEAN)][0],
        policy_rejected_logps=table[(POLICY, CLEAN)][1],
        reference_chosen_logps=table[(REFERENCE, CLEAN)][0],
        reference_rejected_logps=table[(REFERENCE, CLEAN)][1],
    )


# ---------------------------------------------------------------- DPO (groundpo engine)
def dpo_plan(args) -> StagePlan:
    return StagePlan(passes=(POLICY_CLEAN, REFERENCE_CLEAN))


def dpo_inputs(table, info, args) -> dict:
    return dict(**_clean_pairs(table), beta=args.pref_beta)


# ---------------------------------------------------------------- MoD-DPO
def mod_dpo_plan(args) -> StagePlan:
    passes = [
        POLICY_CLEAN,
        REFERENCE_CLEAN,
        Pass("sens", POLICY),  # relevant modality corrupted, stop-gradient (Eq. 7)
        Pass("inv", POLICY),  # irrelevant modality corrupted, stop-gradient (Eq. 6)
    ]
    if args.mod_gamma_lpd > 0:
        passes.append(Pass("text", REFERENCE))  # πref(y | x), MoD-DPO++ (Eq. 11)
    return StagePlan(
        passes=tuple(passes),
        corruptions={
            side: CorruptionSpec(args.corruption_for(side), args.mod_diffusion_steps, args.mod_noise_std)
            for side in (VISUAL, AUDIO)
        },
        row_checks=(check_modality, _audiovisual_tau_check(args)),
        homogeneous_batches=args.mod_alternate_modalities,
        precompute_reference=args.mod_precompute_reference,
        plot_keys=("loss", "mod/margin", "mod/reliance_relevant", "mod/reliance_irrelevant"),
    )


def _audiovisual_tau_check(args):
    """Audiovisual prompts drop the invariance term and β_inv leaves τ (Supp. A.5): τ must stay positive."""
    tau = mod_dpo_tau(args.pref_beta, 0.0, args.mod_beta_sens, args.mod_tau)

    def check_audiovisual_tau(row) -> None:
        if row.get("modality") == "audiovisual" and tau <= 0:
            raise row.error(
                "modality",
                f"'audiovisual' rows have no invariance term, so τ = β − β_sens = {tau:.4g} ≤ 0 with `mod_tau: "
                f"{args.mod_tau}`; lower `mod_beta_sens` below β or use `mod_tau: paper`",
            )

    return check_audiovisual_tau


def mod_dpo_inputs(table, info, args) -> dict:
    inv = table.get((POLICY, "inv"))
    text = table.get((REFERENCE, "text"))
    has_inv = torch.tensor([m != "audiovisual" for m in info["modality"]], device=table[(POLICY, CLEAN)][0].device)
    return dict(
        **_clean_pairs(table),
        sens_chosen_logps=table[(POLICY, "sens")][0],
        sens_rejected_logps=table[(POLICY, "sens")][1],
        inv_chosen_logps=inv[0] if inv is not None else None,
        inv_rejected_logps=inv[1] if inv is not None else None,
        text_chosen_logps=text[0] if text is not None else None,
        text_rejected_logps=text[1] if text is not None else None,
        beta=args.pref_beta,
        beta_inv=args.mod_beta_inv,
        beta_sens=args.mod_beta_sens,
        gamma_lpd=args.mod_gamma_lpd,
        tau=args.mod_tau,
        inv_mask=has_inv if inv is not None else None,
    )


register_stage(
    StageSpec(
        name="mod_dpo",
        label=_label("MoD-DPO"),
        paper="MoD-DPO (arXiv 2603.03192), Eq. 5-12 and Supp. A",
        objective="groundpo.losses.mod_dpo:mod_dpo_loss",
        arguments=(hparams.ModDPOArguments, *ENGINE),
        plan=mod_dpo_plan,
        inputs=mod_dpo_inputs,
    )
)

register_stage(
    StageSpec(
        name="base_dpo",
        label={
            "en": "DPO (groundpo engine)",
            "ru": "DPO (движок groundpo)",
            "zh": "DPO（groundpo 引擎）",
            "ko": "DPO (groundpo 엔진)",
            "ja": "DPO（groundpo エンジン）",
        },
        paper="Rafailov et al. 2023 (sigmoid DPO), the baseline of every seed paper",
        objective="groundpo.losses.dpo:dpo_loss",
        arguments=ENGINE,
        plan=dpo_plan,
        inputs=dpo_inputs,
    )
)


# ---------------------------------------------------------------- OmniDPO (baseline of MoD-DPO)
def omni_dpo_plan(args) -> StagePlan:
    noise = CorruptionSpec("gaussian", noise_std=args.omni_dpo_noise_std)
    return StagePlan(
        passes=(
            POLICY_CLEAN,
            REFERENCE_CLEAN,
            # OmniDPO trains the policy under v' and a' too; its conditional terms score y_w only
            Pass("vcorrupt", POLICY, grad=True, chosen_only=True),
            Pass("vcorrupt", REFERENCE, chosen_only=True),
            Pass("acorrupt", POLICY, grad=True, chosen_only=True),
            Pass("acorrupt", REFERENCE, chosen_only=True),
        ),
        corruptions={VISUAL: noise, AUDIO: noise},
        row_checks=(check_audiovisual_media,),
    )


def omni_dpo_inputs(table, info, args) -> dict:
    return dict(
        **_clean_pairs(table),
        policy_chosen_vcorrupt_logps=table[(POLICY, "vcorrupt")][0],
        reference_chosen_vcorrupt_logps=table[(REFERENCE, "vcorrupt")][0],
        policy_chosen_acorrupt_logps=table[(POLICY, "acorrupt")][0],
        reference_chosen_acorrupt_logps=table[(REFERENCE, "acorrupt")][0],
        beta=args.pref_beta,
        lambda_v=args.omni_dpo_lambda_v,
        lambda_a=args.omni_dpo_lambda_a,
    )


# ---------------------------------------------------------------- mDPO
def mdpo_plan(args) -> StagePlan:
    return StagePlan(
        passes=(
            POLICY_CLEAN,
            REFERENCE_CLEAN,
            Pass("vcorrupt", POLICY, grad=True, chosen_only=True),  # the conditional term scores y_w only
            Pass("vcorrupt", REFERENCE, chosen_only=True),
        ),
        corruptions={VISUAL: CorruptionSpec("crop", crop_scale=(args.mdpo_crop_min, args.mdpo_crop_max))},
        row_checks=(check_visual_media,),
    )


def mdpo_inputs(table, info, args) -> dict:
    return dict(
        **_clean_pairs(table),
        policy_chosen_corrupt_logps=table[(POLICY, "vcorrupt")][0],
        reference_chosen_corrupt_logps=table[(REFERENCE, "vcorrupt")][0],
        beta=args.pref_beta,
        anchor_delta=args.mdpo_anchor_delta,
    )


# ---------------------------------------------------------------- JoMPO
JOMPO_VIEWS = (CLEAN, "text", "contrast")  # m_w, m_none, m_l (the order of axis 1 of jompo_loss)


def jompo_plan(args) -> StagePlan:
    passes = [Pass(view, POLICY, grad=True) for view in JOMPO_VIEWS] + [Pass(view, REFERENCE) for view in JOMPO_VIEWS]
    return StagePlan(passes=tuple(passes), row_checks=(check_contrast_image,))


def jompo_inputs(table, info, args) -> dict:
    def stack(model: str):  # [B, 3, 2]: image view × (y_w, y_l)
        return torch.stack([torch.stack(table[(model, view)], dim=-1) for view in JOMPO_VIEWS], dim=1)

    return dict(policy_logps=stack(POLICY), reference_logps=stack(REFERENCE), beta=args.pref_beta)


# ---------------------------------------------------------------- MFPO
def mfpo_plan(args) -> StagePlan:
    return StagePlan(
        passes=(
            POLICY_CLEAN,
            REFERENCE_CLEAN,
            Pass("perturbed", POLICY, grad=True, chosen_only=True),  # L_image scores y_w only
            Pass("perturbed", REFERENCE, chosen_only=True),
        ),
        corruptions={VISUAL: CorruptionSpec("region_diffusion", diffusion_steps=args.mfpo_diffusion_steps)},
        row_checks=(check_visual_media,),
        curriculum=args.mfpo_curriculum,
    )


def mfpo_inputs(table, info, args) -> dict:
    return dict(
        **_clean_pairs(table),
        policy_chosen_perturbed_logps=table[(POLICY, "perturbed")][0],
        reference_chosen_perturbed_logps=table[(REFERENCE, "perturbed")][0],
        beta=args.pref_beta,
        margin_eta=args.mfpo_margin_eta,
        weights=(args.mfpo_weight_text, args.mfpo_weight_image, args.mfpo_weight_margin),
    )


# ---------------------------------------------------------------- ACPO
def _is_input_contrastive(row: dict) -> bool:
    return row.get("_pair_type", row.get("pair_type")) == "input"


def acpo_plan(args) -> StagePlan:
    return StagePlan(
        passes=(POLICY_CLEAN, REFERENCE_CLEAN), row_checks=(check_pair_type,), input_contrastive=_is_input_contrastive
    )


def acpo_inputs(table, info, args) -> dict:
    device = table[(POLICY, CLEAN)][0].device
    input_contrastive = torch.tensor([_is_input_contrastive(row) for row in info["rows"]], device=device)
    return dict(
        **_clean_pairs(table),
        input_contrastive=input_contrastive,
        beta=args.pref_beta,
        lambda_output=args.acpo_lambda_output,
        lambda_input=args.acpo_lambda_input,
    )


for _spec in (
    StageSpec(
        name="omni_dpo",
        label=_label("OmniDPO"),
        paper="OmniDPO (arXiv 2509.00723), as the baseline of MoD-DPO",
        objective="groundpo.losses.omni_dpo:omni_dpo_loss",
        arguments=(hparams.OmniDPOArguments, *ENGINE),
        plan=omni_dpo_plan,
        inputs=omni_dpo_inputs,
    ),
    StageSpec(
        name="mdpo",
        label=_label("mDPO"),
        paper="mDPO (Wang et al. 2024, luka-group/mDPO)",
        objective="groundpo.losses.mdpo:mdpo_loss",
        arguments=(hparams.MDPOArguments, *ENGINE),
        plan=mdpo_plan,
        inputs=mdpo_inputs,
    ),
    StageSpec(
        name="jompo",
        label=_label("JoMPO"),
        paper="JoMPO (seed 001), Eq. 5-8",
        objective="groundpo.losses.jompo:jompo_loss",
        arguments=ENGINE,
        plan=jompo_plan,
        inputs=jompo_inputs,
        default_beta=0.05,
    ),
    StageSpec(
        name="mfpo",
        label=_label("MFPO"),
        paper="MFPO (seed 004), Eq. 5-7",
        objective="groundpo.losses.mfpo:mfpo_loss",
        arguments=(hparams.MFPOArguments, *ENGINE),
        plan=mfpo_plan,
        inputs=mfpo_inputs,
    ),
    StageSpec(
        name="acpo",
        label=_label("ACPO"),
        paper="ACPO (seed 002, abstract level)",
        objective="groundpo.losses.acpo:acpo_loss",
        arguments=(hparams.ACPOArguments, *ENGINE),
        plan=acpo_plan,
        inputs=acpo_inputs,
    ),
):
    register_stage(_spec)


# ---------------------------------------------------------------- MBPO (its own trainer: groundpo.train.mbpo)
def mbpo_plan(args) -> StagePlan:
    """The policy pass with gradient, and the reference pass of the KL term when β_KL > 0."""
    passes = (POLICY_CLEAN, REFERENCE_CLEAN) if args.mbpo_beta_kl > 0 else (POLICY_CLEAN,)
    return StagePlan(passes=passes, plot_keys=("loss", "mbpo/reward_online", "mbpo/kl"))


register_stage(
    StageSpec(
        name="mbpo",
        label=_label("MBPO"),
        paper="MBPO (seed 003), Sec. 4 and Eq. 1-7 (reconstructed: docs/methods.md)",
        workflow="groundpo.train.mbpo:run_mbpo",
        objective="groundpo.losses.grpo:grpo_loss",
        arguments=(hparams.MBPOArguments,),
        plan=mbpo_plan,
        uses_reference=lambda args: args.mbpo_beta_kl > 0,
        prompt_data=True,
        reads_beta=False,
    )
)
