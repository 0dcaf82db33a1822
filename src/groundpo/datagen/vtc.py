"""``groundpo-data vtc``: JoMPO's Visual-Textual Contrast pairs (seed 001, Sec. 4 and App. D).

1. CLIP-blind pairs: images whose CLIP embeddings are nearly the same (cosine > ``--clip_threshold``,
   0.95) while their DINOv2 embeddings differ (cosine < ``--dino_threshold``, 0.6). Embeddings come
   from local transformers models (``--clip_model``, ``--dino_model``), computed in batches and
   cached in chunks (a killed run keeps the chunks it finished). The search runs in blocks of
   ``--block_size`` query images against all images with a top-k per query (``--top_k``), so the
   memory is ``block_size x n_images`` similarities: 100k images fit. Each image joins at most
   ``--max_pairs_per_image`` pairs (largest CLIP-minus-DINOv2 gap first). The pairs are written to
   ``output_dir/pairs.jsonl``; ``--limit 0`` stops there, and ``--pairs`` reuses such a file (mine
   once, then build shards on several machines from the same pairs).
2. Contrast type: a VLM endpoint sees both images and scores each of the nine contrast types of
   Tong et al. (2024) for importance and hallucination likelihood, with rationales; the type with
   the highest sum is the pair's type.
3. Responses: for each task in ``--tasks`` the VLM writes one response per image in a shared style
   that differs only where the images differ: ``description`` (a detailed description; the prompt
   comes from ``prompts/vtc/description_questions.lines``) and ``vqa`` (a question about the
   contrast and the answer for each image).

Rows (the ``jompo`` stage): ``<image>`` + prompt, ``images`` = [m_w], ``rejected_images`` = [m_l],
chosen = y_w (the response for m_w), rejected = y_l (the response for m_l), plus ``contrast_type``,
``task``, ``clip_similarity``, ``dino_similarity``.

Requests per pair: 1 contrast-type request + 1 per task (defaults: 3).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from .annotate import read_entries
from .backends import ImageEmbedder, image_part, require_different
from .errors import InputError, Reject
from .media import IMAGE_EXTENSIONS, list_files, load_image
from .options import CommonOptions, VisionEndpointOptions, check_subset, opt
from .runner import Item, ItemResult, Pipeline, safe_name, sharegpt_row

# Tong et al. (2024)'s nine visual patterns, as JoMPO App. D.1 lists them
CONTRAST_TYPES = (
    "Orientation and Direction",
    "Presence of Specific Features",
    "State and Condition",
    "Quantity and Count",
    "Positional and Relational Context",
    "Color and Appearance",
    "Structural and Physical Characteristics",
    "Text and Symbols",
    "Viewpoint and Perspective",
)
TASKS = ("description", "vqa")


# ---------------------------------------------------------------- the pair search
def mine_pairs(
    clip: np.ndarray,
    dino: np.ndarray,
    clip_threshold: float = 0.95,
    dino_threshold: float = 0.6,
    block_size: int = 1024,
    top_k: int = 32,
    max_pairs_per_image: int = 1,
    device: str = "cpu",
) -> list[tuple[int, int, float, float]]:
    """``(i, j, clip_cos, dino_cos)`` with i < j, clip_cos > clip_threshold and dino_cos < dino_threshold.

    ``clip`` and ``dino`` are L2-normalised ``[n, d]`` embeddings of the same images. Each query
    block is compared with every image; per query only its ``top_k`` most CLIP-similar later images
    are candidates. Pairs are taken greedily by the gap clip_cos - dino_cos, each image at most
    ``max_pairs_per_image`` times, and returned sorted by (i, j).
    """
    import torch

    c = torch.as_tensor(clip, dtype=torch.float32, device=device)
    d = torch.as_tensor(dino, dtype=torch.float32, device=device)
    n = c.shape[0]
    found: list[tuple[int, int, float, float]] = []
    columns = torch.arange(n, device=device)
    for start in range(0, n, block_size):
        rows = torch.arange(start, min(start + block_size, n), device=device)
        sims = c[rows] @ c.T
        sims.masked_fill_(columns[None, :] <= rows[:, None], float("-inf"))  # each unordered pair once
        vals, idx = sims.topk(min(top_k, n), dim=1)
        keep = vals > clip_threshold
        ii, jj, cv = rows[:, None].expand_as(idx)[keep], idx[keep], vals[keep]
        dv = (d[ii] * d[jj]).sum(-1)
        ok = dv < dino_threshold
        found += zip(ii[ok].tolist(), jj[ok].tolist(), cv[ok].tolist(), dv[ok].tolist())
    found.sort(key=lambda f: (-(f[2] - f[3]), f[0], f[1]))
    uses: Counter = Counter()
    kept = []
    for i, j, cv, dv in found:
        if uses[i] < max_pairs_per_image and uses[j] < max_pairs_per_image:
            uses[i] += 1
            uses[j] += 1
            kept.append((i, j, cv, dv))
    return sorted(kept)


def embed_cached(paths: list[str], embedder_factory, cache: Path, name: str, batch: int, chunk: int = 4096) -> np.ndarray:
    """Embeddings of ``paths`` in chunks of ``chunk`` images, each chunk saved once under ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    listing = cache / f"{name}-images.json"
    if not listing.exists() or json.loads(listing.read_text()) != paths:
        for old in cache.glob(f"{name}-*.npy"):
            old.unlink()
        listing.write_text(json.dumps(paths))
    parts = []
    embedder = None
    for k, start in enumerate(range(0, len(paths), chunk)):
        file = cache / f"{name}-{k:05d}.npy"
        if not file.exists():
            embedder = embedder or embedder_factory()
            vectors = []
            for b in range(start, min(start + chunk, len(paths)), batch):
                vectors.append(embedder.embed([load_image(p) for p in paths[b : min(b + batch, start + chunk, len(paths))]]))
            tmp = file.with_name(f".{file.stem}.tmp.npy")
            np.save(tmp, np.concatenate(vectors))
            tmp.replace(file)
        parts.append(np.load(file))
    return np.concatenate(parts)


