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
from .data.rows import check_modality
from .registry import StageSpec, register_stage
from .views import AUDIO, CLEAN, POLICY, REFERENCE, VISUAL, Pass, StagePlan

POLICY_CLEAN = Pass(CLEAN, POLICY, grad=True)
REFERENCE_CLEAN = Pass(CLEAN, REFERENCE)


# ---------------------------------------------------------------- DPO (groundpo engine)
def dpo_plan(args) -> StagePlan:
    return StagePlan(passes=(POLICY_CLEAN, REFERENCE_CLEAN))


def dpo_inputs(table, info, args) -> dict:
    return dict(
        policy_chosen_logps=table[(POLICY, CLEAN)][0],
        policy_rejected_logps=table[(POLICY, CLEAN)][1],
        reference_chosen_logps=table[(REFERENCE, CLEAN)][0],
        reference_rejected_logps=table[(REFERENCE, CLEAN)][1],
        beta=args.pref_beta,
    )


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
        row_checks=(check_modality,),
        homogeneous_batches=args.mod_alternate_modalities,
        precompute_reference=args.mod_precompute_reference,
        plot_keys=("loss", "mod/margin", "mod/reliance_relevant", "mod/reliance_irrelevant"),
    )


def mod_dpo_inputs(table, info, args) -> dict:
    inv = table.get((POLICY, "inv"))
    text = table.get((REFERENCE, "text"))
    has_inv = torch.tensor([m != "audiovisual" for m in info["modality"]], device=table[(POLICY, CLEAN)][0].device)
    return dict(
        policy_chosen_logps=table[(POLICY, CLEAN)][0],
        policy_rejected_logps=table[(POLICY, CLEAN)][1],
        reference_chosen_logps=table[(REFERENCE, CLEAN)][0],
        reference_rejected_logps=table[(REFERENCE, CLEAN)][1],
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
        label={"en": "MoD-DPO", "ru": "MoD-DPO", "zh": "MoD-DPO", "ko": "MoD-DPO", "ja": "MoD-DPO"},
        paper="MoD-DPO (arXiv 2603.03192), Eq. 5-12 and Supp. A",
        workflow="groundpo.train.workflow:run_preference",
        objective="groundpo.losses.mod_dpo:mod_dpo_loss",
        arguments=(hparams.ModDPOArguments,),
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
        workflow="groundpo.train.workflow:run_preference",
        objective="groundpo.losses.dpo:dpo_loss",
        plan=dpo_plan,
        inputs=dpo_inputs,
    )
)
