"""``groundpo-data mfpo``: MFPO's region-perturbed images (seed 004, Sec. 3.1).

From a text preference dataset (RLHF-V in the paper: image, prompt, chosen y_w, rejected y_l):

1. Keywords: the top-K words of y_w by a multipartite keyword graph (Boudin 2018, as Sec. 3.1
   describes it), built in :func:`keyword_graph` with networkx and ranked by weighted PageRank:
   candidates are the content words of y_w; candidates of one *topic* (same stem, or cosine of
   their text embeddings >= ``--topic_threshold``) are not linked; two candidates k_i, k_j of
   different topics get the positional weight θ_ij = Σ Σ 1 / (1 + |l_i - l_j|^φ) over their
   positions plus the semantic weight σ_ij = γ·S(k_i, k_j) (cosine of ``--text_model``
   embeddings; 0 without one); the first candidate of each topic gets the contextual boost of
   Boudin's weight adjustment; every edge into k_i is decayed by κ_i = exp(-λ·p_i) (p_i its first
   position). The seed leaves φ, γ, λ, α_page and K to a supplement we do not have: the
   defaults are documented options. One keyword per topic is kept.
2. Regions: each keyword to boxes by a text-prompted detector (``--grounder detector``: Grounding
   DINO / OWL-ViT from a path), by a VLM endpoint that answers with boxes (``--grounder endpoint``:
   Qwen2.5-VL and similar), or from a file (``--grounder boxes``); ``--segmenter_model`` (SAM)
   turns boxes into masks (kept inside their box).
3. Perturbation: forward diffusion noise at step ``--diffusion_steps`` (500, VCD's schedule, the
   same as the ``mfpo`` stage's on-the-fly m') inside the regions, the whole image when no region
   is found; pixels are scaled to [-1, 1], noised with a seed from the row id, saved as PNG.

Rows (the ``mfpo`` stage): the source prompt with ``<image>``, chosen y_w, rejected y_l, ``images``
= [m], ``rejected_images`` = [m'], ``region`` = the bounding box of all regions in pixels
(absent when the whole image was perturbed), ``keywords`` and ``regions`` (each keyword's box).

Requests per row: none with ``--grounder detector`` or ``boxes``; one with ``--grounder endpoint``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel

from .backends import BoxSegmenter, TextEmbedder, ZeroShotDetector, image_part
from .errors import InputError, Reject
from .media import load_image, save_png
from .options import CommonOptions, VisionEndpointOptions, opt
from .runner import Item, ItemResult, Pipeline, safe_name

STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here hers
    herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once
    only or other our ours ourselves out over own same she should so some such than that the their theirs them themselves
    then there these they this those through to too under until up very was we were what when where which while who whom
    why will with would you your yours yourself yourselves appears appear seems seem shows show shown see seen visible
    image picture photo photograph scene view looks look like one two several many also can cannot it's there's""".split()
)


# ---------------------------------------------------------------- keyword selection (Sec. 3.1)
@dataclass(frozen=True)
class KeywordSettings:
    phi: float = 1.0  # φ: decay of the positional weight with distance
    gamma: float = 1.0  # γ: weight of the semantic similarity
    lam: float = 0.05  # λ: positional decay κ_i = exp(-λ·p_i)
    context: float = 1.1  # Boudin's α of the weight adjustment for a topic's first candidate
    alpha_page: float = 0.85  # α_page: PageRank damping
    topic_threshold: float = 0.74  # candidates with embedding cosine >= this share a topic


def candidates(text: str) -> dict[str, list[int]]:
    """Content words of ``text`` (lower case) -> their 1-based token positions, in first-occurrence order."""
    positions: dict[str, list[int]] = {}
    for pos, token in enumerate(re.findall(r"[a-z][a-z'-]*[a-z]|[a-z]", text.lower()), 1):
        if token not in STOPWORDS and len(token) > 1:
            positions.setdefault(token, []).append(pos)
    return positions


def _stems(word: str) -> set[str]:
    """The word and what it is with a plural ending taken off (circles -> circle, boxes -> box, berries -> berry)."""
    out = {word}
    for suffix, repl in (("ies", "y"), ("es", ""), ("s", "")):
        if word.endswith(suffix) and not word.endswith("ss") and len(word) - len(suffix) >= 3:
            out.add(word[: -len(suffix)] + repl)
    return out


