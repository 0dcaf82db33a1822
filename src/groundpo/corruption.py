r"""Shape-preserving corruptions of processed media tensors, one registry, per model family.

A corruption transforms the already processed (normalised) tensors of one modality: nothing is
decoded again and no shape or token count changes, so the corrupted batch reuses the clean
batch's input ids and position ids. The MoD-DPO paper compares (Tab. 4):

- ``diffusion``: forward diffusion noise as in VCD (``vcd_add_noise.py``): 1000 steps,
  β_i = sigmoid(linspace(−6, 6, 1000))·(5e−3 − 1e−5) + 1e−5, ᾱ_t = Π_{i≤t}(1 − β_i),
  x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε. The paper's choice: t = 500 (√ᾱ ≈ 0.863, √(1−ᾱ) ≈ 0.505).
- ``gaussian``: x + σ·ε (OmniDPO's zero-mean Gaussian noise; σ = ``noise_std``).
- ``zeros``: the modality blanked out (the normalised mean).
- ``shuffle``: the units of a media item (visual patches, audio frames) randomly permuted.

Spatial corruptions see each visual item as images [frames, C, H, W] (Qwen's flattened patches
are un-patchified and re-patchified around them):

- ``crop``: mDPO's corrupted image, a random crop of ``crop_scale`` (1-20 %) of the area resized
  back to the full size (``RandomResizedCrop``); one crop per item, shared by policy and reference;
- ``region_diffusion``: MFPO's m', diffusion noise at ``diffusion_steps`` only inside the row's
  ``region`` (relative box), the whole image when the row has none.

Families say where a modality's items live in a collated batch:

- ``qwen2_omni`` (Qwen2.5-Omni): visual = rows of ``pixel_values`` (per image, ``image_grid_thw``)
  and ``pixel_values_videos`` (per video, ``video_grid_thw``); audio = ``input_features[i]``
  (mel × frames) inside ``feature_attention_mask``.
- ``minicpm_o`` (MiniCPM-o 2.6): visual = the slice tensors of the ``pixel_values`` lists; audio =
  ``audio_features[i]`` up to its length in ``audio_feature_lens``.

Items are owned by rows through the per-row media counts the collator records; media that no row
owns (the dummy image/audio upstream's collator inserts into batches without media) is never
touched. Noise is seeded per (seed, row, item), where the trainer derives ``seed`` from (training
seed, global step, rank) and each row is named by its stable row id, not its place in the batch:
the chosen and rejected copies of a row (rows r and r + B of a pairwise batch) get the same
corruption, policy and reference passes see the same corrupted tensors, and a run resumed from a
checkpoint draws exactly the noise the uninterrupted run drew.

Visual noise is drawn per *distinct* frame: Qwen's processors store a still image as two identical
temporal copies (``temporal_patch_size`` = 2), and both copies get the same noise, so the patch
embedding sees diffusion noise of the intended strength (√(1−ᾱ) ≈ 0.505 at t = 500), not the
≈ 0.36 that averaging two independent draws would leave.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

VISUAL, AUDIO = "visual", "audio"


@dataclass(frozen=True)
class CorruptionSpec:
    kind: str = "diffusion"
    diffusion_steps: int = 500
    noise_std: float = 1.0
    crop_scale: tuple[float, float] = (0.01, 0.2)


@dataclass(frozen=True)
class PatchLayout:
    """How Qwen-style processors flatten images into patch rows (from the image processor)."""

    merge_size: int = 2
    temporal_patch_size: int = 2
    channels: int = 3


# ---------------------------------------------------------------- element corruptions
# Each takes one media item as [units, ...] (only its valid part), a generator and the spec.
Corruption = Callable[[torch.Tensor, torch.Generator, CorruptionSpec], torch.Tensor]
CORRUPTIONS: dict[str, Corruption] = {}


def register_corruption(name: str) -> Callable[[Corruption], Corruption]:
    def wrap(fn: Corruption) -> Corruption:
        CORRUPTIONS[name] = fn
        return fn

    return wrap


def _noise(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=gen, device=x.device, dtype=torch.float32).to(x.dtype)


def vcd_alpha_bar(t: int) -> float:
    """ᾱ_t of VCD's 1000-step sigmoid schedule (t is 0-based, as ``alphas_bar_sqrt[t]`` in VCD)."""
    betas = torch.sigmoid(torch.linspace(-6, 6, 1000, dtype=torch.float64)) * (5e-3 - 1e-5) + 1e-5
    return float(torch.cumprod(1 - betas, dim=0)[t])


