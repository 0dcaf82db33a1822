"""Corruptions keep shapes, touch only their modality and rows, and follow VCD's schedule."""

from __future__ import annotations

import math

import pytest
import torch

from groundpo.corruption import CORRUPTIONS, CorruptionSpec, corrupt_batch, vcd_alpha_bar

V, A = frozenset({"visual"}), frozenset({"audio"})
BOTH, NONE = V | A, frozenset()


def _hand_alpha_bar(t: int) -> float:
    prod = 1.0
    for i in range(t + 1):
        beta = 1 / (1 + math.exp(-(-6 + 12 * i / 999))) * (5e-3 - 1e-5) + 1e-5
        prod *= 1 - beta
    return prod


def test_vcd_schedule_matches_the_paper_numbers():
    assert vcd_alpha_bar(500) == pytest.approx(_hand_alpha_bar(500), rel=1e-9)
    assert math.sqrt(vcd_alpha_bar(500)) == pytest.approx(0.863, abs=1e-3)
    assert math.sqrt(1 - vcd_alpha_bar(500)) == pytest.approx(0.505, abs=1e-3)
    assert vcd_alpha_bar(10) > vcd_alpha_bar(50) > vcd_alpha_bar(500) > vcd_alpha_bar(999)


def test_diffusion_is_the_forward_process_with_that_noise():
    x = torch.randn(6, 4, dtype=torch.float64)
    out = CORRUPTIONS["diffusion"](x, torch.Generator().manual_seed(3), CorruptionSpec("diffusion", 500))
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float32).double()
    ab = vcd_alpha_bar(500)
    assert torch.allclose(out, math.sqrt(ab) * x + math.sqrt(1 - ab) * eps)


@pytest.mark.parametrize("kind", ["diffusion", "gaussian", "zeros", "shuffle"])
def test_each_corruption_keeps_shape_and_dtype(kind):
    x = torch.randn(7, 5)
    out = CORRUPTIONS[kind](x, torch.Generator().manual_seed(0), CorruptionSpec(kind))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)
    if kind == "shuffle":  # a permutation of the units (rows)
        assert sorted(map(tuple, out.tolist())) == sorted(map(tuple, x.tolist()))
    if kind == "zeros":
        assert out.abs().sum() == 0


def _qwen_batch(pairs: int = 2, frames: int = 9):
    """A pairwise batch of 2·pairs rows, each row one video (4 patches of 3 channels × 2 frames × 1×1 pixels)
    and one audio (chosen = rejected media)."""
    g = torch.Generator().manual_seed(1)
    video = torch.randn(pairs * 4, 6, generator=g)
    audio = torch.randn(pairs, 8, 12, generator=g)
    mask = torch.zeros(pairs, 12, dtype=torch.long)
    for i in range(pairs):
        mask[i, : frames - i] = 1
    return {
        "input_ids": torch.ones(2 * pairs, 10, dtype=torch.long),
        "pixel_values_videos": torch.cat([video, video]),
        "video_grid_thw": torch.tensor([[1, 2, 2]] * (2 * pairs)),
        "input_features": torch.cat([audio, audio]),
        "feature_attention_mask": torch.cat([mask, mask]),
    }


def _counts(pairs, images=0, videos=1, audios=1):
    return {"images": [images] * 2 * pairs, "videos": [videos] * 2 * pairs, "audios": [audios] * 2 * pairs}


SPECS = {"visual": CorruptionSpec("diffusion"), "audio": CorruptionSpec("diffusion")}


def test_only_the_requested_modality_changes_and_shapes_stay():
    batch = _qwen_batch()
    out = corrupt_batch(batch, _counts(2), [V, V], SPECS, seed=0)
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in batch.items()}
    assert not torch.equal(out["pixel_values_videos"], batch["pixel_values_videos"])
    assert torch.equal(out["input_features"], batch["input_features"])
    assert torch.equal(out["input_ids"], batch["input_ids"])

    out = corrupt_batch(batch, _counts(2), [A, A], SPECS, seed=0)
    assert torch.equal(out["pixel_values_videos"], batch["pixel_values_videos"])
    changed = out["input_features"] != batch["input_features"]  # [rows, mel, frames]
    valid = batch["feature_attention_mask"].bool()[:, None, :].expand_as(changed)
    assert changed[valid].all() and not changed[~valid].any()  # only frames inside the mask


def test_rows_get_their_own_sides_and_the_clean_batch_is_untouched():
    batch = _qwen_batch()
    before = {k: v.clone() for k, v in batch.items()}
    out = corrupt_batch(batch, _counts(2), [V, NONE], SPECS, seed=0)
    for k in batch:
        assert torch.equal(batch[k], before[k])
    changed = (out["pixel_values_videos"] != batch["pixel_values_videos"]).any(-1)
    assert changed.tolist() == [True] * 4 + [False] * 4 + [True] * 4 + [False] * 4  # pair 0: rows 0 and 2


