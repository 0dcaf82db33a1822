r"""The ``mbpo`` stage: GRPO over a hybrid set of offline pairs and online closed-ended prompts (seed 003).

MBPO mixes two kinds of rows in every mini-batch (Sec. 4.3):

- **offline** rows: a ranking row (prompt, chosen y_w, rejected y_l: the adversarial negative of
  ``groundpo-data mbpo``) is a group of two responses with fixed rewards (``mbpo_reward_chosen``,
  ``mbpo_reward_rejected``);
- **online** rows: a closed-ended prompt with a gold ``answer`` (and ``options``); the current
  policy samples G responses (``mbpo_num_generations``) and :func:`groundpo.rewards.verified_reward`
  scores each one.

Each step: sample the online groups, score them, normalise the rewards in every group (Eq. 2),
then one forward of the policy with gradient over every response of the batch, one no-grad
reference forward for the k3 KL (Eq. 3), and the clipped objective of
:mod:`groundpo.losses.grpo` averaged as Eq. 7 says. With ``mbpo_num_iterations`` μ > 1 the same
responses serve μ optimizer steps (the sampler repeats every optimizer step's rows μ times) and
the ratio to the policy that sampled them is clipped.

Why not TRL's ``GRPOTrainer``: it builds its inputs from images only (``pixel_values``,
``image_grid_thw``); Qwen2.5-Omni's video frames, audio features and audio-in-video rotary
positions have no path through it, and its datasets are prompt-only (no fixed-reward pairs). This
trainer is groundpo's engine instead: it subclasses :class:`~groundpo.train.trainer.ViewPreferenceTrainer`
(upstream's reference model and LoRA handling, DeepSpeed/FSDP preparation, the (sum, count)
metric store reduced across ranks, rank agreement) and collates through upstream's multimodal
collator, so every model LLaMA-Factory trains with DPO (mrope, audio in video) generates and
trains here.

Rank consistency (ZeRO-3 and FSDP deadlock when ranks run different forwards):

- every rank runs exactly one policy forward with gradient and one reference forward per step;
- ``generate`` runs on every rank when any rank has online rows (one small all-reduce decides);
  under ZeRO-3 and FSDP ``generate(synced_gpus=True)`` steps the ranks together, so a rank without
  online rows samples a filler prompt (its first offline prompt) and drops the result;
- the blank-media pass of the IIG metric runs on every rank when any rank has offline rows with
  media; a rank without such rows scores its first response and drops the result.

Generation runs on the unwrapped policy in eval mode under ``torch.no_grad()`` (so the KV cache is
on while gradient checkpointing stays configured for training), with HF ``generate``; with
``mbpo_generation_backend: vllm`` a colocated vLLM engine samples instead
(:mod:`groundpo.train.mbpo_vllm`, GPU only).
"""

from __future__ import annotations

import copy
import json
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Literal, Optional

import torch
from llamafactory.data import MultiModalDataCollatorForSeq2Seq, get_dataset
from llamafactory.extras import logging
from llamafactory.extras.constants import IGNORE_INDEX
from torch.utils.data import Dataset, Sampler

from ..blank import BlankMedia, BlankMediaError
from ..data.batch import concat_batches, take_rows
from ..data.collator import INFO_KEY, ViewPairwiseDataCollator
from ..data.plan import DataPlan, preference_data
from ..generation import sample_responses
from ..losses.grpo import group_advantages, grpo_loss, hybrid_batch_loss
from ..registry import get_stage
from ..rewards import verified_reward
from .logps import forward_logits
from .metrics import MetricStore
from .trainer import ViewPreferenceTrainer
from .workflow import (
    _deepspeed_comm_ready,
    collator_arguments,
    load_policy_and_reference,
    load_tokenizer_and_template,
    train_and_evaluate,
    trainer_arguments,
    with_row_ids,
)

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

    from llamafactory.hparams import DataArguments, FinetuningArguments, ModelArguments

logger = logging.get_logger(f"llamafactory.{__name__}")

OFFLINE, ONLINE = "offline", "online"
SOURCE_KEY = "mbpo_source"
MEDIA = ("images", "videos", "audios")