@register_corruption("diffusion")
def diffusion_noise(x: torch.Tensor, gen: torch.Generator, spec: CorruptionSpec) -> torch.Tensor:
    alpha_bar = vcd_alpha_bar(spec.diffusion_steps)
    return math.sqrt(alpha_bar) * x + math.sqrt(1 - alpha_bar) * _noise(x, gen)


@register_corruption("gaussian")
def gaussian_noise(x: torch.Tensor, gen: torch.Generator, spec: CorruptionSpec) -> torch.Tensor:
    return x + spec.noise_std * _noise(x, gen)


@register_corruption("zeros")
def zeros(x: torch.Tensor, gen: torch.Generator, spec: CorruptionSpec) -> torch.Tensor:
    return torch.zeros_like(x)


@register_corruption("shuffle")
def shuffle_units(x: torch.Tensor, gen: torch.Generator, spec: CorruptionSpec) -> torch.Tensor:
    order = torch.randperm(x.shape[0], generator=gen, device=x.device)
    return x[order]


# Spatial corruptions take images [N, C, H, W], a generator, the spec and the row's relative region
# (x0, y0, x1, y1 in [0, 1]) or None.
SpatialCorruption = Callable[[torch.Tensor, torch.Generator, CorruptionSpec, "list[float] | None"], torch.Tensor]
SPATIAL_CORRUPTIONS: dict[str, SpatialCorruption] = {}


def register_spatial_corruption(name: str) -> Callable[[SpatialCorruption], SpatialCorruption]:
    def wrap(fn: SpatialCorruption) -> SpatialCorruption:
        SPATIAL_CORRUPTIONS[name] = fn
        return fn

    return wrap


@register_spatial_corruption("crop")
def random_resized_crop(images: torch.Tensor, gen: torch.Generator, spec: CorruptionSpec, region) -> torch.Tensor:
    """mDPO: keep a random crop covering ``crop_scale`` of the area (aspect 3/4..4/3), resized back."""
    _, _, height, width = images.shape
    u = torch.rand(4, generator=gen, device=gen.device).tolist()
    area = height * width * (spec.crop_scale[0] + u[0] * (spec.crop_scale[1] - spec.crop_scale[0]))
    aspect = math.exp(math.log(3 / 4) + u[1] * (math.log(4 / 3) - math.log(3 / 4)))
    h = max(1, min(height, round(math.sqrt(area / aspect))))
    w = max(1, min(width, round(math.sqrt(area * aspect))))
    top, left = int(u[2] * (height - h + 1)), int(u[3] * (width - w + 1))
    crop = images[:, :, top : top + h, left : left + w].float()
    resized = torch.nn.functional.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
    return resized.to(images.dtype)


@register_spatial_corruption("region_diffusion")
def region_diffusion(images: torch.Tensor, gen: torch.Generator, spec: CorruptionSpec, region) -> torch.Tensor:
    """MFPO: diffusion noise inside ``region`` (the whole image when there is none)."""
    noisy = diffusion_noise(images, gen, spec)
    if region is None:
        return noisy
    _, _, height, width = images.shape
    x0, y0, x1, y1 = region
    mask = torch.zeros(height, width, dtype=torch.bool, device=images.device)
    mask[int(y0 * height) : max(int(y0 * height) + 1, math.ceil(y1 * height)),
         int(x0 * width) : max(int(x0 * width) + 1, math.ceil(x1 * width))] = True
    return torch.where(mask, noisy, images)


# ---------------------------------------------------------------- where items live
@dataclass
class MediaItem:
    """One image, video or audio of one row, as a [units, ...] tensor and a way to write it back."""

    side: str
    row: int
    index: int  # k-th item of this kind in its row (videos are offset by 1000 from images)
    read: Callable[[], torch.Tensor]
    write: Callable[[torch.Tensor], None]
    read_images: Callable[[], torch.Tensor] | None = None  # [N, C, H, W], visual items only
    write_images: Callable[[torch.Tensor], None] | None = None


def _row_spans(counts: list[int]) -> Iterator[tuple[int, int]]:
    """(row, k) for each owned item, in collation order."""
    for row, n in enumerate(counts):
        for k in range(n):
            yield row, k