def test_chosen_and_rejected_copies_get_identical_noise_and_seeds_are_reproducible():
    batch = _qwen_batch()
    out = corrupt_batch(batch, _counts(2), [BOTH, BOTH], SPECS, seed=5)
    assert torch.equal(out["pixel_values_videos"][:8], out["pixel_values_videos"][8:])
    assert torch.equal(out["input_features"][:2], out["input_features"][2:])
    again = corrupt_batch(batch, _counts(2), [BOTH, BOTH], SPECS, seed=5)
    other = corrupt_batch(batch, _counts(2), [BOTH, BOTH], SPECS, seed=6)
    assert torch.equal(out["input_features"], again["input_features"])
    assert not torch.equal(out["input_features"], other["input_features"])


def test_dummy_media_is_never_corrupted():
    batch = _qwen_batch()
    batch["pixel_values"] = torch.randn(4, 6)  # the dummy image upstream inserts into video-only batches
    batch["image_grid_thw"] = torch.tensor([[1, 2, 2]])
    out = corrupt_batch(batch, _counts(2, images=0), [BOTH, BOTH], SPECS, seed=0)
    assert torch.equal(out["pixel_values"], batch["pixel_values"])
    no_audio = {k: v for k, v in _qwen_batch().items()}
    out = corrupt_batch(no_audio, _counts(2, audios=0), [A, A], SPECS, seed=0)  # dummy audio: owned by no row
    assert torch.equal(out["input_features"], no_audio["input_features"])


def test_minicpm_o_tensors():
    g = torch.Generator().manual_seed(0)
    slices = [[torch.randn(3, 4, 4, generator=g), torch.randn(3, 4, 6, generator=g)], [torch.randn(3, 4, 4, generator=g)]]
    batch = {
        "pixel_values": [[t.clone() for t in row] for row in slices] * 1,
        "tgt_sizes": [torch.tensor([[2, 2], [2, 3]]), torch.tensor([[2, 2]])],
        "audio_features": torch.randn(2, 5, 10, generator=g),
        "audio_feature_lens": [torch.tensor([7]), torch.tensor([10])],
    }
    counts = {"images": [2, 1], "videos": [0, 0], "audios": [1, 1]}
    out = corrupt_batch(batch, counts, [V, A], SPECS, seed=0, family="minicpm_o")
    assert [[t.shape for t in row] for row in out["pixel_values"]] == [[t.shape for t in row] for row in slices]
    assert not torch.equal(out["pixel_values"][0][1], slices[0][1])  # row 0: visual corrupted
    assert torch.equal(out["pixel_values"][1][0], slices[1][0])  # row 1: visual kept
    assert torch.equal(out["audio_features"][0], batch["audio_features"][0])  # row 0: audio kept
    changed = out["audio_features"][1] != batch["audio_features"][1]
    assert changed.all()  # row 1: all 10 frames valid
    out = corrupt_batch(batch, counts, [A, NONE], SPECS, seed=0, family="minicpm_o")
    changed = out["audio_features"][0] != batch["audio_features"][0]
    assert changed[:, :7].all() and not changed[:, 7:].any()  # only up to audio_feature_lens


def test_qwen_patches_round_trip_to_the_normalised_image():
    import numpy as np
    from transformers import Qwen2VLImageProcessor

    from groundpo.corruption import PatchLayout, images_to_patches, patches_to_images

    processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2, temporal_patch_size=2)
    image = np.random.RandomState(0).randint(0, 255, (112, 84, 3)).astype(np.uint8)
    out = processor(images=[image], return_tensors="pt")
    grid = out["image_grid_thw"][0]
    frames = patches_to_images(out["pixel_values"], grid, PatchLayout())
    mean = torch.tensor(processor.image_mean).view(3, 1, 1)
    std = torch.tensor(processor.image_std).view(3, 1, 1)
    expected = (torch.tensor(image).permute(2, 0, 1).float() / 255 - mean) / std
    assert frames.shape == (2, 3, 112, 84)
    assert torch.allclose(frames[0], expected, atol=1e-5) and torch.allclose(frames[1], expected, atol=1e-5)
    assert torch.equal(images_to_patches(frames, grid, PatchLayout()), out["pixel_values"])


def test_crop_keeps_shape_and_is_a_zoomed_part_of_the_image():
    from groundpo.corruption import SPATIAL_CORRUPTIONS

    ramp = torch.linspace(0, 1, 40).view(1, 1, 1, 40).expand(1, 3, 30, 40).contiguous()
    out = SPATIAL_CORRUPTIONS["crop"](ramp, torch.Generator().manual_seed(0), CorruptionSpec("crop", crop_scale=(0.01, 0.2)), None)
    assert out.shape == ramp.shape
    span = out[0, 0, 0, -1] - out[0, 0, 0, 0]
    assert 0 < span < 0.6  # a horizontal ramp over at most ~20 % of the area spans far less of the range


