r"""``groundpo-data mbpo``: MBPO's offline pairs with adversarially mined negatives (seed 003, Sec. 4.1).

From visual instruction data (prompt, image, answer; MMSeed-163K in the paper), with the policy
model itself loaded locally (as LLaMA-Factory loads it: same template, same media processing):

1. **IIG** (Eq. 4): IIG(y) = log π(y | x, m) − log π(y | x, m_blank), m_blank all zeros of the
   same size (blank frames for a video, silence for audio; :mod:`groundpo.blank`). The answers with
   high IIG become the chosen responses y_w: ``--select threshold`` keeps IIG ≥ ``--iig_threshold``
   (decided per row), ``--select top_k`` the ``--iig_top_k`` best rows of the source (every row is
   scored first; the scores are kept in ``progress/memo.jsonl``, so a killed run does not score
   again), ``--select all`` every row.
2. **Adversarial image** (Eq. 5): projected gradient descent on the pixels to *minimise*
   log π(y_w | x, m + δ): δ ← Π_{‖δ‖∞ ≤ ε}(δ − α·sign(∇_δ log π(y_w | x, m + δ))), K steps, then
   m + δ clipped to [0, 1]. The image is attacked at the resolution the model sees it (after the
   processor's resize), on the 1/255 grid: ε and α are whole pixel levels, so the PNG written
   (lossless) is exactly m + δ and ‖δ‖∞ ≤ ε holds for the file. ``--negative noise`` replaces the
   attack by Gaussian noise N(0, σ²) on the [0, 1] pixels (the paper's "+offline rand." ablation).
3. **Rejected response** (Eq. 6): y_l is generated from the perturbed image with the same prompt
   (greedy at ``--temperature 0``, ``--max_tokens`` new tokens). A y_l equal to y_w is rejected.

Rows (the ``mbpo`` stage's offline data): the prompt, chosen y_w, rejected y_l, ``images`` = [m]
(both answers train with the clean image), ``perturbed_images`` = [m + δ] (what y_l was sampled
from; not a training input), ``iig`` and ``rejected_iig`` (both on the clean image), and the
log-probs of y_w on the clean and the perturbed image.

Defaults: K = 20 iterations of α = 4/255 (Table 3, the setting of Table 2's "+offline adv."); the
budget ε did not survive extraction: 16/255. No endpoint is called; rows are built by the local
model one at a time (``--concurrency`` only queues items).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, Reject
from .media import load_image, save_png
from .mfpo import _text  # a message's or field's text (sharegpt "value", OpenAI "content"), None when empty
from .options import CommonOptions, opt
from .runner import Item, ItemResult, Pipeline, safe_name

MEDIA_KINDS = ("images", "videos", "audios")
TAGS = {"images": "<image>", "videos": "<video>", "audios": "<audio>"}
SELECTIONS = ("threshold", "top_k", "all")
NEGATIVES = ("adversarial", "noise")


# ---------------------------------------------------------------- source rows
def _paths(raw: dict[str, Any], kind: str) -> list[str]:
    value = raw.get(kind, raw.get(kind[:-1]))
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def read_instruction_rows(path: str, media_dir: str | None) -> list[dict[str, Any]]:
    """Rows ``{id, messages, response, images, videos, audios}`` of a sharegpt / alpaca / flat instruction file."""
    from .annotate import read_source

    base, entries = read_source(path, media_dir)
    rows = []
    for n, (where, raw) in enumerate(entries):
        if isinstance(raw.get("conversations", raw.get("messages")), list):
            turns = []
            for m in raw.get("conversations", raw.get("messages")):
                role = m.get("from", m.get("role"))
                turns.append({"role": "user" if role in ("human", "user") else "assistant", "content": _text(m) or ""})
            if len(turns) < 2 or turns[-1]["role"] != "assistant" or turns[-2]["role"] != "user":
                raise InputError(f"--source {where}: field 'conversations': expected the prompt then the answer (a gpt turn last)")
            messages, response = turns[:-1], turns[-1]["content"]
        else:
            prompt = _text(raw.get("instruction")) or _text(raw.get("prompt")) or _text(raw.get("question"))
            if prompt is None:
                raise InputError(f"--source {where}: no prompt (conversations, instruction, prompt or question)")
            if _text(raw.get("input")):
                prompt += "\n" + raw["input"]
            messages = [{"role": "user", "content": prompt}]
            response = _text(raw.get("output")) or _text(raw.get("response")) or _text(raw.get("answer")) or ""
        if not response.strip():
            raise InputError(f"--source {where}: field 'answer': empty; MBPO's chosen response is the row's answer")
        media = {}
        for kind in MEDIA_KINDS:
            media[kind] = [p if Path(p).is_absolute() else str(base / p) for p in _paths(raw, kind)]
            for p in media[kind]:
                if not Path(p).is_file():
                    raise InputError(f"--source {where}: field {kind!r}: file not found: {p}")
            tags = sum(m["content"].count(TAGS[kind]) for m in messages)
            if tags == 0 and media[kind]:
                messages[0] = {**messages[0], "content": TAGS[kind] * len(media[kind]) + messages[0]["content"]}
            elif tags != len(media[kind]):
                raise InputError(f"--source {where}: field {kind!r}: {len(media[kind])} file(s) for {tags} {TAGS[kind]} tag(s)")
        if not any(media.values()):
            raise InputError(f"--source {where}: no image, video or audio; IIG measures what the media add")
        rows.append({"id": str(raw.get("id") or f"row{n:06d}"), "messages": messages, "response": response, **media})
    return rows


# ---------------------------------------------------------------- the policy, locally
class LocalPolicy:
    """The policy as LLaMA-Factory loads it for inference: its template, media processing and collator.

    Every call holds one lock (items run in threads; the model runs one item at a time)."""

    def __init__(self, options: "MBPOOptions") -> None:
        import torch
        from llamafactory.data import MultiModalDataCollatorForSeq2Seq, get_template_and_fix_tokenizer
        from llamafactory.data.processor import PairwiseDatasetProcessor, UnsupervisedDatasetProcessor
        from llamafactory.hparams import get_infer_args
        from llamafactory.model import load_model, load_tokenizer

        from ..blank import BlankMedia
        from .backends import resolve_device

        o = options
        if not Path(o.model_name_or_path).is_dir():
            raise InputError(f"--model_name_or_path: model folder {o.model_name_or_path!r} not found (the policy is loaded from a path)")
        args = {
            "model_name_or_path": o.model_name_or_path, "template": o.template, "image_max_pixels": o.image_max_pixels,
            "video_max_pixels": o.video_max_pixels, "video_maxlen": o.video_maxlen, "cutoff_len": o.cutoff_len,
            "trust_remote_code": o.trust_remote_code, "finetuning_type": "full",
        }
        if o.adapter_name_or_path:
            args.update(adapter_name_or_path=o.adapter_name_or_path, finetuning_type="lora")
        model_args, data_args, finetuning_args, _ = get_infer_args(args)
        module = load_tokenizer(model_args)
        self.tokenizer, self.processor = module["tokenizer"], module["processor"]
        self.template = get_template_and_fix_tokenizer(self.tokenizer, data_args)
        self.model = load_model(self.tokenizer, model_args, finetuning_args, is_trainable=False)
        device = resolve_device(o.device)
        if str(self.model.device) != device and not str(self.model.device).startswith(device):
            self.model.to(device)
        self.model.eval().requires_grad_(False)
        kwargs = dict(template=self.template, tokenizer=self.tokenizer, processor=self.processor, data_args=data_args)
        self.pairs, self.prompts = PairwiseDatasetProcessor(**kwargs), UnsupervisedDatasetProcessor(**kwargs)
        self.collator = MultiModalDataCollatorForSeq2Seq(template=self.template, model=self.model, **module)
        self.blank = BlankMedia(self.processor)
        self.stop_ids = sorted(set(self.template.get_stop_token_ids(self.tokenizer)))
        self.lock = threading.Lock()
        self.torch = torch

    # -- encoding -------------------------------------------------------------------------------
    def feature(self, messages, response: str, media: dict[str, list]) -> dict[str, Any]:
        """One scored row (prompt + response, labels on the response) as upstream's pairwise processor encodes it."""
        from ..integration.data import encode_pair

        answer = {"role": "assistant", "content": response}
        ids, labels, _, _ = encode_pair(self.pairs, messages, [answer, answer], None, None, *(media.get(k) or [] for k in MEDIA_KINDS))
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels, **{k: list(media.get(k) or []) for k in MEDIA_KINDS}}

    def batch(self, feature: dict[str, Any]) -> dict[str, Any]:
        batch = self.collator([dict(feature)])
        return {k: (v.to(self.model.device) if self.torch.is_tensor(v) else v) for k, v in batch.items()}

    # -- scores ---------------------------------------------------------------------------------
    def logp(self, batch: dict[str, Any]) -> float:
        """log π(y | x, m) summed over the response tokens."""
        from ..train.logps import model_inputs
        from ..train.mbpo import logits_token_logps

        inputs, labels = model_inputs(batch)
        with self.torch.no_grad():
            logits = self.model(**inputs, return_dict=True, use_cache=False).logits
            return float(logits_token_logps(logits, labels)[0].sum())

    def iig(self, feature: dict[str, Any]) -> tuple[float, float]:
        """(IIG(y), log π(y | x, m)) of the feature's response (Eq. 4)."""
        with self.lock:
            batch = self.batch(feature)
            clean = self.logp(batch)
            return clean - self.logp(self.blank(batch)), clean

    # -- perturbations --------------------------------------------------------------------------
    def _image_geometry(self, batch: dict[str, Any]):
        from ..corruption import PatchLayout

        if "pixel_values" not in batch or "image_grid_thw" not in batch or batch["image_grid_thw"].shape[0] != 1:
            raise Reject("unsupported_image", "PGD needs one image in a Qwen-style processor (pixel_values with image_grid_thw)")
        image_processor = self.processor.image_processor
        layout = PatchLayout(
            merge_size=getattr(image_processor, "merge_size", 2) or 2,
            temporal_patch_size=getattr(image_processor, "temporal_patch_size", 2) or 2,
        )
        shape = (1, -1, 1, 1)
        mean = self.torch.tensor(image_processor.image_mean, dtype=self.torch.float32).view(shape)
        std = self.torch.tensor(image_processor.image_std, dtype=self.torch.float32).view(shape)
        return layout, batch["image_grid_thw"][0].tolist(), mean.to(self.model.device), std.to(self.model.device)

    def clean_pixels(self, batch: dict[str, Any]) -> tuple[Any, Any]:
        """The image as the model sees it (after resizing), on the 1/255 grid: [1, C, H, W] in [0, 1]; and its geometry."""
        from ..corruption import patches_to_images

        geometry = self._image_geometry(batch)
        layout, grid, mean, std = geometry
        frames = patches_to_images(batch["pixel_values"].float(), grid, layout)
        pixels = (frames[:1] * std + mean).clamp(0, 1)
        return self.torch.round(pixels * 255) / 255, geometry

    def _with_pixels(self, batch: dict[str, Any], pixels, geometry) -> dict[str, Any]:
        from ..corruption import images_to_patches

        layout, grid, mean, std = geometry
        frames = ((pixels - mean) / std).expand(layout.temporal_patch_size * int(grid[0]), -1, -1, -1)
        return {**batch, "pixel_values": images_to_patches(frames, grid, layout).to(batch["pixel_values"].dtype)}

    def pgd(self, feature: dict[str, Any], epsilon: float, step_size: float, steps: int, random_start: bool, seed: int):
        """Eq. 5: (clean pixels, perturbed pixels) as uint8 [H, W, C], minimising log π(y | x, m + δ), ‖δ‖∞ ≤ ε.

        ``epsilon`` and ``step_size`` are in pixel levels (0-255)."""
        from ..train.logps import model_inputs
        from ..train.mbpo import logits_token_logps

        torch = self.torch
        with self.lock:
            batch = self.batch(feature)
            x0, geometry = self.clean_pixels(batch)
            eps, alpha = epsilon / 255.0, step_size / 255.0
            delta = torch.zeros_like(x0)
            if random_start:
                gen = torch.Generator(device="cpu").manual_seed(seed)
                levels = torch.randint(-int(epsilon), int(epsilon) + 1, x0.shape, generator=gen)
                delta = ((x0 + levels.to(x0) / 255).clamp(0, 1) - x0)
            for _ in range(steps):
                delta.requires_grad_(True)
                inputs, labels = model_inputs(self._with_pixels(batch, x0 + delta, geometry))
                with torch.enable_grad():
                    logits = self.model(**inputs, return_dict=True, use_cache=False).logits
                    logp = logits_token_logps(logits, labels)[0].sum()
                    (grad,) = torch.autograd.grad(logp, delta)
                with torch.no_grad():
                    delta = (delta - alpha * grad.sign()).clamp(-eps, eps)  # descend, project on the ε-ball
                    delta = (x0 + delta).clamp(0, 1) - x0  # the valid pixel range
                    delta = torch.round(delta * 255) / 255  # stay on the 1/255 grid (exact in the PNG)
        return _uint8(x0), _uint8(x0 + delta)

    def noise(self, feature: dict[str, Any], std: float, seed: int):
        """The "+offline rand." negative: (clean, clean + N(0, std²) clipped to [0, 1]) as uint8 [H, W, C]."""
        with self.lock:
            x0, _ = self.clean_pixels(self.batch(feature))
        clean = _uint8(x0)
        noise = np.random.default_rng(seed).standard_normal(clean.shape) * std * 255.0
        return clean, np.clip(np.round(clean.astype(np.float64) + noise), 0, 255).astype(np.uint8)

    # -- generation -----------------------------------------------------------------------------
    def generate(self, messages, media: dict[str, list], temperature: float, max_new_tokens: int, seed: int) -> str:
        """One response to the prompt: greedy at temperature 0, else sampled with a seed of its own."""
        from transformers import GenerationConfig

        from ..generation import sample_responses
        from ..integration.data import encode_prompt

        ids = encode_prompt(self.prompts, messages, None, None, *(media.get(k) or [] for k in MEDIA_KINDS))
        config = GenerationConfig(
            do_sample=temperature > 0, temperature=temperature if temperature > 0 else None, top_p=None, top_k=None,
            max_new_tokens=max_new_tokens, eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id,
        )
        with self.lock:
            self.torch.manual_seed(seed)
            (tokens,) = sample_responses(
                self.model, [{"input_ids": ids, **media}], tokenizer=self.tokenizer, template=self.template,
                processor=self.processor, generation_config=config,
            )
        return self.tokenizer.decode([t for t in tokens if t not in self.stop_ids], skip_special_tokens=True).strip()