def patches_to_images(patches: torch.Tensor, grid_thw, layout: PatchLayout) -> torch.Tensor:
    """Qwen2-VL patch rows [t·h·w, C·tp·P·P] of one item -> images [t·tp, C, h·P, w·P]."""
    t, h, w = (int(v) for v in grid_thw)
    m, tp, c = layout.merge_size, layout.temporal_patch_size, layout.channels
    p = int(round(math.sqrt(patches.shape[-1] / (c * tp))))
    x = patches.reshape(t, h // m, w // m, m, m, c, tp, p, p).permute(0, 6, 5, 1, 3, 7, 2, 4, 8)
    return x.reshape(t * tp, c, h * p, w * p)


def images_to_patches(images: torch.Tensor, grid_thw, layout: PatchLayout) -> torch.Tensor:
    """The inverse of :func:`patches_to_images`."""
    t, h, w = (int(v) for v in grid_thw)
    m, tp, c = layout.merge_size, layout.temporal_patch_size, layout.channels
    p = images.shape[-1] // w
    x = images.reshape(t, tp, c, h // m, m, p, w // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(t * h * w, c * tp * p * p)


def _qwen_items(batch: dict, counts: dict[str, list[int]], layout: PatchLayout) -> Iterator[MediaItem]:
    for key, grid_key, count_key, offset in (
        ("pixel_values", "image_grid_thw", "images", 0),
        ("pixel_values_videos", "video_grid_thw", "videos", 1000),
    ):
        if key not in batch or grid_key not in batch:
            continue
        grids = batch[grid_key].tolist()
        sizes = [t * h * w for t, h, w in grids]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        for item, (row, k) in enumerate(_row_spans(counts[count_key])):
            lo, hi = starts[item], starts[item] + sizes[item]
            read, write = _slice_reader(batch, key, lo, hi), _slice_writer(batch, key, lo, hi)
            yield MediaItem(
                VISUAL, row, offset + k, read, write,
                read_images=_compose(read, lambda x, g=grids[item]: patches_to_images(x, g, layout)),
                write_images=_then(write, lambda x, g=grids[item]: images_to_patches(x, g, layout)),
            )
    if "input_features" in batch:
        lengths = batch["feature_attention_mask"].sum(-1).tolist()
        for item, (row, k) in enumerate(_row_spans(counts["audios"])):
            yield MediaItem(AUDIO, row, k, _frames_reader(batch, "input_features", item, int(lengths[item])),
                            _frames_writer(batch, "input_features", item, int(lengths[item])))


def _minicpm_items(batch: dict, counts: dict[str, list[int]], layout: PatchLayout) -> Iterator[MediaItem]:
    if "pixel_values" in batch:
        # MiniCPM-V's plugin puts images *and* video frames into ``pixel_values`` (one list per row)
        visual = [i + v for i, v in zip(counts["images"], counts["videos"])]
        for row, slices in enumerate(batch["pixel_values"]):
            if row >= len(visual) or visual[row] == 0:
                continue
            for k in range(len(slices)):
                yield MediaItem(
                    VISUAL, row, k, _pixels_reader(slices, k), _pixels_writer(slices, k),
                    read_images=lambda slices=slices, k=k: slices[k].unsqueeze(0),
                    write_images=lambda x, slices=slices, k=k: slices.__setitem__(k, x[0]),
                )
    if "audio_features" in batch:
        lengths = [n for row_lens in batch["audio_feature_lens"] for n in _as_list(row_lens)]
        for item, (row, k) in enumerate(_row_spans(counts["audios"])):
            yield MediaItem(AUDIO, row, k, _frames_reader(batch, "audio_features", item, int(lengths[item])),
                            _frames_writer(batch, "audio_features", item, int(lengths[item])))


def _image_tensor_items(batch: dict, counts: dict[str, list[int]], layout: PatchLayout) -> Iterator[MediaItem]:
    """LLaVA-style models: ``pixel_values`` [n_images, C, H, W], images in row order."""
    pixels = batch["pixel_values"]
    for item, (row, k) in enumerate(_row_spans(counts["images"])):
        def read(i=item):
            return pixels[i].reshape(pixels.shape[1], -1).transpose(0, 1)

        def write(x, i=item):
            pixels[i] = x.transpose(0, 1).reshape(pixels.shape[1:])

        def write_images(x, i=item):
            pixels[i] = x[0]

        yield MediaItem(VISUAL, row, k, read, write, read_images=lambda i=item: pixels[i : i + 1],
                        write_images=write_images)


def _compose(read, transform):
    return lambda: transform(read())


def _then(write, transform):
    return lambda value: write(transform(value))


def _as_list(x) -> list:
    return x.tolist() if isinstance(x, torch.Tensor) else list(x)


def _slice_reader(batch, key, lo, hi):
    return lambda: batch[key][lo:hi]


def _slice_writer(batch, key, lo, hi):
    def write(value):
        batch[key][lo:hi] = value

    return write


def _frames_reader(batch, key, item, length):  # [mel, T] -> [T_valid, mel]
    return lambda: batch[key][item, :, :length].transpose(0, 1)


def _frames_writer(batch, key, item, length):
    def write(value):
        batch[key][item, :, :length] = value.transpose(0, 1)

    return write


def _pixels_reader(slices, k):  # [C, H, W] -> [H*W, C]
    return lambda: slices[k].reshape(slices[k].shape[0], -1).transpose(0, 1)


def _pixels_writer(slices, k):
    def write(value):
        slices[k] = value.transpose(0, 1).reshape(slices[k].shape)

    return write


FAMILIES: dict[str, Callable[[dict, dict[str, list[int]], PatchLayout], Iterator[MediaItem]]] = {
    "qwen2_omni": _qwen_items,
    "minicpm_o": _minicpm_items,
    "image_tensor": _image_tensor_items,
}


def detect_family(batch: dict) -> str:
    if "audio_features" in batch or isinstance(batch.get("pixel_values"), list):
        return "minicpm_o"
    if "image_grid_thw" in batch or "video_grid_thw" in batch or "input_features" in batch:
        return "qwen2_omni"
    if torch.is_tensor(batch.get("pixel_values")) and batch["pixel_values"].dim() == 4:
        return "image_tensor"
    return "qwen2_omni"


def _copy_media(batch: dict) -> dict:
    """A shallow copy of ``batch`` whose media tensors are cloned (the clean batch stays intact)."""
    out = dict(batch)
    for key in ("pixel_values", "pixel_values_videos", "input_features", "audio_features"):
        if key in out:
            value = out[key]
            out[key] = [[t.clone() for t in row] for row in value] if isinstance(value, list) else value.clone()
    return out


# element corruptions that draw noise per value: on visual items they run on frames, per distinct frame
FRAME_NOISE = ("diffusion", "gaussian")


def per_distinct_frame(frames: torch.Tensor, corrupt: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``corrupt`` applied once to each run of identical consecutive frames [N, C, H, W], copied to the run.

    A still image stored as identical temporal copies gets one draw of noise, as one image should.
    """
    starts = [0] + [i for i in range(1, frames.shape[0]) if not torch.equal(frames[i], frames[i - 1])]
    if len(starts) == frames.shape[0]:
        return corrupt(frames)
    owner = torch.zeros(frames.shape[0], dtype=torch.long, device=frames.device)
    for k, start in enumerate(starts):
        owner[start:] = k
    return corrupt(frames[starts])[owner]


def corrupt_batch(
    batch: dict,
    counts: dict[str, list[int]],
    sides_per_row: list[frozenset[str]],
    specs: dict[str, CorruptionSpec],
    seed: int,
    family: str | None = None,
    regions: list | None = None,
    layout: PatchLayout = PatchLayout(),
    row_keys: list[int] | None = None,
) -> dict:
    """Return a copy of a collated batch with, for each row, the modalities in ``sides_per_row`` corrupted.

    ``counts`` holds the number of images, videos and audios each collated row owns (as recorded
    by ``groundpo.data.collator``). ``sides_per_row`` has one entry per *pair*: a pairwise batch of
    2B rows uses entry r for rows r and r + B, and both get identical noise (a batch of only the B
    chosen rows works the same way). ``regions`` (one per pair, relative boxes or None) feed the
    spatial corruptions. ``row_keys`` (one stable id per pair, default: the pair's position) seed
    each pair's noise, so it does not depend on where the row sits in the batch.
    """
    n_pairs = len(sides_per_row)
    keys = list(range(n_pairs)) if row_keys is None else [int(k) for k in row_keys]
    out = _copy_media(batch)
    for item in FAMILIES[family or detect_family(batch)](out, counts, layout):
        pair = item.row % n_pairs
        if item.side not in sides_per_row[pair]:
            continue
        spec = specs[item.side]
        gen_device = item.read().device
        gen = torch.Generator(device=gen_device).manual_seed(_item_seed(seed, keys[pair], item.side, item.index))
        if spec.kind in SPATIAL_CORRUPTIONS:
            if item.read_images is None:
                raise ValueError(f"Corruption {spec.kind!r} needs images; {item.side} items of this model have none.")
            region = regions[pair] if regions is not None else None
            corrupted = per_distinct_frame(
                item.read_images(), lambda x: SPATIAL_CORRUPTIONS[spec.kind](x, gen, spec, region)
            )
            item.write_images(corrupted)
        elif spec.kind in FRAME_NOISE and item.read_images is not None:
            item.write_images(per_distinct_frame(item.read_images(), lambda x: CORRUPTIONS[spec.kind](x, gen, spec)))
        else:
            item.write(CORRUPTIONS[spec.kind](item.read(), gen, spec))
    return out


def _item_seed(seed: int, row_key: int, side: str, index: int) -> int:
    return mix_seed(seed, row_key, 0 if side == VISUAL else 1, index)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64-style mixing): distinct tuples give unrelated streams."""
    state = 0x9E3779B97F4A7C15
    for part in parts:
        state = (state ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return state & 0x7FFFFFFFFFFFFFFF