def test_region_diffusion_noises_only_inside_the_region():
    from groundpo.corruption import SPATIAL_CORRUPTIONS

    images = torch.randn(2, 3, 20, 40)
    out = SPATIAL_CORRUPTIONS["region_diffusion"](images, torch.Generator().manual_seed(0), CorruptionSpec(), [0.25, 0.5, 0.5, 1.0])
    changed = (out != images).any(1)  # [N, H, W]
    assert changed[:, 10:, 10:20].all()
    outside = torch.ones(20, 40, dtype=torch.bool)
    outside[10:, 10:20] = False
    assert not changed[:, outside].any()
    whole = SPATIAL_CORRUPTIONS["region_diffusion"](images, torch.Generator().manual_seed(0), CorruptionSpec(), None)
    assert (whole != images).all()


def test_a_still_image_gets_one_noise_draw_for_both_temporal_copies():
    """Qwen stores a still image as two identical temporal copies; independent noise per copy would leave
    the patch embedding (which mixes the copies) with √(1−ᾱ)/√2 ≈ 0.36 instead of 0.505 at t = 500."""
    import numpy as np
    from transformers import Qwen2VLImageProcessor

    from groundpo.corruption import PatchLayout, patches_to_images

    processor = Qwen2VLImageProcessor(min_pixels=112 * 112, max_pixels=224 * 224, patch_size=14, merge_size=2, temporal_patch_size=2)
    image = np.random.RandomState(0).randint(0, 255, (224, 224, 3)).astype(np.uint8)
    out = processor(images=[image], return_tensors="pt")
    grid = out["image_grid_thw"]
    batch = {"pixel_values": torch.cat([out["pixel_values"]] * 2), "image_grid_thw": torch.cat([grid] * 2)}
    counts = {"images": [1, 1], "videos": [0, 0], "audios": [0, 0]}
    noisy = corrupt_batch(batch, counts, [V], {"visual": CorruptionSpec("diffusion", diffusion_steps=500)}, seed=3)
    clean = patches_to_images(out["pixel_values"], grid[0], PatchLayout())
    frames = patches_to_images(noisy["pixel_values"][: out["pixel_values"].shape[0]], grid[0], PatchLayout())
    assert torch.equal(frames[0], frames[1])  # the same noise on both copies
    noise = (frames[0] - math.sqrt(vcd_alpha_bar(500)) * clean[0]) / math.sqrt(1 - vcd_alpha_bar(500))
    assert noise.std().item() == pytest.approx(1.0, abs=0.02)  # unit noise at full strength √(1−ᾱ) ≈ 0.505
    mixed = (frames[0] + frames[1]) / 2 - math.sqrt(vcd_alpha_bar(500)) * clean[0]  # what a temporal average sees
    assert mixed.std().item() == pytest.approx(math.sqrt(1 - vcd_alpha_bar(500)), rel=0.03)


def test_minicpm_o_video_frames_are_corrupted():
    """MiniCPM-V's plugin puts video frames into ``pixel_values``: a video row's visual sensitivity view
    must corrupt them (a row with no *image* is not a row without visual input)."""
    g = torch.Generator().manual_seed(0)
    video = [torch.randn(3, 4, 4, generator=g) for _ in range(3)]
    frames = [video, [t.clone() for t in video]]  # one pair: the chosen and the rejected row share the video
    batch = {"pixel_values": [[t.clone() for t in row] for row in frames], "tgt_sizes": [torch.tensor([[2, 2]] * 3)] * 2}
    counts = {"images": [0, 0], "videos": [1, 1], "audios": [0, 0]}
    out = corrupt_batch(batch, counts, [V], SPECS, seed=0, family="minicpm_o")
    for row in range(2):
        assert all(not torch.equal(a, b) for a, b in zip(out["pixel_values"][row], frames[row]))
    assert torch.equal(out["pixel_values"][0][0], out["pixel_values"][1][0])  # chosen and rejected copy alike


def test_noise_follows_the_row_id_not_the_place_in_the_batch():
    """A resumed run may batch a row with other rows or on another position: its noise must not change."""
    batch = _qwen_batch()
    first = corrupt_batch(batch, _counts(2), [V, V], SPECS, seed=9, row_keys=[17, 4])
    swapped = {
        **batch,
        "pixel_values_videos": torch.cat([batch["pixel_values_videos"][k * 4 : k * 4 + 4] for k in (1, 0, 3, 2)]),
    }
    second = corrupt_batch(swapped, _counts(2), [V, V], SPECS, seed=9, row_keys=[4, 17])
    assert torch.equal(first["pixel_values_videos"][:4], second["pixel_values_videos"][4:8])  # row 17
    assert torch.equal(first["pixel_values_videos"][4:8], second["pixel_values_videos"][:4])  # row 4
    other_step = corrupt_batch(batch, _counts(2), [V, V], SPECS, seed=10, row_keys=[17, 4])
    assert not torch.equal(first["pixel_values_videos"], other_step["pixel_values_videos"])