# ---------------------------------------------------------------- answer schemas
class TypeScore(BaseModel):
    type: str
    importance: float = Field(ge=0, le=10)
    importance_reason: str = ""
    hallucination_likelihood: float = Field(ge=0, le=10)
    likelihood_reason: str = ""


class ContrastScores(BaseModel):
    types: list[TypeScore]


class Descriptions(BaseModel):
    description_a: str = Field(min_length=1)
    description_b: str = Field(min_length=1)


class ContrastVQA(BaseModel):
    question: str = Field(min_length=1)
    answer_a: str = Field(min_length=1)
    answer_b: str = Field(min_length=1)


def _canonical_type(name: str) -> str | None:
    key = " ".join(name.lower().replace("&", "and").split())
    for t in CONTRAST_TYPES:
        if key == t.lower() or (key and t.lower().startswith(key)):
            return t
    return None


def check_scores(answer: ContrastScores) -> None:
    names = [_canonical_type(s.type) for s in answer.types]
    unknown = [s.type for s, n in zip(answer.types, names) if n is None]
    if unknown:
        raise Reject("schema", f"unknown contrast type(s) {unknown}; expected the nine listed")
    missing = [t for t in CONTRAST_TYPES if t not in names]
    repeated = [t for t, k in Counter(names).items() if k > 1]
    if missing or repeated:
        raise Reject("schema", f"need each of the nine types once; missing {missing}, repeated {repeated}")


def pick_type(answer: ContrastScores) -> tuple[str, float, float]:
    """The type with the highest importance + hallucination likelihood (ties: taxonomy order)."""
    scores = {_canonical_type(s.type): s for s in answer.types}
    best = max(CONTRAST_TYPES, key=lambda t: (scores[t].importance + scores[t].hallucination_likelihood, -CONTRAST_TYPES.index(t)))
    return best, scores[best].importance, scores[best].hallucination_likelihood


# ---------------------------------------------------------------- the pipeline
@dataclass(kw_only=True)
class VTCOptions(VisionEndpointOptions, CommonOptions):
    images: str = opt(help='folder of images (recursive; id = relative path) or a JSON/JSONL list of {"id", "image"}')
    clip_model: str | None = opt(None, help="local CLIP model folder (e.g. openai/clip-vit-large-patch14 downloaded)")
    dino_model: str | None = opt(None, help="local DINOv2 model folder (e.g. facebook/dinov2-large downloaded)")
    pairs: str | None = opt(None, help="pairs.jsonl of an earlier search: skip embedding and search")
    clip_threshold: float = opt(0.95, help="keep pairs with CLIP cosine above this")
    dino_threshold: float = opt(0.6, help="keep pairs with DINOv2 cosine below this")
    block_size: int = opt(1024, help="query images per block of the search (memory: block_size x n_images floats)")
    top_k: int = opt(32, help="candidates per query image (its most CLIP-similar images)")
    max_pairs_per_image: int = opt(1, help="pairs an image may join")
    embed_batch_size: int = opt(64, help="images per embedding batch")
    tasks: list[str] = opt(["description", "vqa"], help="response tasks: description, vqa")
    image_size: int = opt(768, help="longest side of the images sent to the VLM, in pixels")

    def check(self) -> None:
        super().check()
        check_subset("tasks", self.tasks, TASKS)
        if not self.pairs and not (self.clip_model and self.dino_model):
            raise InputError("give --clip_model and --dino_model (local folders) to search pairs, or --pairs from an earlier search")
        for name in ("block_size", "top_k", "max_pairs_per_image", "embed_batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name} must be >= 1")


