"""The progress bar and the end-of-run summary (``summary.json`` and the lines printed)."""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

USAGE_KEYS = ("requests", "retries", "prompt_tokens", "completion_tokens", "total_tokens", "unreported")


def progress_bar(total: int, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="item", disable=not enabled, dynamic_ncols=True, mininterval=0.5)


def add_usage(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    total = dict.fromkeys(USAGE_KEYS, 0)
    for record in records:
        for key in USAGE_KEYS:
            total[key] += int((record.get("usage") or {}).get(key, 0))
    return total


def summarize(
    *,
    pipeline: str,
    stage: str,
    dataset_name: str,
    items_total: int,
    selected: int,
    records: list[dict[str, Any]],
    resumed: int,
    failed: dict[str, str],
    shard: str,
    rows: int,
) -> dict[str, Any]:
    rejects = Counter(r["reason"] for rec in records for r in rec.get("rejects", []))
    usage = add_usage(records)
    answered = usage["requests"] - usage["retries"]
    return {
        "pipeline": pipeline,
        "stage": stage,
        "dataset": dataset_name,
        "shard": shard,
        "items_in_source": items_total,
        "items_selected": selected,
        "items_done": len(records),
        "items_resumed": resumed,
        "items_built_now": len(records) - resumed,
        "items_failed": len(failed),
        "failed": dict(sorted(failed.items())),
        "complete": len(records) == selected,
        "rows": rows,
        "rejects": sum(rejects.values()),
        "rejects_by_reason": dict(sorted(rejects.items())),
        "requests": usage["requests"],
        "retries": usage["retries"],
        "tokens": (
            {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
            if answered > usage["unreported"] else None
        ),
        "answers_without_usage": usage["unreported"],
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"groundpo-data {summary['pipeline']} -> dataset {summary['dataset']!r} (stage {summary['stage']}), shard {summary['shard']}",
        f"  items in:   {summary['items_selected']} selected of {summary['items_in_source']} in the source; "
        f"{summary['items_done']} done ({summary['items_resumed']} from an earlier run, {summary['items_built_now']} now)",
        f"  rows out:   {summary['rows']}",
        f"  rejects:    {summary['rejects']}"
        + ("".join(f"\n    {reason}: {n}" for reason, n in summary["rejects_by_reason"].items())),
        f"  requests:   {summary['requests']} ({summary['retries']} retries)",
    ]
    tokens = summary.get("tokens")
    if tokens:
        lines.append(
            f"  tokens:     {tokens['total_tokens']} ({tokens['prompt_tokens']} prompt + {tokens['completion_tokens']} completion)"
            + (f"; {summary['answers_without_usage']} answers without usage" if summary["answers_without_usage"] else "")
        )
    elif summary["requests"]:
        lines.append("  tokens:     not reported by the endpoint")
    if summary["items_failed"]:
        lines.append(f"  failed:     {summary['items_failed']} item(s) could not reach the endpoint; rerun the same command to finish them")
        for item_id, why in list(summary["failed"].items())[:5]:
            lines.append(f"    {item_id}: {why}")
    if not summary["complete"]:
        left = summary["items_selected"] - summary["items_done"]
        lines.append(f"  INCOMPLETE: {left} item(s) left; rerun the same command to continue")
    return "\n".join(lines)
