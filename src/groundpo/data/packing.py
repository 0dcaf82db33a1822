"""Shared prompt prefix: one sequence [prompt, y_w, y_l] per pair instead of two sequences.

In a pairwise batch the chosen row i and the rejected row B+i hold the same prompt (the same
token ids and the same media) and differ only in their response. In omni preference data the
prompt is nearly everything (a clip is thousands of media tokens, an answer tens), yet upstream
DPO runs it, and the vision and audio encoders, once per response. Here each such pair becomes one
packed row::

    tokens    [ prompt ............ | y_w ...... | y_l ...... | (upstream's masked dummy media) ]
    segments  [ 1 1 1 1 1 1 1 1 1 1 | 2 2 2 2 2  | 3 3 3 3 3  | 0 0 0 ]
    positions [ the chosen row's positions       | the rejected row's positions after the prompt ]

and attention follows the blocks: a token of y_l sees the prompt and y_l but not y_w
(``groundpo.train.logps.block_attention_mask``). Positions are copied from the rows the collator
built (mrope position ids of Qwen2.5-Omni and Qwen2-VL, ``use_audio_in_video`` included), so the
rejected part's positions restart where the prompt ends exactly as in its own row. Every response
token is then scored from the logits of the position that precedes it *in its own sequence*: the
first token of y_l from the prompt's last position, which y_w's first token shares.

A :class:`ResponseLayout` says where each response of a batch is scored (row, predicting positions,
target tokens), packed or not, so one scoring function serves both. Pairs whose two sides differ in
prompt or media (ACPO's input-contrastive pairs) stay two rows, pair by pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .batch import IGNORE_INDEX, ROW_FIXED, ROW_PAD, concat_batches, select_rows

SEGMENTS = "groundpo_segments"
PROMPT, FIRST, SECOND = 1, 2, 3  # segment ids; 0 = padding (or masked dummy media tokens)


class NotPackable(ValueError):
    """The batch cannot be packed at all (the caller scores it unpacked)."""


@dataclass
class ResponseLayout:
    """Where each response of a batch is scored: P pairs × S sides (2, or 1 for chosen-only passes) × T tokens.

    ``rows[p, s]`` is the model row holding the response, ``predictors[p, s, t]`` the position whose
    logits predict its t-th scored token ``targets[p, s, t]``; ``mask`` marks real tokens.
    """

    rows: torch.Tensor  # [P, S] long
    predictors: torch.Tensor  # [P, S, T] long
    targets: torch.Tensor  # [P, S, T] long
    mask: torch.Tensor  # [P, S, T] bool

    @property
    def sides(self) -> int:
        return int(self.rows.shape[1])

    def shifted(self, rows: int) -> "ResponseLayout":
        return ResponseLayout(self.rows + rows, self.predictors, self.targets, self.mask)

    def to(self, device) -> "ResponseLayout":
        return ResponseLayout(*(t.to(device) for t in (self.rows, self.predictors, self.targets, self.mask)))

    @staticmethod
    def concat(layouts: list["ResponseLayout"], row_counts: list[int]) -> list["ResponseLayout"]:
        """The layouts of batches joined by ``concat_batches`` (rows shifted by the rows before them)."""
        out, start = [], 0
        for layout, rows in zip(layouts, row_counts):
            out.append(layout.shifted(start))
            start += rows
        return out


def _responses(entries: list[list[tuple[int, int, int]]], n_pairs: int, sides: int) -> ResponseLayout:
    """A layout from, per (pair, side), its (row, predictor, target) triples."""
    width = max((len(e) for e in entries), default=0) or 1
    rows = torch.zeros(n_pairs * sides, dtype=torch.long)
    predictors = torch.zeros(n_pairs * sides, width, dtype=torch.long)
    targets = torch.zeros(n_pairs * sides, width, dtype=torch.long)
    mask = torch.zeros(n_pairs * sides, width, dtype=torch.bool)
    for k, triples in enumerate(entries):
        if triples:
            row, pred, tgt = zip(*triples)
            rows[k] = row[0]
            predictors[k, : len(pred)] = torch.tensor(pred)
            targets[k, : len(tgt)] = torch.tensor(tgt)
            mask[k, : len(tgt)] = True
    shape = (n_pairs, sides)
    return ResponseLayout(rows.view(shape), predictors.view(*shape, width), targets.view(*shape, width),
                          mask.view(*shape, width))


def _scored(labels: torch.Tensor, row: int, out_row: int) -> list[tuple[int, int, int]]:
    """(row, t - 1, labels[t]) for every scored token t of an unpacked row (causal shift by one)."""
    positions = (labels[row, 1:] != IGNORE_INDEX).nonzero().flatten().tolist()
    return [(out_row, t, int(labels[row, t + 1])) for t in positions]


def layout_from_labels(labels: torch.Tensor, n_pairs: int, chosen_only: bool = False) -> ResponseLayout:
    """The layout of an unpacked pairwise batch: rows 0..B-1 chosen, B..2B-1 rejected (or chosen only)."""
    sides = 1 if chosen_only else 2
    entries = [_scored(labels, side * n_pairs + i, side * n_pairs + i) for i in range(n_pairs) for side in range(sides)]
    return _responses(entries, n_pairs, sides)


def _prompt_length(labels: torch.Tensor, row: int) -> int:
    scored = (labels[row] != IGNORE_INDEX).nonzero()
    return int(scored[0]) if scored.numel() else int(labels.shape[1])


def shared_prompt(batch: dict, chosen: int, rejected: int) -> int | None:
    """The prompt length the two rows share (same tokens up to the first scored token), or None."""
    ids, labels = batch["input_ids"], batch["labels"]
    p = _prompt_length(labels, chosen)
    if p == 0 or p >= ids.shape[1] or p != _prompt_length(labels, rejected):
        return None
    return p if torch.equal(ids[chosen, :p], ids[rejected, :p]) else None


def _real_length(attention_mask: torch.Tensor, row: int) -> int:
    n = int(attention_mask[row].sum())
    if not bool(attention_mask[row, :n].all()):
        raise NotPackable("rows are not padded on the right")
    return n


def as_block_rows(batch: dict) -> dict:
    """``batch`` with the entries a packed batch has (segments from the padding mask, positions if absent),
    so that it can be joined with packed batches into one forward."""
    if "data" in batch or SEGMENTS in batch:
        return batch
    out = {**batch, SEGMENTS: batch["attention_mask"].long()}
    if "position_ids" not in batch:
        ids = batch["input_ids"]
        out["position_ids"] = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
    return out


def pack_pairs(
    batch: dict, counts: dict[str, list[int]], n_pairs: int, same_media: list[bool], pad_token_id: int
) -> tuple[dict, dict[str, list[int]], ResponseLayout]:
    """The pairwise ``batch`` (2B rows) with every shareable pair as one packed row.

    ``same_media[i]``: both sides of pair i carry the same media (the collator knows; ACPO's
    input-contrastive pairs do not). Returns the model batch, its media counts per row and the
    layout of the 2B responses. A pair that cannot share stays two rows.
    """
    if "data" in batch:
        raise NotPackable("MiniCPM-o nests its inputs under `data`")
    if "input_ids" not in batch or "labels" not in batch or "attention_mask" not in batch:
        raise NotPackable("the batch has no input_ids / labels / attention_mask")
    ids, labels, attention = batch["input_ids"], batch["labels"], batch["attention_mask"]
    length = int(ids.shape[1])
    positions = batch.get("position_ids")
    if positions is None:  # models that number positions themselves (LLaVA): give them the rows' own positions
        positions = torch.arange(length, device=ids.device).expand(ids.shape[0], length)
    row_keys = [k for k in batch if k in ROW_PAD and k not in ("input_ids", "labels", "attention_mask", SEGMENTS)]

    singles: list[dict] = []
    out_counts: dict[str, list[int]] = {kind: [] for kind in counts}
    entries: list[list[tuple[int, int, int]]] = [[] for _ in range(2 * n_pairs)]
    row = 0

    def one_row(source: int) -> dict:
        single = select_rows(batch, counts, source, source + 1)
        for kind in counts:
            out_counts[kind].append(counts[kind][source])
        return single

    for i in range(n_pairs):
        c, r = i, n_pairs + i
        p = shared_prompt(batch, c, r) if same_media[i] else None
        if p is None:  # two rows, as upstream
            for side, source in ((0, c), (1, r)):
                single = one_row(source)
                single[SEGMENTS] = attention[source : source + 1].clone()
                if "position_ids" not in batch:
                    single["position_ids"] = positions[source : source + 1]
                singles.append(single)
                entries[2 * i + side] = _scored(labels, source, row)
                row += 1
            continue

        n_c, n_r = _real_length(attention, c), _real_length(attention, r)
        tail = n_c
        non_pad = (ids[c, n_c:] != pad_token_id).nonzero()
        if non_pad.numel():  # upstream's dummy media tokens after row 0 (masked): keep them, the media need them
            tail = n_c + int(non_pad[-1]) + 1
        pieces = ((c, 0, n_c), (r, p, n_r), (c, n_c, tail))

        def cat(values: torch.Tensor, fill=None) -> torch.Tensor:
            parts = [values[..., src, a:b] for src, a, b in pieces]
            if fill is not None:
                parts[2] = torch.full_like(parts[2], fill)
            return torch.cat(parts, dim=-1).unsqueeze(-2)

        single = one_row(c)
        single["input_ids"] = cat(ids)
        single["labels"] = cat(labels, IGNORE_INDEX)
        single[SEGMENTS] = torch.cat([
            torch.full((p,), PROMPT), torch.full((n_c - p,), FIRST), torch.full((n_r - p,), SECOND),
            torch.zeros(tail - n_c, dtype=torch.long),
        ]).to(ids.device).unsqueeze(0)
        single["attention_mask"] = (single[SEGMENTS] != 0).to(attention.dtype)
        single["position_ids"] = cat(positions)
        for key in row_keys:
            if key not in ROW_FIXED:
                single[key] = cat(batch[key])
        singles.append(single)

        entries[2 * i] = _scored(labels, c, row)
        # y_l's token t sits at n_c + (t - p); its predictor is the token before it in its own sequence
        for t in (labels[r, p:n_r] != IGNORE_INDEX).nonzero().flatten().tolist():
            t += p
            before = t - 1 if t - 1 < p else n_c + (t - 1 - p)
            entries[2 * i + 1].append((row, before, int(labels[r, t])))
        row += 1

    packed = concat_batches(singles, pad_token_id)
    layout = _responses(entries, n_pairs, 2)
    return packed, out_counts, layout