def read_images(source: str) -> dict[str, str]:
    """``id -> path`` of a folder or a list file, in a stable order."""
    path = Path(source)
    if path.is_dir():
        return {p.relative_to(path).as_posix(): str(p) for p in list_files(path, IMAGE_EXTENSIONS)}
    if not path.is_file():
        raise InputError(f"--images: {source!r} is neither a folder nor a list file")
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = {"image": line.strip()}
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise InputError(f"{path}:{n}: field 'image' missing (each line: a path or {{\"id\", \"image\"}})")
        image = entry["image"] if Path(entry["image"]).is_absolute() else str(path.parent / entry["image"])
        key = str(entry.get("id") or entry["image"])
        if key in out:
            raise InputError(f"{path}:{n}: image id {key!r} appears twice")
        out[key] = image
    missing = [f"{k}: {p}" for k, p in out.items() if not Path(p).is_file()]
    if missing:
        raise InputError(f"--images: {len(missing)} image file(s) not found:\n  " + "\n  ".join(missing[:20]))
    return out


class VTCPipeline(Pipeline):
    name = "vtc"
    stage = "jompo"
    description = "JoMPO's VTC pairs: CLIP-blind image pairs, contrast type by a VLM, one response per image"
    options_class = VTCOptions
    columns = {"images": "images", "rejected_images": "rejected_images"}

    def items(self) -> list[Item]:
        o = self.options
        self.images = read_images(o.images)
        pairs_file = Path(o.pairs) if o.pairs else self.ctx.output_dir / "pairs.jsonl"
        if o.pairs:
            pairs = self._read_pairs(pairs_file)
        else:
            pairs = self._mine()
            pairs_file.write_text("".join(json.dumps(p, sort_keys=True) + "\n" for p in pairs), encoding="utf-8")
        return [Item(f"{p['a']}|{p['b']}", p) for p in pairs]

    def roles(self) -> list[str]:
        return ["vision"]

    def _mine(self) -> list[dict[str, Any]]:
        from .backends import resolve_device

        o = self.options
        ids = list(self.images)
        paths = [self.images[i] for i in ids]
        clip = embed_cached(paths, lambda: ImageEmbedder(o.clip_model, o.device, "clip_model", o.embed_batch_size),
                            self.ctx.cache_dir, "clip", o.embed_batch_size)
        dino = embed_cached(paths, lambda: ImageEmbedder(o.dino_model, o.device, "dino_model", o.embed_batch_size),
                            self.ctx.cache_dir, "dino", o.embed_batch_size)
        found = mine_pairs(clip, dino, o.clip_threshold, o.dino_threshold, o.block_size, o.top_k, o.max_pairs_per_image,
                           device=resolve_device(o.device))
        return [{"a": ids[i], "b": ids[j], "clip": round(cv, 6), "dino": round(dv, 6)} for i, j, cv, dv in found]

    def _read_pairs(self, path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            raise InputError(f"--pairs: file {path} not found")
        pairs = []
        for where, pair in read_entries(path):
            for side in ("a", "b"):
                if pair.get(side) not in self.images:
                    raise InputError(f"--pairs {where}: field {side!r}: image id {pair.get(side)!r} is not in --images")
            pairs.append(pair)
        return pairs

    def process(self, item: Item) -> ItemResult:
        o = self.options
        a, b = self.images[item.data["a"]], self.images[item.data["b"]]
        parts = [image_part(load_image(a), o.image_size), image_part(load_image(b), o.image_size)]
        chat = self.ctx.chat("vision")
        scores = chat.ask_json(
            self.ctx.prompts.messages("contrast_type", media=parts, types="\n".join(f"- {t}" for t in CONTRAST_TYPES)),
            ContrastScores, "contrast_type", check=check_scores,
        )
        contrast, importance, likelihood = pick_type(scores)
        images = {
            "images": [self.ctx.place(a, f"images/{safe_name(item.data['a'])}{Path(a).suffix}")],
            "rejected_images": [self.ctx.place(b, f"images/{safe_name(item.data['b'])}{Path(b).suffix}")],
        }
        columns = dict(
            contrast_type=contrast, importance=importance, hallucination_likelihood=likelihood,
            clip_similarity=item.data.get("clip"), dino_similarity=item.data.get("dino"), image_sources=[item.data["a"], item.data["b"]],
        )
        result = ItemResult()
        for task in o.tasks:
            try:
                if task == "description":
                    question = self.ctx.rng(item.id, "question").choice(self.ctx.prompts.lines("description_questions"))
                    answer = chat.ask_json(
                        self.ctx.prompts.messages("description", media=parts, contrast=contrast, question=question),
                        Descriptions, "description", check=lambda r: require_different(r.description_a, r.description_b),
                    )
                    chosen, rejected = answer.description_a, answer.description_b
                else:
                    answer = chat.ask_json(
                        self.ctx.prompts.messages("vqa", media=parts, contrast=contrast),
                        ContrastVQA, "vqa", check=lambda r: require_different(r.answer_a, r.answer_b),
                    )
                    question, chosen, rejected = answer.question.strip(), answer.answer_a, answer.answer_b
            except Reject as reject:
                result.rejects.append({**reject.as_record(), "task": task})
                continue
            result.rows.append(sharegpt_row(f"<image>{question}", chosen.strip(), rejected.strip(), task=task, **images, **columns))
        return result
