"""One trainer for every DPO-family stage: it runs the passes of a stage's plan and its objective.

``ViewPreferenceTrainer`` subclasses upstream's ``CustomDPOTrainer`` (optimizer, scheduler,
reference model handling, LoRA, DeepSpeed/FSDP preparation and metric logging stay upstream's)
and replaces only what a step computes:

    batch ──► views (clean, corrupted tensors, token views) ──► passes ──► log-prob table
          ──► StageSpec.inputs ──► objective ──► loss + metrics

- No-grad passes run first under ``torch.no_grad()`` and keep only their [B] log-probs, so their
  activations are freed before the policy's graph is built; only the clean policy pass has grad.
- Reference passes use upstream's ``compute_reference_log_probs`` (a separate reference model, or
  the policy with its LoRA adapters disabled), or the precomputed table
  (``precompute_reference``).
- With modality-homogeneous batches (``groundpo.data.sampler``) every rank has the same modality
  at a step, so a pass skipped because no row needs it (MoD-DPO's invariance pass on audiovisual
  batches) is skipped on every rank; otherwise every planned pass runs. Either way all ranks run
  the same passes, as ZeRO-3 requires.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from llamafactory.train.dpo.trainer import CustomDPOTrainer
from tqdm.auto import tqdm

from ..corruption import corrupt_batch
from ..data.collator import INFO_KEY
from ..data.sampler import ModalityBatchSampler
from ..integration.callbacks import mark_log_callbacks
from ..views import CLEAN, REFERENCE, TENSOR_VIEWS, TOKEN_VIEWS, LogpTable, Pass, StagePlan


class ViewPreferenceTrainer(CustomDPOTrainer):
    def __init__(
        self,
        *args,
        plan: StagePlan,
        objective: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]],
        objective_inputs: Callable[[LogpTable, dict, Any], dict],
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.objective = objective
        self.objective_inputs = objective_inputs
        self.reference_table: dict[str, torch.Tensor] = {}  # view -> [N, 2] precomputed log-probs
        self._micro_step = 0
        mark_log_callbacks(self.callback_handler.callbacks)  # our metrics into trainer_log.jsonl

    # ------------------------------------------------------------------ sampling
    def _get_train_sampler(self, *args, **kwargs):
        if self.plan.homogeneous_batches:
            return ModalityBatchSampler(
                self.train_dataset["modality"],
                per_device_batch_size=self.args.per_device_train_batch_size,
                world_size=self.args.world_size,
                seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
                shuffle=not self.finetuning_args.disable_shuffling,
            )
        return super()._get_train_sampler(*args, **kwargs)

    # ------------------------------------------------------------------ passes
    def _corruption_seed(self) -> int:
        self._micro_step += 1
        return (self.args.seed * 1_000_003 + self._micro_step) * 131 + self.args.process_index

    def view_batch(self, batch: dict, info: dict, view: str, seed: int) -> dict | None:
        """The model inputs of ``view``; None when no row of the batch needs this view."""
        if view == CLEAN:
            return batch
        if view in TOKEN_VIEWS:
            return info["views"][view]
        sides = TENSOR_VIEWS[view].sides_per_row(info["modality"])
        if not any(sides) and self.plan.homogeneous_batches:
            return None
        target = batch["data"] if "data" in batch else batch  # MiniCPM-o nests its inputs under "data"
        corrupted = corrupt_batch(target, info["counts"], sides, self.plan.corruptions, seed)
        return {**batch, "data": corrupted} if "data" in batch else corrupted

    def run_pass(self, model, inputs: dict, p: Pass) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Summed log-probs (chosen [B], rejected [B]) of one pass, and the policy's logit means."""
        if p.model == REFERENCE:
            chosen, rejected = self.compute_reference_log_probs(model, inputs)
            return chosen, rejected, {}
        if p.grad:
            out = self.concatenated_forward(model, inputs)
            extras = {
                "logits/chosen": out["chosen_logits"].detach().mean(),
                "logits/rejected": out["rejected_logits"].detach().mean(),
                "chosen_logps_avg": out["chosen_logps_avg"],
            }
            return out["chosen_logps"], out["rejected_logps"], extras
        with torch.no_grad():
            out = self.concatenated_forward(model, inputs)
            return out["chosen_logps"], out["rejected_logps"], {}

    def compute_table(self, model, batch: dict, info: dict) -> tuple[LogpTable, dict]:
        table: LogpTable = {}
        extras: dict = {}
        seed = self._corruption_seed()
        for p in self.plan.ordered_passes:
            if p.model == REFERENCE and p.view in self.reference_table:
                logps = self.reference_table[p.view][info["row_id"].cpu()].to(self.accelerator.device)
                table[p.key] = (logps[:, 0], logps[:, 1])
                continue
            inputs = self.view_batch(batch, info, p.view, seed)
            if inputs is None:
                continue
            chosen, rejected, pass_extras = self.run_pass(model, inputs, p)
            table[p.key] = (chosen, rejected)
            extras.update(pass_extras)
            del inputs
        return table, extras

    # ------------------------------------------------------------------ loss
    def get_batch_loss_metrics(
        self, model, batch: dict[str, Any], train_eval: Literal["train", "eval"] = "train"
    ) -> tuple[torch.Tensor, dict[str, float]]:
        info = batch.pop(INFO_KEY)
        table, extras = self.compute_table(model, batch, info)
        losses, metrics = self.objective(**self.objective_inputs(table, info, self.finetuning_args))
        if self.ftx_gamma > 1e-6:
            losses = losses + self.ftx_gamma * -extras["chosen_logps_avg"]

        policy_chosen, policy_rejected = table[("policy", CLEAN)]
        prefix = "eval_" if train_eval == "eval" else ""
        logged = {
            "logps/chosen": policy_chosen.detach().mean(),
            "logps/rejected": policy_rejected.detach().mean(),
            **{k: v for k, v in extras.items() if k.startswith("logits/")},
            **{k: v.float().mean() for k, v in metrics.items() if v.numel() > 0},
        }
        return losses.mean(), {f"{prefix}{k}": float(v) for k, v in logged.items()}

    # ------------------------------------------------------------------ precomputed reference
    @torch.no_grad()
    def precompute_reference(self) -> None:
        """Reference log-probs of every training row on the clean and token views, computed once.

        The reference is frozen, so reusing them gives the same loss as computing them each step.
        Every rank computes a shard and the shards are gathered, so every rank holds the table.
        """
        views = [p.view for p in self.plan.passes if p.model == REFERENCE and p.view not in TENSOR_VIEWS]
        size = len(self.train_dataset)
        tables = {view: torch.zeros(size, 2, dtype=torch.float32) for view in views}
        loader = self.get_eval_dataloader(self.train_dataset)
        model = self.model_wrapped if self.model_wrapped is not None else self.model
        for batch in tqdm(loader, desc="Precomputing reference log-probs", disable=not self.is_world_process_zero()):
            info = batch.pop(INFO_KEY)
            for view in views:
                inputs = batch if view == CLEAN else info["views"][view]
                chosen, rejected = self.compute_reference_log_probs(model, inputs)
                row_ids, chosen, rejected = self.accelerator.gather_for_metrics(
                    (info["row_id"].to(chosen.device), chosen, rejected)
                )
                tables[view][row_ids.cpu()] = torch.stack([chosen, rejected], dim=-1).float().cpu()
        self.reference_table = tables