# ---------------------------------------------------------------- data
class HybridDataset(Dataset):
    """MBPO's hybrid set: the offline pairs then the online prompts; each row says where it comes from."""

    def __init__(self, offline=None, online=None) -> None:
        self.parts = [(OFFLINE, offline), (ONLINE, online)]
        self.sizes = [len(part) if part is not None else 0 for _, part in self.parts]

    def __len__(self) -> int:
        return sum(self.sizes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        for (source, part), size in zip(self.parts, self.sizes):
            if index < size:
                return {**part[index], SOURCE_KEY: source}
            index -= size
        raise IndexError(index)


def prompt_of(feature: dict[str, Any]) -> dict[str, Any]:
    """The prompt of an offline pair (its chosen ids before the first response token) with its media."""
    labels = feature["chosen_labels"]
    start = next((i for i, t in enumerate(labels) if t != IGNORE_INDEX), len(labels))
    return {"input_ids": list(feature["chosen_input_ids"][:start]), **{k: feature.get(k) or [] for k in MEDIA}}


@dataclass
class MBPODataCollator(ViewPairwiseDataCollator):
    """Offline pairs collated as every groundpo stage collates them (2B rows, chosen then rejected);
    online prompts passed on as they are: the trainer samples their responses and collates those."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        offline = [f for f in features if f[SOURCE_KEY] == OFFLINE]
        online = [
            {k: f.get(k) for k in ("input_ids", "answer", "options", "row_id", "messages", "system", "tools", *MEDIA)}
            for f in features if f[SOURCE_KEY] == ONLINE
        ]
        return {
            OFFLINE: super().__call__(offline) if offline else None,
            ONLINE: online,
            "filler": prompt_of(offline[0]) if offline else None,
        }

    def collate_rows(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Rows {input_ids, attention_mask, labels, images, videos, audios} through upstream's multimodal collator."""
        return MultiModalDataCollatorForSeq2Seq.__call__(self, rows)


class RepeatBlockSampler(Sampler[int]):
    """μ policy updates per generation: each block of ``block`` row indices (one optimizer step of every
    rank) comes ``repeats`` times in a row; a short last block is filled up from its own start.

    The order is a permutation seeded by (seed, epoch), the same on every rank (accelerate hands the
    i-th batch of it to rank i mod world size), never drawn from the global RNG that sampling uses."""

    def __init__(self, size: int, block: int, repeats: int, seed: int = 0, shuffle: bool = True) -> None:
        self.size, self.block, self.repeats, self.seed, self.shuffle = size, block, repeats, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.size))
        for start in range(0, len(order), self.block):
            block = order[start : start + self.block]
            block += [block[i % len(block)] for i in range(self.block - len(block))]
            for _ in range(self.repeats):
                yield from block

    def __len__(self) -> int:
        return -(-self.size // self.block) * self.block * self.repeats


# ---------------------------------------------------------------- metrics
class MomentMetricStore(MetricStore):
    """(sum, count) metrics where some keys hold squares: ``std`` keys become sqrt(E[x²] − E[x]²) at log time,
    over every row since the last log on every rank."""

    def __init__(self, keys, moments: dict[str, str]) -> None:
        super().__init__(keys)
        self.moments = moments  # std key -> mean key

    def batch_means(self, metrics):
        means = super().batch_means(metrics)
        for std, mean in self.moments.items():
            if std in means and mean in means:
                means[std] = math.sqrt(max(means[std] - means[mean] ** 2, 0.0))
        return means

    def pop(self, split, all_reduce_sum):
        means = super().pop(split, all_reduce_sum)
        for std, mean in self.moments.items():
            if std in means and mean in means:
                means[std] = math.sqrt(max(means[std] - means[mean] ** 2, 0.0))
        return means


STD_OF = {"mbpo/reward_offline_std": "mbpo/reward_offline", "mbpo/reward_online_std": "mbpo/reward_online"}


# ---------------------------------------------------------------- log-probs per token
def token_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(y_t | y_<t, x) of every response token [N, L−1] and the response mask [N, L−1] (one forward)."""
    return logits_token_logps(*forward_logits(model, batch))


def logits_token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token response log-probs [N, L−1] (0 outside the response) and the response mask, from logits [N, L, V].

    Without gradient the float32 log-softmax runs one row at a time (one row of logits at once)."""
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    targets = labels.masked_fill(~mask, 0).unsqueeze(-1)
    logits = logits[:, :-1]
    if torch.is_grad_enabled() and logits.requires_grad:
        picked = torch.gather(logits, -1, targets).squeeze(-1).float()
        return (picked - torch.logsumexp(logits.float(), dim=-1)) * mask, mask
    rows = []
    for row in range(logits.shape[0]):
        row_logits = logits[row].float()
        rows.append(torch.gather(row_logits, -1, targets[row]).squeeze(-1) - torch.logsumexp(row_logits, dim=-1))
    return torch.stack(rows) * mask, mask


# ---------------------------------------------------------------- one step's responses
@dataclass
class Rollout:
    """Everything a step's loss needs besides the policy's own log-probs (kept for μ updates)."""

    inputs: dict  # one collated batch: offline chosen, offline rejected, online responses
    n_offline: int  # offline pairs (their 2·n_offline responses come first)
    advantages: torch.Tensor  # [N]
    groups: torch.Tensor  # [N] row of each response (Eq. 7)
    reference_logps: torch.Tensor | None  # [N, L−1]
    blank_logps: torch.Tensor | None  # [2·n_offline] log π(y | x, m_blank) of the offline responses (IIG)
    iig_rows: torch.Tensor | None  # [n_offline] bool: pairs with media, whose IIG is logged
    metrics: dict[str, torch.Tensor]
    row_ids: list[int]
    old_logps: torch.Tensor | None = None  # [N, L−1], set by the first update when μ > 1


class MBPOTrainer(ViewPreferenceTrainer):
    def __init__(self, *args, template, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.template = template
        self.metrics = MomentMetricStore(self.metrics.keys, STD_OF)
        args_ = self.finetuning_args
        self.num_generations = args_.mbpo_num_generations
        self.iterations = args_.mbpo_num_iterations
        self.stop_ids = sorted(set(template.get_stop_token_ids(self.processing_class)))
        # a sampled media placeholder would ask the collator for media the response does not have
        plugin = template.mm_plugin
        tokens = [t for t in (plugin.image_token, plugin.video_token, plugin.audio_token) if t]
        unk = self.processing_class.unk_token_id
        self.media_token_ids = sorted({i for i in self.processing_class.convert_tokens_to_ids(tokens) if i is not None and i != unk})
        processor = getattr(self.data_collator, "processor", None)
        self.blank = BlankMedia(processor) if processor is not None and args_.mbpo_log_iig else None
        self._rollouts: dict[int, Rollout] = {}
        self._micro = (-1, 0)  # (global step, micro-batch index within it)
        self.vllm = None
        if args_.mbpo_generation_backend == "vllm":
            from .mbpo_vllm import VLLMSampler

            self.vllm = VLLMSampler(self, args_)

    # ------------------------------------------------------------------ sampling of the rows
    def _get_train_sampler(self, *args, **kwargs):
        if self.iterations == 1:
            return super()._get_train_sampler(*args, **kwargs)
        block = self.args.per_device_train_batch_size * max(self.args.world_size, 1) * self.args.gradient_accumulation_steps
        return RepeatBlockSampler(
            len(self.train_dataset), block, self.iterations, seed=self._data_seed(),
            shuffle=not self.finetuning_args.disable_shuffling,
        )

    @property
    def synced_generation(self) -> bool:
        """ZeRO-3 and FSDP keep the parameters sharded while generating: ``generate(synced_gpus=True)`` then
        steps every rank together (each token's forward gathers the parameters), so every rank must call it."""
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

        return self.args.world_size > 1 and (is_deepspeed_zero3_enabled() or self.is_fsdp_enabled)

    # ------------------------------------------------------------------ generation
    @contextmanager
    def _generation_model(self, model):
        """The policy for ``generate``: unwrapped, in eval mode (the KV cache works under gradient checkpointing)."""
        unwrapped = self.accelerator.unwrap_model(model)
        training = unwrapped.training
        unwrapped.eval()
        try:
            with torch.no_grad():
                yield unwrapped
        finally:
            unwrapped.train(training)

    def _generation_config(self):
        from transformers import GenerationConfig

        a = self.finetuning_args
        return GenerationConfig(
            do_sample=True, temperature=a.mbpo_temperature, top_p=a.mbpo_top_p, top_k=0,
            max_new_tokens=a.mbpo_max_new_tokens, num_return_sequences=self.num_generations,
            eos_token_id=self.stop_ids, pad_token_id=self.processing_class.pad_token_id, use_cache=True,
            suppress_tokens=self.media_token_ids or None,
        )

    def sample(self, model, prompts: list[dict[str, Any]]) -> list[list[int]]:
        """G responses per prompt (token ids up to and including the stop token), grouped by prompt.

        Called on every rank when any rank has online rows; under ZeRO-3 and FSDP a rank without prompts
        passes a filler prompt and drops the result (``generate(synced_gpus=True)`` steps the ranks together)."""
        if not prompts:
            return []
        if self.vllm is not None:
            return self.vllm.sample(model, prompts)
        with self._generation_model(model) as unwrapped:
            return sample_responses(
                unwrapped, prompts, tokenizer=self.processing_class, template=self.template,
                processor=self.data_collator.processor, generation_config=self._generation_config(),
                synced_gpus=self.synced_generation,
            )

    # ------------------------------------------------------------------ rollouts
    def _reference_token_logps(self, model, inputs: dict) -> torch.Tensor:
        """Per-token reference log-probs: the reference model, or the policy with its LoRA adapters off."""
        if self.ref_model is None:
            ref_model, context = model, self.accelerator.unwrap_model(model).disable_adapter()
        else:
            ref_model, context = self.ref_model, nullcontext()
        with torch.no_grad(), context:
            return token_logps(ref_model, inputs)[0]

    def make_rollout(self, model, batch: dict) -> Rollout:
        """Sample and score the online groups, join them with the offline pairs, compute the no-grad passes."""
        a = self.finetuning_args
        device = self.accelerator.device
        offline, online = batch[OFFLINE], batch[ONLINE]
        info = offline.pop(INFO_KEY) if offline is not None else None
        n_off, n_on, g = (len(info["rows"]) if info else 0), len(online), self.num_generations
        metrics: dict[str, torch.Tensor] = {}

        parts, counts, groups, advantages = [], [], [], []
        if n_off:
            parts.append(offline)
            counts.append(info["counts"])
            rewards = torch.tensor([[a.mbpo_reward_chosen, a.mbpo_reward_rejected]] * n_off, dtype=torch.float32)
            adv = group_advantages(rewards)
            advantages += [adv[:, 0], adv[:, 1]]  # collated order: the B chosen rows, then the B rejected rows
            groups += [torch.arange(n_off), torch.arange(n_off)]
            metrics["mbpo/reward_offline"] = rewards.t().reshape(-1)

        if self._any_rank(n_on > 0):
            # every rank samples; under ZeRO-3/FSDP one without prompts samples a filler prompt and drops it
            responses = self.sample(model, online if n_on else ([batch["filler"]] if self.synced_generation else []))
            if n_on:
                rows, rewards = [], []
                for i, prompt in enumerate(online):
                    options = json.loads(prompt["options"]) if prompt.get("options") else None
                    for tokens in responses[i * g : (i + 1) * g]:
                        text = self.processing_class.decode(
                            [t for t in tokens if t not in self.stop_ids], skip_special_tokens=True
                        )
                        rewards.append(verified_reward(text, prompt["answer"], options))
                        rows.append({
                            "input_ids": prompt["input_ids"] + tokens,
                            "attention_mask": [1] * (len(prompt["input_ids"]) + len(tokens)),
                            "labels": [IGNORE_INDEX] * len(prompt["input_ids"]) + tokens,
                            **{k: prompt.get(k) or [] for k in MEDIA},
                        })
                counts.append({k: [len(row[k]) for row in rows] for k in MEDIA})  # before the collator pops the media
                parts.append(self._prepare_inputs(self.data_collator.collate_rows(rows)))
                rewards = torch.tensor(rewards, dtype=torch.float32).view(n_on, g)
                advantages.append(group_advantages(rewards).reshape(-1))
                groups.append(torch.arange(n_on).repeat_interleave(g) + n_off)
                lengths = torch.tensor([len(t) for t in responses], dtype=torch.float32)
                metrics["mbpo/reward_online"] = rewards.reshape(-1)
                metrics["mbpo/frac_reward_zero_std"] = (rewards.std(dim=1) == 0).float()
                metrics["mbpo/response_length"] = lengths
                metrics["mbpo/truncated"] = torch.tensor(
                    [float(t[-1] not in self.stop_ids) for t in responses], dtype=torch.float32
                )

        inputs = concat_batches(parts, self.processing_class.pad_token_id)
        for mean, std in ((m, s) for s, m in STD_OF.items()):
            if mean in metrics:
                metrics[std] = metrics[mean] ** 2  # E[r²]; the store turns it into the std at log time
        reference = self._reference_token_logps(model, inputs) if a.mbpo_beta_kl > 0 else None
        blank, iig_rows = self._blank_logps(model, offline, info, parts[0], counts[0]) if self.blank else (None, None)
        row_ids = (info["row_id"].tolist() if info else []) + [int(p["row_id"]) for p in online]
        return Rollout(
            inputs=inputs,
            n_offline=n_off,
            advantages=torch.cat(advantages).to(device),
            groups=torch.cat(groups).to(device),
            reference_logps=reference,
            blank_logps=blank,
            iig_rows=iig_rows,
            metrics=metrics,
            row_ids=row_ids,
        )

    def _blank_logps(self, model, offline, info, first: dict, first_counts: dict):
        """log π(y | x, m_blank) of the offline responses (the second half of IIG, Eq. 4; the first half,
        log π(y | x, m), comes from the step's policy forward) and which pairs have media."""
        n_off = len(info["rows"]) if info else 0
        has_media = [sum(info["counts"][k][r] for k in MEDIA) > 0 for r in range(n_off)] if n_off else []
        if not self._any_rank(any(has_media)):
            return None, None
        try:
            with torch.no_grad():
                if not any(has_media):  # every rank runs the pass together: score one response, drop it
                    token_logps(model, self.blank(take_rows(first, first_counts, 1)))
                    return None, None
                blank = token_logps(model, self.blank(offline))[0].sum(-1)
        except BlankMediaError as e:
            logger.warning_rank0_once(f"IIG is not logged: {e}")
            self.blank = None
            return None, None
        return blank, torch.tensor(has_media, device=blank.device)

    def rollout_for_step(self, model, batch: dict, train_eval: str) -> tuple[Rollout, bool]:
        """(this micro-batch's rollout, whether it was made now). With μ > 1 a rollout made at the first of
        the μ optimizer steps is reused at the next μ − 1 (same rows: RepeatBlockSampler)."""
        if train_eval == "eval" or self.iterations == 1:
            return self.make_rollout(model, batch), True
        step = self.state.global_step
        micro = self._micro[1] + 1 if self._micro[0] == step else 0
        self._micro = (step, micro)
        ids = _row_ids_of(batch)
        cached = self._rollouts.get(micro)
        if step % self.iterations != 0 and cached is not None and cached.row_ids == ids:
            return cached, False
        rollout = self.make_rollout(model, batch)
        self._rollouts[micro] = rollout
        return rollout, True

    # ------------------------------------------------------------------ loss and metrics
    def get_batch_loss_metrics(
        self, model, batch: dict[str, Any], train_eval: Literal["train", "eval"] = "train"
    ) -> tuple[torch.Tensor, dict[str, float]]:
        a = self.finetuning_args
        rollout, fresh = self.rollout_for_step(model, batch, train_eval)
        policy, mask = token_logps(model, rollout.inputs)
        old = rollout.old_logps if rollout.old_logps is not None else policy.detach()
        if self.iterations > 1 and fresh and train_eval == "train":
            rollout.old_logps = policy.detach()  # π_old of the next μ − 1 updates
        losses, loss_metrics = grpo_loss(
            policy, old, rollout.reference_logps, rollout.advantages, mask, epsilon=a.mbpo_epsilon, beta_kl=a.mbpo_beta_kl
        )
        loss = hybrid_batch_loss(losses, rollout.groups, a.mbpo_loss_aggregation)

        rows = dict(loss_metrics)
        if fresh:  # a reused rollout's rewards were logged when it was made
            rows.update(rollout.metrics)
        n_off = rollout.n_offline
        if n_off:
            sums = policy.detach().sum(-1)
            rows["logps/chosen"], rows["logps/rejected"] = sums[:n_off], sums[n_off : 2 * n_off]
            if fresh and rollout.blank_logps is not None:  # IIG = log π(y | x, m) − log π(y | x, m_blank)
                iig = (sums[: 2 * n_off] - rollout.blank_logps).float()
                rows["mbpo/iig_chosen"] = iig[:n_off][rollout.iig_rows]
                rows["mbpo/iig_rejected"] = iig[n_off:][rollout.iig_rows]
        self.metrics.add_all(train_eval, rows)
        prefix = "eval_" if train_eval == "eval" else ""
        return loss, {f"{prefix}{k}": v for k, v in self.metrics.batch_means(rows).items()}

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation samples and scores like training; only the loss is returned (metrics go to the store)."""
        with torch.no_grad():
            loss, _ = self.get_batch_loss_metrics(model, inputs, train_eval="eval")
        return loss.detach(), None, None


def _row_ids_of(batch: dict) -> list[int]:
    offline = batch[OFFLINE]
    ids = offline[INFO_KEY]["row_id"].tolist() if offline is not None else []
    return ids + [int(p["row_id"]) for p in batch[ONLINE]]


# ---------------------------------------------------------------- workflow
def split_datasets(names: list[str] | None, dataset_dir: str) -> tuple[list[str], list[str]]:
    """(ranking datasets: offline pairs, the others: online prompts), in the order given."""
    from llamafactory.data.parser import get_dataset_list

    if not names:
        return [], []
    attrs = get_dataset_list(names, dataset_dir)
    return [n for n, a in zip(names, attrs) if a.ranking], [n for n, a in zip(names, attrs) if not a.ranking]


def load_hybrid_data(template, model_args, data_args, training_args, tokenizer_module) -> dict[str, Any]:
    """Offline pairs (upstream's ``stage="rm"`` path, groundpo's pair processor) and online prompts
    (``stage="ppo"``, groundpo's prompt processor), row ids unique across both and every split, joined
    into :class:`HybridDataset` train and eval sets."""
    if data_args.tokenized_path is not None:
        raise ValueError("Stage 'mbpo' does not support `tokenized_path`: its offline pairs and online prompts are tokenised separately.")
    train = split_datasets(data_args.dataset, data_args.dataset_dir)
    evals = split_datasets(data_args.eval_dataset, data_args.dataset_dir)
    modules = []
    for kind, (train_names, eval_names) in zip((OFFLINE, ONLINE), zip(train, evals)):
        if not train_names and not eval_names:
            modules.append({})
            continue
        args = copy.copy(data_args)
        args.dataset, args.eval_dataset = train_names or None, eval_names or None
        plan = DataPlan("mbpo", prompts=kind == ONLINE)
        with preference_data(plan):
            modules.append(get_dataset(template, model_args, args, training_args, stage="rm" if kind == OFFLINE else "ppo", **tokenizer_module))
    if not any(m.get("train_dataset") is not None for m in modules) and training_args.do_train:
        raise ValueError("Stage 'mbpo' found no training rows: give ranking datasets (offline pairs), prompt datasets (online), or both.")

    offset = 0

    def number(dataset):
        nonlocal offset
        if dataset is None:
            return None
        dataset = with_row_ids(dataset, offset)
        offset += len(dataset)
        return dataset

    for module in modules:
        module["train_dataset"] = number(module.get("train_dataset"))
    for module in modules:
        evals_ = module.get("eval_dataset")
        module["eval_dataset"] = {k: number(v) for k, v in evals_.items()} if isinstance(evals_, dict) else number(evals_)

    offline, online = modules
    out: dict[str, Any] = {"train_dataset": None, "eval_dataset": None}
    if offline.get("train_dataset") is not None or online.get("train_dataset") is not None:
        out["train_dataset"] = HybridDataset(offline.get("train_dataset"), online.get("train_dataset"))
    off_eval, on_eval = offline.get("eval_dataset"), online.get("eval_dataset")
    if isinstance(off_eval, dict) or isinstance(on_eval, dict):
        off_eval = off_eval if isinstance(off_eval, dict) else ({"offline": off_eval} if off_eval is not None else {})
        on_eval = on_eval if isinstance(on_eval, dict) else ({"online": on_eval} if on_eval is not None else {})
        out["eval_dataset"] = {name: HybridDataset(off_eval.get(name), on_eval.get(name)) for name in {**off_eval, **on_eval}}
    elif off_eval is not None or on_eval is not None:
        out["eval_dataset"] = HybridDataset(off_eval, on_eval)
    return out


def build_mbpo_trainer(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    callbacks: Optional[list["TrainerCallback"]] = None,
) -> MBPOTrainer:
    spec = get_stage("mbpo")
    _deepspeed_comm_ready(training_args)
    tokenizer_module, template = load_tokenizer_and_template(model_args, data_args)
    dataset_module = load_hybrid_data(template, model_args, data_args, training_args, tokenizer_module)
    model, ref_model = load_policy_and_reference(tokenizer_module, model_args, training_args, finetuning_args)
    data_collator = MBPODataCollator(**collator_arguments(template, model, data_args, tokenizer_module))
    plan = spec.plan(finetuning_args)
    return MBPOTrainer(
        **trainer_arguments(spec, plan, model, ref_model, data_collator, training_args, finetuning_args, callbacks),
        template=template,
        **dataset_module,
        **tokenizer_module,
    )


def run_mbpo(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    callbacks: Optional[list["TrainerCallback"]] = None,
):
    """The workflow of ``stage: mbpo`` (upstream's ``run_*`` signature)."""
    trainer = build_mbpo_trainer(model_args, data_args, training_args, finetuning_args, callbacks)
    train_and_evaluate(trainer, model_args, data_args, training_args, finetuning_args)