def topics_of(words: list[str], similarity: np.ndarray, threshold: float) -> list[int]:
    """Topic index per word: one topic per connected group of same-stem or similar (>= threshold) words."""
    parent = list(range(len(words)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(words)):
        for j in range(i + 1, len(words)):
            if _stems(words[i]) & _stems(words[j]) or similarity[i, j] >= threshold:
                parent[find(j)] = find(i)
    roots: dict[int, int] = {}
    return [roots.setdefault(find(i), len(roots)) for i in range(len(words))]


def keyword_graph(text: str, embed: Callable[[list[str]], np.ndarray] | None = None, settings: KeywordSettings = KeywordSettings()):
    """The multipartite keyword graph of ``text`` (a networkx DiGraph; edge j -> i has weight ω_ij).

    Nodes carry ``positions`` and ``topic``. ω_ij = τ_ij·κ_i with μ_ij = θ_ij + γ·S_ij, τ_ij = μ_ij
    plus, when k_i is the first candidate of its topic, α·e^{1/p_i}·Σ_{k in T(j), k != j} μ_ik, and
    κ_i = exp(-λ·p_i).
    """
    import networkx as nx

    positions = candidates(text)
    words = list(positions)
    if embed is not None and words:
        vectors = embed(words)
        similarity = np.clip(vectors @ vectors.T, -1.0, 1.0)
        topic_sim = similarity
    else:
        similarity = np.zeros((len(words), len(words)))
        topic_sim = np.eye(len(words))
    topics = topics_of(words, topic_sim, settings.topic_threshold)
    first = {p[0]: w for w, p in positions.items()}
    first_of_topic = {}
    for pos in sorted(first):
        first_of_topic.setdefault(topics[words.index(first[pos])], first[pos])
    n = len(words)
    mu = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if topics[i] != topics[j]:
                theta = sum(1.0 / (1.0 + abs(li - lj) ** settings.phi) for li in positions[words[i]] for lj in positions[words[j]])
                mu[i, j] = theta + settings.gamma * similarity[i, j]
    graph = nx.DiGraph()
    for i, w in enumerate(words):
        graph.add_node(w, positions=positions[w], topic=topics[i])
    for i in range(n):
        p_i = positions[words[i]][0]
        boost = first_of_topic[topics[i]] == words[i]
        for j in range(n):
            if topics[i] == topics[j]:
                continue
            tau = mu[i, j]
            if boost:
                tau += settings.context * math.exp(1.0 / p_i) * sum(mu[i, k] for k in range(n) if k != j and topics[k] == topics[j])
            omega = tau * math.exp(-settings.lam * p_i)
            if omega > 0:
                graph.add_edge(words[j], words[i], weight=omega)
    return graph


def rank_keywords(text: str, top_k: int, embed=None, settings: KeywordSettings = KeywordSettings()) -> list[tuple[str, float]]:
    """The top-K keywords of ``text`` with their weighted-PageRank scores, one per topic, best first."""
    import networkx as nx

    graph = keyword_graph(text, embed, settings)
    if graph.number_of_nodes() == 0:
        return []
    if graph.number_of_edges():
        scores = nx.pagerank(graph, alpha=settings.alpha_page, weight="weight")
    else:
        scores = dict.fromkeys(graph.nodes, 1.0 / graph.number_of_nodes())
    order = sorted(graph.nodes, key=lambda w: (-scores[w], graph.nodes[w]["positions"][0]))
    picked, seen_topics = [], set()
    for word in order:
        if graph.nodes[word]["topic"] not in seen_topics:
            seen_topics.add(graph.nodes[word]["topic"])
            picked.append((word, float(scores[word])))
        if len(picked) == top_k:
            break
    return picked


# ---------------------------------------------------------------- perturbation
def diffusion_perturb(pixels: np.ndarray, mask: np.ndarray | None, step: int, seed: int) -> np.ndarray:
    """Forward diffusion noise at ``step`` (VCD schedule) inside ``mask`` (everywhere when None), uint8 in and out."""
    from ..corruption import vcd_alpha_bar

    alpha_bar = vcd_alpha_bar(step)
    x0 = pixels.astype(np.float64) / 127.5 - 1.0
    noise = np.random.default_rng(seed).standard_normal(x0.shape)
    xt = math.sqrt(alpha_bar) * x0 + math.sqrt(1.0 - alpha_bar) * noise
    out = xt if mask is None else np.where(mask[..., None], xt, x0)
    return np.clip(np.round((out + 1.0) * 127.5), 0, 255).astype(np.uint8)


def clip_box(box: list[float], width: int, height: int) -> list[int] | None:
    """A box clipped to the image, in whole pixels (x1, y1 exclusive); None when nothing is left."""
    x0, y0, x1, y1 = box
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    out = [max(0, math.floor(x0)), max(0, math.floor(y0)), min(width, math.ceil(x1)), min(height, math.ceil(y1))]
    return out if out[2] > out[0] and out[3] > out[1] else None


# ---------------------------------------------------------------- endpoint grounding
class Region(BaseModel):
    keyword: str
    box: list[float] | None = None


class Grounding(BaseModel):
    regions: list[Region]


BOX_FORMATS = {
    "pixel": "in pixels of this image: [x0, y0, x1, y1] with the origin at the top-left corner",
    "relative": "as fractions of the image width and height: [x0, y0, x1, y1], each between 0 and 1",
    "relative1000": "on a 0-1000 grid over the image width and height: [x0, y0, x1, y1]",
}


def to_pixels(box: list[float], fmt: str, width: int, height: int) -> list[float]:
    scale = {"pixel": (1.0, 1.0), "relative": (width, height), "relative1000": (width / 1000.0, height / 1000.0)}[fmt]
    return [box[0] * scale[0], box[1] * scale[1], box[2] * scale[0], box[3] * scale[1]]


# ---------------------------------------------------------------- source rows
def _text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("value", value.get("content"))
    return value if isinstance(value, str) and value.strip() else None


def read_preference_rows(path: str, media_dir: str | None) -> list[dict[str, Any]]:
    """Rows ``{id, messages, chosen, rejected, image}`` of a sharegpt / alpaca / flat preference file."""
    from .annotate import read_source

    base, entries = read_source(path, media_dir)
    rows = []
    for n, (where, raw) in enumerate(entries):
        chosen, rejected = _text(raw.get("chosen")), _text(raw.get("rejected"))
        for name, value in (("chosen", chosen), ("rejected", rejected)):
            if value is None:
                raise InputError(f"--source {where}: field {name!r} missing or empty")
        images = raw.get("images", raw.get("image"))
        images = [images] if isinstance(images, str) else images
        if not isinstance(images, list) or len(images) != 1 or not isinstance(images[0], str):
            raise InputError(f"--source {where}: field 'images': MFPO perturbs one image per row, got {images!r}")
        image = images[0] if Path(images[0]).is_absolute() else str(base / images[0])
        if not Path(image).is_file():
            raise InputError(f"--source {where}: field 'images': image not found: {image}")
        if isinstance(raw.get("conversations"), list):
            messages = []
            for m in raw["conversations"]:
                role = m.get("from", m.get("role"))
                messages.append({"from": "human" if role in ("human", "user") else "gpt", "value": _text(m) or ""})
        else:
            prompt = _text(raw.get("prompt")) or _text(raw.get("question")) or _text(raw.get("instruction"))
            if prompt is None:
                raise InputError(f"--source {where}: no prompt (conversations, prompt, question or instruction)")
            if _text(raw.get("input")):
                prompt += "\n" + raw["input"]
            messages = [{"from": "human", "value": prompt}]
        if not messages or messages[-1]["from"] != "human":
            raise InputError(f"--source {where}: field 'conversations': the prompt must end with a human turn")
        tags = sum(m["value"].count("<image>") for m in messages)
        if tags == 0:
            messages[0] = {**messages[0], "value": "<image>" + messages[0]["value"]}
        elif tags > 1:
            raise InputError(f"--source {where}: field 'conversations': {tags} <image> tags for one image")
        rows.append({"id": str(raw.get("id") or f"row{n:06d}"), "messages": messages, "chosen": chosen,
                     "rejected": rejected, "image": image})
    return rows


def read_box_file(path: str) -> dict[str, list[dict[str, Any]]]:
    """``row id or image path -> [{"keyword", "box"}]`` of a ``--boxes`` file (pixel boxes)."""
    from .annotate import read_entries

    file = Path(path)
    if not file.is_file():
        raise InputError(f"--boxes: file {path!r} not found")
    table = {}
    for where, entry in read_entries(file):
        key = entry.get("id") or entry.get("image")
        regions = entry.get("regions")
        if key is None or not isinstance(regions, list):
            raise InputError(f"--boxes {where}: expected {{\"id\" or \"image\", \"regions\": [{{\"keyword\", \"box\"}}]}}")
        for r in regions:
            box = r.get("box") if isinstance(r, dict) else None
            if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
                raise InputError(f"--boxes {where}: region {r!r}: 'box' must be [x0, y0, x1, y1] in pixels")
        table[str(key)] = regions
    return table


# ---------------------------------------------------------------- the pipeline
@dataclass(kw_only=True)
class MFPOOptions(VisionEndpointOptions, CommonOptions):
    source: str = opt(help="text preference rows (JSON/JSONL): LLaMA-Factory sharegpt or alpaca ranking rows, or "
                           '{"image", "question", "chosen", "rejected"}; one image each')
    media_dir: str | None = opt(None, help="folder that relative image paths start from (default: the source file's folder)")
    top_k: int = opt(3, help="K: keywords of the chosen answer mapped to regions")
    text_model: str | None = opt(None, help="local text embedding model for the semantic edge weight and topics (none: positional only)")
    keyword_phi: float = opt(1.0, help="φ: decay of the positional edge weight with distance")
    keyword_gamma: float = opt(1.0, help="γ: weight of the semantic edge weight")
    keyword_lambda: float = opt(0.05, help="λ: positional decay exp(-λ·p) of edges into a word first seen at position p")
    keyword_context: float = opt(1.1, help="Boudin's weight adjustment for the first word of each topic (0: off)")
    page_alpha: float = opt(0.85, help="α_page: PageRank damping")
    topic_threshold: float = opt(0.74, help="words whose embedding cosine reaches this share a topic")
    grounder: str = opt("detector", help="keywords -> boxes: detector (--detector_model), endpoint (a VLM), boxes (--boxes file)")
    detector_model: str | None = opt(None, help="local zero-shot detector folder (Grounding DINO, OWL-ViT, OWLv2)")
    box_threshold: float = opt(0.3, help="detector score a box needs")
    boxes: str | None = opt(None, help='--grounder boxes: JSON/JSONL of {"id" or "image", "regions": [{"keyword", "box"}]} (pixels)')
    box_format: str = opt("pixel", help="boxes the endpoint answers with: pixel, relative (0-1), relative1000 (0-1000, Qwen2-VL)")
    segmenter_model: str | None = opt(None, help="local box-prompted segmenter (SAM) refining boxes into masks")
    diffusion_steps: int = opt(500, help="t of the forward diffusion noise (VCD schedule, 0-999; the paper's best: 500)")
    image_size: int = opt(1024, help="longest side of the image sent to the endpoint (boxes are mapped back)")

    def check(self) -> None:
        super().check()
        if self.grounder not in ("detector", "endpoint", "boxes"):
            raise InputError(f"--grounder must be detector, endpoint or boxes, got {self.grounder!r}")
        if self.grounder == "detector" and not self.detector_model:
            raise InputError("--grounder detector needs --detector_model (a local Grounding DINO / OWL-ViT folder)")
        if self.grounder == "boxes" and not self.boxes:
            raise InputError("--grounder boxes needs --boxes")
        if self.box_format not in BOX_FORMATS:
            raise InputError(f"--box_format must be one of {', '.join(BOX_FORMATS)}, got {self.box_format!r}")
        if not 0 <= self.diffusion_steps < 1000:
            raise InputError(f"--diffusion_steps must be in [0, 999], got {self.diffusion_steps}")
        if self.top_k < 1:
            raise InputError("--top_k must be >= 1")

    def keyword_settings(self) -> KeywordSettings:
        return KeywordSettings(self.keyword_phi, self.keyword_gamma, self.keyword_lambda, self.keyword_context,
                               self.page_alpha, self.topic_threshold)


class MFPOPipeline(Pipeline):
    name = "mfpo"
    stage = "mfpo"
    description = "MFPO image preference data: keyword graph -> regions -> diffusion noise inside them"
    options_class = MFPOOptions
    columns = {"images": "images", "rejected_images": "rejected_images", "region": "region"}

    def items(self) -> list[Item]:
        rows = read_preference_rows(self.options.source, self.options.media_dir)
        self.box_table = read_box_file(self.options.boxes) if self.options.grounder == "boxes" else {}
        return [Item(row["id"], row) for row in rows]

    def roles(self) -> list[str]:
        return ["vision"] if self.options.grounder == "endpoint" else []

    def setup(self) -> None:
        o = self.options
        self.embedder = TextEmbedder(o.text_model, o.device) if o.text_model else None
        self.detector = ZeroShotDetector(o.detector_model, o.device, o.box_threshold) if o.grounder == "detector" else None
        self.segmenter = BoxSegmenter(o.segmenter_model, o.device) if o.segmenter_model else None

    def process(self, item: Item) -> ItemResult:
        o = self.options
        row = item.data
        image = load_image(row["image"])
        embed = self.embedder.embed if self.embedder else None
        keywords = [w for w, _ in rank_keywords(row["chosen"], o.top_k, embed, o.keyword_settings())]
        regions = self._regions(item, image, keywords)
        mask = None
        if regions:
            boxes = [r["box"] for r in regions]
            masks = self.segmenter.masks(image, boxes) if self.segmenter else [None] * len(boxes)
            mask = np.zeros((image.height, image.width), dtype=bool)
            for box, m in zip(boxes, masks):
                inside = np.zeros_like(mask)
                inside[box[1] : box[3], box[0] : box[2]] = True
                refined = inside & m if m is not None else inside
                mask |= refined if refined.any() else inside  # a segmenter that finds nothing in the box: the box
            if not mask.any():
                mask = None
        perturbed = diffusion_perturb(np.asarray(image), mask, o.diffusion_steps, self.ctx.seed_of(item.id, "noise"))
        name = safe_name(item.id)
        rejected_image = self.ctx.rel(save_png(self.ctx.media_dir / "perturbed" / f"{name}.png", perturbed))
        region = None
        if mask is not None:
            ys, xs = np.nonzero(mask)
            region = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        return ItemResult(rows=[{
            "conversations": row["messages"],
            "chosen": {"from": "gpt", "value": row["chosen"]},
            "rejected": {"from": "gpt", "value": row["rejected"]},
            "images": [self.ctx.place(row["image"], f"images/{name}{Path(row['image']).suffix}")],
            "rejected_images": [rejected_image],
            **({"region": region} if region else {}),
            "keywords": keywords,
            "regions": regions,
            "perturbed_fraction": round(float(mask.mean()) if mask is not None else 1.0, 4),
        }])

    def _regions(self, item: Item, image, keywords: list[str]) -> list[dict[str, Any]]:
        """``[{"keyword", "box"}]`` in whole pixels, at most one box per keyword (the best one)."""
        o = self.options
        width, height = image.size
        found: list[tuple[str, list[float]]] = []
        if not keywords:
            return []
        if o.grounder == "detector":
            seen = set()
            for label, box, _ in self.detector.detect(image, keywords):
                if label not in seen:
                    seen.add(label)
                    found.append((label, box))
        elif o.grounder == "boxes":
            entries = self.box_table.get(item.id, self.box_table.get(item.data["image"], []))
            found = [(r.get("keyword", ""), r["box"]) for r in entries]
        else:
            found = self._ask_boxes(image, keywords)
        out = []
        for keyword, box in found:
            clipped = clip_box(box, width, height)
            if clipped is not None:
                out.append({"keyword": keyword, "box": clipped})
        return out

    def _ask_boxes(self, image, keywords: list[str]) -> list[tuple[str, list[float]]]:
        o = self.options
        part = image_part(image, o.image_size)
        sent_w, sent_h = image.size
        if max(image.size) > o.image_size:  # the endpoint sees the resized image
            scale = o.image_size / max(image.size)
            sent_w, sent_h = max(1, round(image.width * scale)), max(1, round(image.height * scale))

        def check(answer: Grounding) -> None:
            for r in answer.regions:
                if r.keyword not in keywords:
                    raise Reject("schema", f"region for {r.keyword!r}, which was not asked (asked: {keywords})")
                if r.box is not None and len(r.box) != 4:
                    raise Reject("schema", f"box of {r.keyword!r} must have 4 numbers, got {r.box}")

        answer = self.ctx.chat("vision").ask_json(
            self.ctx.prompts.messages(
                "ground", media=[part], keywords=json.dumps(keywords), width=sent_w, height=sent_h,
                box_format=BOX_FORMATS[o.box_format],
            ),
            Grounding, "ground", check=check,
        )
        sx, sy = image.width / sent_w, image.height / sent_h
        out = []
        for r in answer.regions:
            if r.box is not None:
                x0, y0, x1, y1 = to_pixels(r.box, o.box_format, sent_w, sent_h)
                out.append((r.keyword, [x0 * sx, y0 * sy, x1 * sx, y1 * sy]))
        return out
