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

from ..corruption import PatchLayout, corrupt_batch
from ..data.collator import INFO_KEY
from ..data.sampler import CurriculumSampler, ModalityBatchSampler
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
        self.difficulty: list[float] | None = None  # per-row scores for the curriculum sampler
        self.patch_layout = _patch_layout(getattr(self.data_collator, "processor", None))
        mark_log_callbacks(self.callback_handler.callbacks)  # our metrics into trainer_log.jsonl

    # ------------------------------------------------------------------ sampling
    def _get_train_sampler(self, *args, **kwargs):
        if self.plan.curriculum:
            if self.difficulty is None:
                raise RuntimeError("The curriculum needs difficulty scores: call score_difficulty() before train().")
            return CurriculumSampler(
                self.difficulty,
                seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
                shuffle=not self.finetuning_args.disable_shuffling,
            )
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
        tensor_view = TENSOR_VIEWS[view]
        sides = tensor_view.sides_per_row(info["rows"])
        base = batch if tensor_view.base == CLEAN else info["views"][tensor_view.base]
        if not any(sides):
            if self.plan.homogeneous_batches:
                return None  # every rank skips it: they all hold the same modality at this step
            return base
        counts = info["counts"] if tensor_view.base == CLEAN else info["view_counts"][tensor_view.base]
        target = base["data"] if "data" in base else base  # MiniCPM-o nests its inputs under "data"
        regions = [row.get("region") for row in info["rows"]]
        corrupted = corrupt_batch(
            target, counts, sides, self.plan.corruptions, seed, regions=regions, layout=self.patch_layout
        )
        return {**base, "data": corrupted} if "data" in base else corrupted

    def run_pass(self, model, inputs: dict, p: Pass) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Summed log-probs (chosen [B], rejected [B]) of one pass, and the policy's logit means."""
        if p.model == REFERENCE:
            chosen, rejected = self.compute_reference_log_probs(model, inputs)
            return chosen, rejected, {}
        if p.grad:
            out = self.concatenated_forward(model, inputs)
            extras = {}
            if p.view == CLEAN:
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
        views: dict[str, dict | None] = {}  # one corrupted batch per view and step: policy and reference share it
        for p in self.plan.ordered_passes:
            if p.model == REFERENCE and p.view in self.reference_table:
                logps = self.reference_table[p.view][info["row_id"].cpu()].to(self.accelerator.device)
                table[p.key] = (logps[:, 0], logps[:, 1])
                continue
            if p.view not in views:
                views[p.view] = self.view_batch(batch, info, p.view, seed)
            if views[p.view] is None:
                continue
            chosen, rejected, pass_extras = self.run_pass(model, views[p.view], p)
            table[p.key] = (chosen, rejected)
            extras.update(pass_extras)
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

    # ------------------------------------------------------------------ curriculum (MFPO)
    @torch.no_grad()
    def score_difficulty(self, cache_file: str | None = None) -> list[float]:
        """Per training row: the mean entropy of the policy's next-token distribution over y_w.

        MFPO's easy-to-hard schedule trains on the thirds of these scores in increasing order. With
        ``cache_file``, scores computed earlier for the same training set are reused (resume).
        """
        import json
        import os

        fingerprint = getattr(self.train_dataset, "_fingerprint", None)
        if cache_file and os.path.exists(cache_file):
            cached = json.loads(open(cache_file, encoding="utf-8").read())
            if cached.get("fingerprint") == fingerprint and len(cached["scores"]) == len(self.train_dataset):
                self.difficulty = cached["scores"]
                return self.difficulty

        scores = torch.zeros(len(self.train_dataset), dtype=torch.float64)
        model = self.model_wrapped if self.model_wrapped is not None else self.model
        loader = self.get_eval_dataloader(self.train_dataset)
        for batch in tqdm(loader, desc="Scoring rows by token entropy", disable=not self.is_world_process_zero()):
            info = batch.pop(INFO_KEY)
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            logits = model(**inputs, return_dict=True, use_cache=False).logits.float()
            size = info["row_id"].shape[0]
            labels = batch["labels"][:size, 1:]  # the chosen rows, shifted for next-token prediction
            logprobs = torch.log_softmax(logits[:size, :-1], dim=-1)
            entropy = -(logprobs.exp() * logprobs).sum(-1)
            mask = (labels != -100).float()
            mean_entropy = (entropy * mask).sum(-1) / mask.sum(-1).clamp(min=1)
            row_ids, mean_entropy = self.accelerator.gather_for_metrics((info["row_id"].to(logits.device), mean_entropy))
            scores[row_ids.cpu()] = mean_entropy.double().cpu()
        self.difficulty = scores.tolist()
        if cache_file and self.is_world_process_zero():
            os.makedirs(os.path.dirname(cache_file) or ".", exist_ok=True)
            with open(cache_file, "w", encoding="utf-8") as f:
                json.dump({"fingerprint": fingerprint, "scores": self.difficulty}, f)
        return self.difficulty

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


def _patch_layout(processor) -> PatchLayout:
    """Qwen-style patch geometry from the image processor, for spatial corruptions."""
    image_processor = getattr(processor, "image_processor", None)
    return PatchLayout(
        merge_size=getattr(image_processor, "merge_size", 2) or 2,
        temporal_patch_size=getattr(image_processor, "temporal_patch_size", 2) or 2,
    )
