"""One trainer for every DPO-family stage: it runs the passes of a stage's plan and its objective.

``ViewPreferenceTrainer`` subclasses upstream's ``CustomDPOTrainer`` (optimizer, scheduler,
reference model handling, LoRA, DeepSpeed/FSDP preparation stay upstream's) and replaces what a
step computes and how its metrics are logged:

    batch ──► views (clean, corrupted tensors, token views) ──► passes ──► log-prob table
          ──► StageSpec.inputs ──► objective ──► loss + metrics

What makes it right at scale (several processes, DeepSpeed ZeRO-3, FSDP, gradient checkpointing):

- **One forward with gradient per step.** The inputs of every pass with gradient (OmniDPO's clean,
  v' and a' views, JoMPO's three image views, ...) are concatenated into one batch
  (``groundpo.data.batch``) and run in one forward, so DDP with any gradient checkpointing, ZeRO-3
  and FSDP see one forward and one backward, as in upstream DPO.
- **No-grad passes** run first, each under ``torch.no_grad()``, and keep only their [B] log-probs,
  so their activations are freed before the policy's graph is built.
- **Shared prompt prefix** (``share_prompt_prefix``): each pair is one packed row [prompt, y_w, y_l]
  with block attention (``groundpo.data.packing``), so the prompt and its media run once per pass
  instead of once per response. **Shared media encodings** (``share_media_encodings``): within a
  step each distinct media input goes through a frozen tower once, for every pass and for policy and
  reference alike (``groundpo.train.encodings``). Both are exact: the same log-probs and gradients.
- **Every rank runs the same passes.** A tensor view that no row of a batch needs (MoD-DPO's
  invariance view on audiovisual prompts) is skipped only when no row on *any* rank needs it (one
  tiny all-reduce), so ZeRO-3 and FSDP never wait on a rank that skipped a forward.
- **Noise is a function of (seed, global step, rank, row id)**, so a run resumed from a checkpoint
  corrupts exactly as the uninterrupted run did.
- **Metrics** are (sum, count) per fixed key, summed across ranks (``groundpo.train.metrics``).
- **Reference precompute and MFPO's curriculum scoring** run when training begins, on the model
  as DeepSpeed/FSDP/DDP wrapped it, over every row (no ``drop_last``), with the training batch
  size and one row of float32 logits at a time; the precomputed table covers the eval sets too
  (row ids are unique across the run's datasets).
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from typing import Any, Callable, Iterator, Literal

import torch
from accelerate.utils import send_to_device
from llamafactory.extras import logging
from llamafactory.train.dpo.trainer import CustomDPOTrainer
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..corruption import PatchLayout, corrupt_batch, mix_seed
from ..data.batch import concat_batches, rows_of, take_counts, take_rows
from ..data.collator import INFO_KEY
from ..data.sampler import CurriculumSampler, ModalityBatchSampler
from ..integration.callbacks import mark_log_callbacks
from ..integration.checkpoints import register_cpu_index_locations
from ..views import CLEAN, POLICY, REFERENCE, TENSOR_VIEWS, TOKEN_VIEWS, LogpTable, Pass, StagePlan
from ..data.packing import SEGMENTS, NotPackable, ResponseLayout, as_block_rows, layout_from_labels, pack_pairs
from .encodings import SharedEncodings
from .logps import (
    BLOCK_MASK_ATTENTION,
    ScoredResponses,
    attention_implementation,
    forward_logits,
    layout_logps,
    response_entropy,
    score_responses,
)
from .metrics import MetricStore

CURRICULUM_FILE = "curriculum_scores.json"
# under LLaMA-Factory's logger tree, so our lines reach its console format, its rank-0 filter and LlamaBoard
logger = logging.get_logger(f"llamafactory.{__name__}")


class _TrainingBegins(TrainerCallback):
    """Runs the trainer's one-off work once the model is wrapped, and keeps curriculum scores in checkpoints."""

    def __init__(self, trainer: "ViewPreferenceTrainer") -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.prepare_training()

    def on_save(self, args, state, control, **kwargs):
        self.trainer.save_curriculum(os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"))


class ViewPreferenceTrainer(CustomDPOTrainer):
    def __init__(
        self,
        *args,
        plan: StagePlan,
        objective: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]],
        objective_inputs: Callable[[LogpTable, dict, Any], dict],
        metric_keys: tuple[str, ...] = (),
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.objective = objective
        self.objective_inputs = objective_inputs
        self.metrics = MetricStore(metric_keys)
        # view -> [rows of the run, 2] reference log-probs (chosen, rejected); filled by precompute_reference()
        self.reference_table: dict[str, torch.Tensor] = {}
        self.difficulty: list[float] | None = None  # per training row, for the curriculum sampler
        self.resume_checkpoint: str | None = None  # set by the workflow: where curriculum scores are reloaded from
        self.curriculum_cache: str | None = None
        self.patch_layout = _patch_layout(getattr(self.data_collator, "processor", None))
        # shared prompt prefix (groundpo.data.packing): on unless the key is off or attention cannot take it
        self.share_prefix = self.finetuning_args.share_prompt_prefix
        implementation = attention_implementation(self.model)
        if self.share_prefix and implementation not in BLOCK_MASK_ATTENTION:
            self._stop_sharing_prefix(f"`{implementation}` attention takes no block attention mask (sdpa and eager do)")
        self._encodings: SharedEncodings | None = None  # shared media encodings, built at the first step
        if any(p.model == REFERENCE for p in plan.passes) and not self.finetuning_args.use_ref_model:
            raise ValueError(f"Stage {self.finetuning_args.stage!r} needs a reference model.")
        mark_log_callbacks(self.callback_handler.callbacks)  # our metrics into trainer_log.jsonl
        register_cpu_index_locations()  # multi-process CPU runs resume their optimizer state
        self.add_callback(_TrainingBegins(self))

    # ------------------------------------------------------------------ sampling
    def _data_seed(self) -> int:
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    def _get_train_sampler(self, *args, **kwargs):
        if self.plan.curriculum:
            return CurriculumSampler(
                lambda: self.difficulty, len(self.train_dataset), seed=self._data_seed(),
                shuffle=not self.finetuning_args.disable_shuffling,
            )
        if self.plan.homogeneous_batches:
            return ModalityBatchSampler(
                self.train_dataset["modality"],
                per_device_batch_size=self.args.per_device_train_batch_size,
                world_size=self.args.world_size,
                seed=self._data_seed(),
                shuffle=not self.finetuning_args.disable_shuffling,
            )
        return super()._get_train_sampler(*args, **kwargs)

    # ------------------------------------------------------------------ ranks agree
    def _any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on at least one (always the same answer everywhere)."""
        if self.args.world_size <= 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(value, "sum").item() > 0)

    def noise_seed(self) -> int:
        """The seed of this step's corruptions on this rank: (training seed, global step, rank)."""
        return mix_seed(self.args.seed, self.state.global_step, self.args.process_index)

    # ------------------------------------------------------------------ views
    def tensor_view_needed(self, info: dict, view: str) -> bool:
        """Whether tensor view ``view`` runs this step (the same answer on every rank).

        A view on the clean batch that no row on any rank corrupts would only repeat the clean
        pass, so it is skipped (MoD-DPO's invariance view on audiovisual prompts; the objective
        masks it). A view on a token view always runs: uncorrupted, it is still its base view
        (MFPO's m' where every row brings its perturbed image)."""
        tensor_view = TENSOR_VIEWS[view]
        if tensor_view.base != CLEAN:
            return True
        return self._any_rank(any(tensor_view.sides_per_row(info["rows"])))

    def view_batch(
        self, batch: dict, info: dict, view: str, seed: int, chosen_only: bool = False
    ) -> tuple[dict, dict[str, list[int]]]:
        """The model inputs of ``view`` (only the B chosen rows when ``chosen_only``) and their media counts."""
        if view == CLEAN:
            base, counts = batch, info["counts"]
        elif view in TOKEN_VIEWS:
            base, counts = info["views"][view], info["view_counts"][view]
        else:
            tensor_view = TENSOR_VIEWS[view]
            base, counts = self.view_batch(batch, info, tensor_view.base, seed, chosen_only)
            sides = tensor_view.sides_per_row(info["rows"])
            target = base["data"] if "data" in base else base  # MiniCPM-o nests its inputs under "data"
            corrupted = corrupt_batch(
                target, counts, sides, self.plan.corruptions, seed,
                regions=[row.get("region") for row in info["rows"]], layout=self.patch_layout,
                row_keys=info["row_id"].tolist(),
            )
            return ({**base, "data": corrupted} if "data" in base else corrupted), counts
        if chosen_only:
            n_pairs = len(info["rows"])
            return take_rows(base, counts, n_pairs), take_counts(counts, n_pairs)
        return base, counts

    # ------------------------------------------------------------------ passes
    def _same_media(self, info: dict, view: str) -> list[bool]:
        """Per pair: both sides of ``view`` carry the same media (its base view's answer for a tensor view)."""
        while view in TENSOR_VIEWS:
            view = TENSOR_VIEWS[view].base
        return info["same_media"] if view == CLEAN else info["view_same_media"][view]

    def scoring_inputs(self, batch: dict, info: dict, view: str, seed: int, chosen_only: bool = False):
        """(model inputs, response layout) of ``view``: pairs packed as [prompt, y_w, y_l] where they can share it."""
        inputs, counts = self.view_batch(batch, info, view, seed, chosen_only)
        n_pairs = len(info["rows"])
        if not chosen_only and self.share_prefix:
            try:
                packed, _, layout = pack_pairs(
                    inputs, counts, n_pairs, self._same_media(info, view), self.processing_class.pad_token_id
                )
                return packed, layout
            except NotPackable as reason:
                self._stop_sharing_prefix(str(reason))
        labels = inputs["labels"] if "labels" in inputs else inputs["data"]["labels"]
        return inputs, layout_from_labels(labels, n_pairs, chosen_only)

    def _stop_sharing_prefix(self, reason: str) -> None:
        """Every rank falls back together, and the run says so once."""
        self.share_prefix = False
        logger.warning(f"The shared prompt prefix is off for this run: {reason}; scoring each response separately.")

    def _reference_scores(self, model, inputs: dict, layout) -> ScoredResponses:
        """Reference scores: the reference model, or the policy with its LoRA adapters off (as upstream)."""
        if self.ref_model is None:
            ref_model, context = model, self.accelerator.unwrap_model(model).disable_adapter()
        else:
            ref_model, context = self.ref_model, nullcontext()
        with torch.no_grad(), context:
            return layout_logps(ref_model, inputs, layout)

    def _from_reference_table(self, p: Pass, info: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.reference_table:  # nothing precomputed (the same on every rank)
            return None
        table = self.reference_table.get(p.view)
        ids = info["row_id"].cpu()
        known = table is not None and bool(ids.numel()) and int(ids.max()) < table.shape[0] and bool(
            torch.isfinite(table[ids]).all()
        )
        if self.args.world_size > 1:  # one rank without the rows in the table: every rank runs the pass live
            known = not self._any_rank(not known)
        if not known:
            return None
        logps = table[ids].to(self.accelerator.device)
        return logps[:, 0], logps[:, 1]

    @staticmethod
    def _sides(scores: ScoredResponses) -> tuple[torch.Tensor, torch.Tensor | None]:
        return scores.logps[:, 0], (scores.logps[:, 1] if scores.logps.shape[1] > 1 else None)

    def shared_encodings(self, model):
        """A context in which the step's passes share media encodings (a no-op when the key is off)."""
        if not self.finetuning_args.share_media_encodings:
            return nullcontext()
        if self._encodings is None:
            models = [self.accelerator.unwrap_model(model)]
            if self.ref_model is not None:
                models.append(self.accelerator.unwrap_model(self.ref_model))
            self._encodings = SharedEncodings(models, agree=lambda hit: not self._any_rank(not hit))
        return self._encodings.step()

    def compute_table(self, model, batch: dict, info: dict) -> tuple[LogpTable, dict]:
        """Run the plan's passes on one batch: {(model, view): (chosen [B], rejected [B] or None)}."""
        with self.shared_encodings(model):
            return self._compute_table(model, batch, info)

    def _compute_table(self, model, batch: dict, info: dict) -> tuple[LogpTable, dict]:
        table: LogpTable = {}
        extras: dict = {}
        seed = self.noise_seed()
        needed = {v: self.tensor_view_needed(info, v) for v in dict.fromkeys(p.view for p in self.plan.passes)
                  if v in TENSOR_VIEWS}
        inputs: dict[tuple[str, bool], tuple] = {}  # one corrupted batch per view and step: policy and reference share it

        def inputs_of(p: Pass) -> tuple[dict, Any]:
            key = (p.view, p.chosen_only)
            if key not in inputs:
                inputs[key] = self.scoring_inputs(batch, info, p.view, seed, p.chosen_only)
            return inputs[key]

        passes = [p for p in self.plan.passes if needed.get(p.view, True)]
        for p in (p for p in passes if not p.grad):  # no-grad passes first: their activations are freed
            if p.model == REFERENCE:
                cached = self._from_reference_table(p, info)
                table[p.key] = cached if cached is not None else self._sides(self._reference_scores(model, *inputs_of(p)))
            else:
                with torch.no_grad():
                    table[p.key] = self._sides(layout_logps(model, *inputs_of(p)))

        grad_passes = [p for p in passes if p.grad]
        if grad_passes:  # every pass with gradient in ONE forward
            parts = [inputs_of(p) for p in grad_passes]
            batches = [part for part, _ in parts]
            if any(SEGMENTS in part for part in batches):  # packed and unpacked parts in one forward
                batches = [as_block_rows(part) for part in batches]
            joined = concat_batches(batches, self.processing_class.pad_token_id)
            layouts = ResponseLayout.concat([layout for _, layout in parts], [rows_of(part) for part, _ in parts])
            logits, _ = forward_logits(model, joined)
            for p, layout in zip(grad_passes, layouts):
                scores = score_responses(logits, layout)
                table[p.key] = self._sides(scores)
                if p.key == (POLICY, CLEAN):
                    extras["chosen_logps_avg"] = scores.logps[:, 0] / scores.tokens[:, 0].clamp(min=1)
                    extras["logits/chosen"] = scores.logits_mean[:, 0]
                    extras["logits/rejected"] = scores.logits_mean[:, 1]
        return table, extras

    # ------------------------------------------------------------------ loss and metrics
    def get_batch_loss_metrics(
        self, model, batch: dict[str, Any], train_eval: Literal["train", "eval"] = "train"
    ) -> tuple[torch.Tensor, dict[str, float]]:
        info = batch.pop(INFO_KEY)
        table, extras = self.compute_table(model, batch, info)
        losses, metrics = self.objective(**self.objective_inputs(table, info, self.finetuning_args))
        if self.ftx_gamma > 1e-6:
            losses = losses + self.ftx_gamma * -extras["chosen_logps_avg"]

        policy_chosen, policy_rejected = table[(POLICY, CLEAN)]
        rows = {
            "logps/chosen": policy_chosen.detach(),
            "logps/rejected": policy_rejected.detach(),
            **{k: v for k, v in extras.items() if k.startswith("logits/")},
            **metrics,
        }
        self.metrics.add_all(train_eval, rows)
        prefix = "eval_" if train_eval == "eval" else ""
        return losses.mean(), {f"{prefix}{k}": v for k, v in self.metrics.batch_means(rows).items()}

    def store_metrics(self, metrics: dict[str, float], train_eval: Literal["train", "eval"] = "train") -> None:
        """Our metrics are stored as (sum, count) by ``get_batch_loss_metrics``; TRL's per-batch means are not kept."""

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Add the stage's metrics: means over rows since the last log, summed across ranks in a fixed key order."""
        split = "train" if "loss" in logs else "eval"
        prefix = "eval_" if split == "eval" else ""
        reduced = self.metrics.pop(split, lambda t: self.accelerator.reduce(t.to(self.accelerator.device), "sum"))
        logs.update({f"{prefix}{k}": v for k, v in reduced.items()})
        return Trainer.log(self, logs, *args, **kwargs)

    # ------------------------------------------------------------------ one-off work when training begins
    def prepare_training(self) -> None:
        """Precompute reference log-probs and score the curriculum, on the wrapped model (called at train begin)."""
        if self.plan.precompute_reference:
            self.precompute_reference()
        if self.plan.curriculum:
            self.score_difficulty()

    def _policy(self):
        return self.model_wrapped if self.model_wrapped is not None else self.model

    def scoring_batches(self, dataset, desc: str) -> Iterator[dict]:
        """Every row of ``dataset`` once (no drop_last), this rank's share, at the training batch size.

        The row list is padded (repeating its first rows) to a whole number of rounds, so every rank
        runs the same number of forwards (ZeRO-3 and FSDP need it); the gathered results are written
        by row id, so repeated rows write the same values twice.
        """
        world, rank = max(self.args.world_size, 1), self.args.process_index
        size = self.args.per_device_train_batch_size
        order = list(range(len(dataset)))
        order += [order[i % len(order)] for i in range(-len(order) % (world * size))]
        starts = range(rank * size, len(order), world * size)
        for start in tqdm(starts, desc=desc, disable=not self.is_world_process_zero()):
            batch = self.data_collator([dataset[i] for i in order[start : start + size]])
            yield send_to_device(batch, self.accelerator.device)

    def _datasets(self) -> list:
        eval_sets = self.eval_dataset
        if isinstance(eval_sets, dict):
            eval_sets = list(eval_sets.values())
        elif eval_sets is not None:
            eval_sets = [eval_sets]
        return [d for d in [self.train_dataset, *(eval_sets or [])] if d is not None]

    @torch.no_grad()
    def precompute_reference(self) -> None:
        """Reference log-probs of every row of the run (train and eval sets) on the clean and token views.

        The reference is frozen, so reusing them gives the same loss as computing them each step.
        Every rank computes a share and the shares are gathered, so every rank holds the whole table.
        """
        views = list(dict.fromkeys(p.view for p in self.plan.passes if p.model == REFERENCE and p.view not in TENSOR_VIEWS))
        datasets = self._datasets()
        size = max(max(d["row_id"]) for d in datasets) + 1
        tables = {view: torch.full((size, 2), float("nan"), dtype=torch.float32) for view in views}
        model = self._policy()
        runs_on = type(self.ref_model if self.ref_model is not None else model).__name__
        logger.info_rank0(f"Precomputing reference log-probs on {runs_on} ({size} rows, views: {', '.join(views)}).")
        for dataset in datasets:
            for batch in self.scoring_batches(dataset, "Precomputing reference log-probs"):
                info = batch.pop(INFO_KEY)
                with self.shared_encodings(model):
                    for view in views:
                        pairs = self._reference_scores(model, *self.scoring_inputs(batch, info, view, seed=0)).logps
                        row_ids, pairs = self.accelerator.gather((info["row_id"].to(pairs.device), pairs))
                        tables[view][row_ids.cpu()] = pairs.float().cpu()
        self.reference_table = tables

    @torch.no_grad()
    def score_difficulty(self) -> list[float]:
        """Per training row: the mean entropy of the policy's next-token distribution over y_w.

        MFPO's easy-to-hard schedule trains on the thirds of these scores in increasing order. A
        resumed run reloads the scores its checkpoint kept (scores of the initial model), and a run
        over the same training set reuses ``curriculum_scores.json`` in the output folder.
        """
        fingerprint = getattr(self.train_dataset, "_fingerprint", None)
        for folder in (self.resume_checkpoint, self.args.output_dir):
            path = os.path.join(folder, CURRICULUM_FILE) if folder else None
            if path and os.path.exists(path):
                cached = json.loads(open(path, encoding="utf-8").read())
                if cached.get("fingerprint") == fingerprint and len(cached["scores"]) == len(self.train_dataset):
                    self.difficulty = cached["scores"]
                    self.save_curriculum(self.args.output_dir)  # the output folder keeps the scores its run used
                    return self.difficulty

        scores = torch.zeros(len(self.train_dataset), dtype=torch.float64)
        model = self._policy()
        logger.info_rank0(f"Scoring rows by token entropy on {type(model).__name__} ({len(scores)} rows).")
        for batch in self.scoring_batches(self.train_dataset, "Scoring rows by token entropy"):
            info = batch.pop(INFO_KEY)
            n_pairs = len(info["rows"])
            chosen = take_rows(batch, info["counts"], n_pairs)
            inputs = {k: v for k, v in chosen.items() if k != "labels"}
            logits = model(**inputs, return_dict=True, use_cache=False).logits
            entropy = response_entropy(logits, chosen["labels"])
            row_ids, entropy = self.accelerator.gather((info["row_id"].to(entropy.device), entropy))
            scores[row_ids.cpu()] = entropy.double().cpu()
        broken = torch.nonzero(~torch.isfinite(scores)).flatten().tolist()
        if broken:
            raise RuntimeError(
                f"MFPO's curriculum: the policy's token entropy is not finite for training rows {broken[:10]} "
                f"({len(broken)} of {len(scores)}): its logits hold NaN or inf before training started. Check the "
                "model's weights (a checkpoint loaded incompletely) and its dtype; no curriculum was written."
            )
        self.difficulty = scores.tolist()
        self.save_curriculum(self.args.output_dir)
        return self.difficulty

    def save_curriculum(self, folder: str) -> None:
        """Keep the curriculum scores in ``folder`` (the output folder and every checkpoint)."""
        if self.difficulty is None or not self.is_world_process_zero():
            return
        os.makedirs(folder, exist_ok=True)
        fingerprint = getattr(self.train_dataset, "_fingerprint", None)
        with open(os.path.join(folder, CURRICULUM_FILE), "w", encoding="utf-8") as f:
            json.dump({"fingerprint": fingerprint, "scores": self.difficulty}, f)


def _patch_layout(processor) -> PatchLayout:
    """Qwen-style patch geometry from the image processor, for spatial corruptions."""
    image_processor = getattr(processor, "image_processor", None)
    return PatchLayout(
        merge_size=getattr(image_processor, "merge_size", 2) or 2,
        temporal_patch_size=getattr(image_processor, "temporal_patch_size", 2) or 2,
    )