def _uint8(pixels) -> np.ndarray:
    """[1, C, H, W] in [0, 1] (on the 1/255 grid) -> uint8 [H, W, C]."""
    return np.round(pixels[0].detach().float().cpu().numpy().transpose(1, 2, 0) * 255).astype(np.uint8)


# ---------------------------------------------------------------- the pipeline
@dataclass(kw_only=True)
class MBPOOptions(CommonOptions):
    source: str = opt(help="instruction rows (JSON/JSONL): LLaMA-Factory sharegpt (prompt, then the answer) or alpaca, or "
                           '{"image"/"video"/"audio", "question", "answer"}; the answers are the candidate chosen responses')
    media_dir: str | None = opt(None, help="folder that relative media paths start from (default: the source file's folder)")
    model_name_or_path: str = opt(help="the policy model folder (e.g. Qwen2-VL-7B-Instruct): scores IIG, is attacked, writes y_l")
    adapter_name_or_path: str | None = opt(None, help="a LoRA adapter on top of the policy")
    template: str = opt(help="LLaMA-Factory template of the policy (qwen2_vl, qwen2_omni, ...), as in training")
    trust_remote_code: bool = opt(False, help="allow the model folder's own code")
    image_max_pixels: int = opt(768 * 768, help="largest image the model sees (LLaMA-Factory's image_max_pixels); attacked at that size")
    video_max_pixels: int = opt(256 * 256, help="largest video frame (LLaMA-Factory's video_max_pixels)")
    video_maxlen: int = opt(128, help="most frames sampled per video (LLaMA-Factory's video_maxlen)")
    cutoff_len: int = opt(2048, help="longest prompt + answer in tokens (longer answers are cut as in training)")
    select: str = opt("threshold", help="chosen responses: threshold (IIG >= --iig_threshold), top_k (--iig_top_k best), all")
    iig_threshold: float = opt(0.0, help="--select threshold: the least IIG a kept answer has (0: the image makes it likelier)")
    iig_top_k: int | None = opt(None, help="--select top_k: how many of the highest-IIG rows are kept (over the whole source)")
    negative: str = opt("adversarial", help="what y_l is sampled from: adversarial (PGD image) or noise (the +offline rand. ablation)")
    pgd_epsilon: float = opt(16.0, help="ε of the L∞ ball, in pixel levels (16 = 16/255; not recoverable from the paper)")
    pgd_step_size: float = opt(4.0, help="α per PGD step, in pixel levels (the paper's Table 2/3 setting: 4/255)")
    pgd_steps: int = opt(20, help="K: PGD iterations (the paper's Table 2/3 setting: 20)")
    pgd_random_start: bool = opt(False, help="start from a random point in the ε-ball instead of the clean image")
    noise_std: float = opt(1.0, help="--negative noise: σ of the Gaussian noise on pixels scaled to [0, 1]")
    max_tokens: int = opt(256, help="longest rejected response y_l, in new tokens")

    def check(self) -> None:
        super().check()
        if self.select not in SELECTIONS:
            raise InputError(f"--select must be one of {', '.join(SELECTIONS)}, got {self.select!r}")
        if self.select == "top_k" and (self.iig_top_k is None or self.iig_top_k < 1):
            raise InputError("--select top_k needs --iig_top_k >= 1")
        if self.negative not in NEGATIVES:
            raise InputError(f"--negative must be one of {', '.join(NEGATIVES)}, got {self.negative!r}")
        for name in ("pgd_epsilon", "pgd_step_size"):
            value = getattr(self, name)
            if value < 0 or value != int(value):
                raise InputError(f"--{name} must be a whole number of pixel levels >= 0 (e.g. 16 for 16/255), got {value}")
        if self.pgd_steps < 0:
            raise InputError(f"--pgd_steps must be >= 0, got {self.pgd_steps}")
        if self.noise_std < 0:
            raise InputError(f"--noise_std must be >= 0, got {self.noise_std}")
        if self.max_tokens < 1:
            raise InputError("--max_tokens must be >= 1")


class MBPOPipeline(Pipeline):
    name = "mbpo"
    stage = "mbpo"
    description = "MBPO offline pairs: IIG-selected answers, y_l sampled from a PGD-attacked (or noised) image"
    options_class = MBPOOptions
    columns = {"images": "images"}

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        self.policy: LocalPolicy | None = None

    def roles(self) -> list[str]:
        return []  # a local model only

    def setup(self) -> None:
        if self.policy is None:
            self.policy = LocalPolicy(self.options)

    def items(self) -> list[Item]:
        rows = read_instruction_rows(self.options.source, self.options.media_dir)
        items = [Item(row["id"], row) for row in rows]
        if self.options.select != "top_k":
            return items
        # top-k over the whole source: every row's IIG first (kept in the memo, so a rerun does not score again)
        from .progress import progress_bar

        bar = progress_bar(len(items), 0, "mbpo iig", self.options.progress)
        scores = {}
        try:
            for item in items:
                scores[item.id] = self.score(item)["iig"]
                bar.update(1)
        finally:
            bar.close()
        best = set(sorted(scores, key=lambda i: (-scores[i], i))[: self.options.iig_top_k])
        return [item for item in items if item.id in best]

    def score(self, item: Item) -> dict[str, float]:
        """{"iig", "logp"} of the row's answer (memoised: computed once per row and build)."""
        def compute() -> dict[str, float]:
            self.setup()
            iig, logp = self.policy.iig(self.policy.feature(item.data["messages"], item.data["response"], item.data))
            return {"iig": iig, "logp": logp}

        return self.ctx.memo.get(f"iig/{item.id}", compute)

    def process(self, item: Item) -> ItemResult:
        o, row, policy = self.options, item.data, self.policy
        score = self.score(item)
        if o.select == "threshold" and score["iig"] < o.iig_threshold:
            raise Reject("low_iig", f"IIG {score['iig']:.4f} < --iig_threshold {o.iig_threshold}", iig=score["iig"])
        if len(row["images"]) != 1 or row["videos"] or row["audios"]:
            kinds = ", ".join(f"{len(row[k])} {k}" for k in MEDIA_KINDS if row[k])
            raise Reject("no_image" if not row["images"] else "unsupported_media",
                         f"the {o.negative} negative perturbs the one image of an image row; the row has {kinds}")
        chosen = policy.feature(row["messages"], row["response"], row)
        seed = self.ctx.seed_of(item.id, o.negative)
        if o.negative == "adversarial":
            _, perturbed = policy.pgd(chosen, o.pgd_epsilon, o.pgd_step_size, o.pgd_steps, o.pgd_random_start, seed)
        else:
            _, perturbed = policy.noise(chosen, o.noise_std, seed)
        name = safe_name(item.id)
        perturbed_path = save_png(self.ctx.media_dir / o.negative / f"{name}.png", perturbed)
        load_image(perturbed_path)  # the file reads back
        on_perturbed = {**row, "images": [str(perturbed_path)]}
        rejected = policy.generate(row["messages"], on_perturbed, o.temperature, o.max_tokens, self.ctx.seed_of(item.id, "y_l"))
        if not rejected:
            raise Reject("empty_answer", "the model wrote nothing for the perturbed image")
        if rejected.strip() == row["response"].strip():
            raise Reject("identical_answers", "y_l sampled from the perturbed image equals y_w")
        with policy.lock:
            perturbed_logp = policy.logp(policy.batch(policy.feature(row["messages"], row["response"], on_perturbed)))
        rejected_iig, _ = policy.iig(policy.feature(row["messages"], rejected, row))
        image = self.ctx.place(row["images"][0], f"images/{name}{Path(row['images'][0]).suffix}")
        out = {
            "conversations": [{"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]} for m in row["messages"]],
            "chosen": {"from": "gpt", "value": row["response"]},
            "rejected": {"from": "gpt", "value": rejected},
            "images": [image],
            "perturbed_images": [self.ctx.rel(perturbed_path)],
            "negative": o.negative,
            "iig": round(score["iig"], 6),
            "rejected_iig": round(rejected_iig, 6),
            "chosen_logp": round(score["logp"], 6),
            "chosen_logp_perturbed": round(perturbed_logp, 6),
        }
        return ItemResult(rows=[out])
