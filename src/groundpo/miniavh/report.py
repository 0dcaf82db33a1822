"""Tables and plot of a MiniAVH run, from what ``groundpo-eval avhbench`` wrote.

``results/summary.md`` (every table), ``results/results.json`` (every number) and
``results/plot.png``. Scores are percentages; "mean ± sd" is over seeds (sample standard
deviation). A difference "exceeds the seed spread" when it is larger than the two standard
deviations added (the base model, trained once, has none).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path

from ..eval.tables import markdown_table
from .plan import ARMS, METHODS, Run, Size, arm_runs, runs
from .worker import marker

TASKS = ("ADVH", "VDAH", "AVM")
TASK_TITLES = {"ADVH": "Audio-driven video halluc.", "VDAH": "Video-driven audio halluc.", "AVM": "AV matching"}
TABLE1_KEYS = (("accuracy", "Acc"), ("precision", "Pre"), ("recall", "Rec"), ("f1", "F1"))
SUMMARY_KEYS = (
    ("avg_acc", "Avg Acc"), ("matched_acc", "Matched"), ("mismatched_acc", "Mismatched"), ("gap", "Gap"),
    ("hard_advh", "ADVH hard no"), ("hard_vdah", "VDAH hard no"), ("avm_mismatched", "AVM mismatched"),
)


PERCEPTION_KEYS = (("well_formed", "Well-formed"), ("perceived", "Perceived (mism.)"), ("follows", "Yes/no follows"))


def _pct(hits: list[bool]) -> float | None:
    return 100.0 * sum(hits) / len(hits) if hits else None


def run_scores(eval_dir: Path, clips: dict[str, dict]) -> dict:
    """Scores of one evaluation: groundpo-eval's per-task Acc/Pre/Rec/F1 (``metrics.json``) and,
    from ``predictions.jsonl`` and the clips' ground truth, accuracy on matched and mismatched
    clips and on the hard negatives (a mismatched clip's heard-but-unseen object for ADVH, its
    seen-but-silent object for VDAH; AV matching on mismatched clips)."""
    metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    out: dict = {task: {k: metrics["scores"][task][k] for k, _ in TABLE1_KEYS} for task in TASKS}
    out["avg_acc"] = sum(out[t]["accuracy"] for t in TASKS) / len(TASKS)
    groups: dict[str, list[bool]] = defaultdict(list)
    for line in (eval_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec["kind"] != "yesno":
            continue
        clip = clips[rec["meta"]["video_id"]]
        side = "matched" if clip["matched"] else "mismatched"
        groups[side].append(rec["correct"])
        if side == "mismatched" and rec["gold"] == "no" and rec["task"] in ("ADVH", "VDAH"):
            groups[f"hard_{rec['task'].lower()}"].append(rec["correct"])
        if side == "mismatched" and rec["task"] == "AVM":
            groups["avm_mismatched"].append(rec["correct"])
    out.update(perception_scores(eval_dir, clips))
    out["matched_acc"] = _pct(groups["matched"])
    out["mismatched_acc"] = _pct(groups["mismatched"])
    out["gap"] = None if out["mismatched_acc"] is None else out["matched_acc"] - out["mismatched_acc"]
    for key in ("hard_advh", "hard_vdah", "avm_mismatched"):
        out[key] = _pct(groups[key])
    out["n_items"] = metrics["n_items"]
    return out


_STATED = re.compile(r"^The (\w+)\? I (see|hear) the (\w+), so (yes|no)\.$")


def perception_scores(eval_dir: Path, clips: dict[str, dict]) -> dict[str, float | None]:
    """What the answers to the presence questions (ADVH, VDAH) say, apart from their yes/no: the
    share in the trained form "The x? I see/hear the y, so yes/no." (``well_formed``); among
    those, on mismatched clips, the share whose y is what the clip shows / plays (``perceived``),
    and on all clips the share whose yes/no follows from x == y (``follows``). A model can perceive
    right and still answer from the other modality (then ``follows`` drops)."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for line in (eval_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec["kind"] != "yesno" or rec["task"] not in ("ADVH", "VDAH") or "prediction" not in rec:
            continue
        clip = clips[rec["meta"]["video_id"]]
        m = _STATED.match((rec["prediction"] or "").strip())
        groups["well_formed"].append(m is not None)
        if not m:
            continue
        subject, verb, stated, yes_no = m.groups()
        if not clip["matched"]:
            groups["perceived"].append(stated == (clip["visible"] if verb == "see" else clip["sound"]))
        groups["follows"].append((subject == stated) == (yes_no == "yes"))
    return {k: _pct(groups[k]) for k in ("well_formed", "perceived", "follows")}


def _flat(scores: dict) -> dict[str, float | None]:
    flat = {k: scores.get(k) for k, _ in SUMMARY_KEYS + PERCEPTION_KEYS}
    for task in TASKS:
        for key, _ in TABLE1_KEYS:
            flat[f"{task}.{key}"] = scores[task][key]
    return flat


def mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return mean, sd


def _cell(stat: tuple[float | None, float | None], spread: bool = True) -> str:
    mean, sd = stat
    if mean is None:
        return "–"
    return f"{mean:.1f} ± {sd:.1f}" if spread else f"{mean:.1f}"


def _reliance(train_dir: Path) -> dict | None:
    """First and last logged ``mod/reliance_relevant`` / ``mod/reliance_irrelevant`` (MoD-DPO runs)."""
    log = train_dir / "trainer_log.jsonl"
    if not log.exists():
        return None
    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if "mod/reliance_relevant" in line]
    if not rows:
        return None
    keys = ("mod/reliance_relevant", "mod/reliance_irrelevant")
    return {f"{k.split('/')[1]}_{when}": rows[i][k] for k in keys for when, i in (("first", 0), ("last", -1))}


def _wall(root: Path, job: str) -> float | None:
    path = marker(root, job)
    return json.loads(path.read_text(encoding="utf-8"))["wall_s"] if path.exists() else None


def collect(root: Path, size: Size) -> dict:
    clips = {c["id"]: c for c in json.loads((root / "world" / "clips.json").read_text(encoding="utf-8"))["test"]}
    base = _flat(run_scores(root / "evals" / "base", clips))
    per_run = {}
    for run in runs(size):
        if not marker(root, f"eval-{run.name}").exists():
            continue  # not finished (yet): a partial report covers the finished runs only
        scores = _flat(run_scores(root / "evals" / run.name, clips))
        per_run[run.name] = {
            "method": run.method, "epochs": run.epochs, "seed": run.seed, "scores": scores,
            "train_wall_s": _wall(root, f"train-{run.name}"), "eval_wall_s": _wall(root, f"eval-{run.name}"),
            "reliance": _reliance(root / "models" / "runs" / run.name),
        }
    arms = {}
    for arm in ARMS:
        arms[arm] = {}
        for method in size.methods:
            names = [r.name for r in arm_runs(size, arm, method) if r.name in per_run]
            arms[arm][method] = {
                "epochs": size.epochs(arm, method), "runs": names,
                "stats": {k: mean_sd([per_run[n]["scores"][k] for n in names]) for k in base},
            }
    stages = ("world", "pref", "model", "sft", "eval-base")
    walls = {s: _wall(root, s) for s in stages}
    walls["train (all runs)"] = sum(v["train_wall_s"] or 0 for v in per_run.values())
    walls["eval (all runs)"] = sum(v["eval_wall_s"] or 0 for v in per_run.values())
    world = {k: json.loads(marker(root, k).read_text(encoding="utf-8")) for k in ("world", "pref") if marker(root, k).exists()}
    pref_file = root / "world" / "pref.json"
    pref_rows = len(json.loads(pref_file.read_text(encoding="utf-8"))) if pref_file.exists() else None
    return {"size": size.fingerprint(), "base": base, "runs": per_run, "arms": arms, "wall_s": walls, "stages": world,
            "pref_rows": pref_rows}


def _spread_rows(arm: dict, base: dict, size: Size, key: str) -> list[list[str]]:
    """Pairwise differences on ``key`` and whether each exceeds the seed spread."""
    rows = []
    methods = list(size.methods)
    pairs = [(m, "base") for m in methods] + [(a, b) for i, a in enumerate(methods) for b in methods[:i]]
    for a, b in pairs:
        ma, sa = arm[a]["stats"][key]
        if b == "base":
            mb, sb = base[key], 0.0
            label_b = "base"
        else:
            mb, sb = arm[b]["stats"][key]
            label_b = METHODS[b].label
        if ma is None or mb is None:
            continue
        delta = ma - mb
        few = len(arm[a]["runs"]) < 2 or (b != "base" and len(arm[b]["runs"]) < 2)
        verdict = "– (1 seed)" if few else "yes" if abs(delta) > sa + sb else "no"
        rows.append([f"{METHODS[a].label} − {label_b}", f"{delta:+.1f}", f"{sa + sb:.1f}", verdict])
    return rows


def summary_markdown(data: dict, size: Size) -> str:
    base = data["base"]
    out = [f"# MiniAVH results ({size.name}: seeds {', '.join(map(str, size.seeds))})", ""]
    out += [f"Settings: {size.n_sft} base clips (p = {size.p:g}) x {size.questions_per_clip} SFT rows; {size.n_pref} preference "
            f"contexts (mismatched {size.mismatch_ratio:g}){f', {pref_rows} rows' if (pref_rows := data.get('pref_rows')) else ''}; "
            f"every preference method: batch {size.pref_batch}, lr {size.pref_lr:g}, β {size.pref_beta:g}; "
            f"{size.n_test} held-out clips ({5 * size.n_test} yes/no questions).", ""]
    out += ["## Base model (SFT on the base distribution, p = %g)" % size.p, ""]
    keys = SUMMARY_KEYS + PERCEPTION_KEYS
    out.append(markdown_table(["Model", *[t for _, t in keys]], [["base", *[_cell((base[k], 0.0), False) for k, _ in keys]]]))
    out += ["", "Matched / Mismatched: accuracy over all yes/no questions on matched / mismatched held-out clips; "
            "Gap = Matched − Mismatched. Hard no: the mismatched clip's heard-but-unseen object (ADVH) and "
            "seen-but-silent object (VDAH), gold answer no.", ""]
    for arm, title in ARMS.items():
        table = data["arms"][arm]
        epochs = ", ".join(f"{METHODS[m].label} {table[m]['epochs']:g}" for m in size.methods)
        counts = {m: len(table[m]["runs"]) for m in size.methods}
        over = f"{len(size.seeds)} seed(s)"
        if set(counts.values()) != {len(size.seeds)}:
            over += " where finished (PARTIAL: " + ", ".join(f"{METHODS[m].label} {n}" for m, n in counts.items()) + " seed(s))"
        out += [f"## {title[0].upper() + title[1:]}", "", f"Epochs: {epochs}. Mean ± sd over {over}.", ""]
        rows = [["Base", *[_cell((base[k], 0.0), False) for k, _ in SUMMARY_KEYS]]]
        rows += [[METHODS[m].label, *[_cell(table[m]["stats"][k]) for k, _ in SUMMARY_KEYS]] for m in size.methods]
        out += [markdown_table(["Method", *[t for _, t in SUMMARY_KEYS]], rows), ""]
        rows = [["Base", *[_cell((base[k], 0.0), False) for k, _ in PERCEPTION_KEYS]]]
        rows += [[METHODS[m].label, *[_cell(table[m]["stats"][k]) for k, _ in PERCEPTION_KEYS]] for m in size.methods]
        out += ["Perception and decision on the presence questions (ADVH, VDAH): answers in the trained form; among them, "
                "on mismatched clips, the stated object right; on all clips, the yes/no consistent with the stated object:", "",
                markdown_table(["Method", *[t for _, t in PERCEPTION_KEYS]], rows), ""]
        header = ["Method"] + [f"{task} {short}" for task in TASKS for _, short in TABLE1_KEYS]
        rows = [["Base", *[_cell((base[f"{t}.{k}"], 0.0), False) for t in TASKS for k, _ in TABLE1_KEYS]]]
        rows += [[METHODS[m].label, *[_cell(table[m]["stats"][f"{t}.{k}"]) for t in TASKS for k, _ in TABLE1_KEYS]] for m in size.methods]
        out += ["Per task, the layout of the paper's Table 1 (Pre = % correct among gold yes, Rec = among gold no):", "",
                markdown_table(header, rows), ""]
        for key, title_key in (("avg_acc", "Avg Acc"), ("mismatched_acc", "Mismatched")):
            out += [f"Differences in {title_key} (exceeds spread: |Δ| > sd₁ + sd₂):", "",
                    markdown_table(["Pair", "Δ", "sd₁ + sd₂", "exceeds spread"], _spread_rows(table, base, size, key)), ""]
    out += ["## Every run", ""]
    rows = []
    for name, r in data["runs"].items():
        s = r["scores"]
        rel = r["reliance"] or {}
        rows.append([
            METHODS[r["method"]].label, f"{r['epochs']:g}", str(r["seed"]), *[f"{s[k]:.1f}" for k in ("avg_acc", "ADVH.accuracy", "VDAH.accuracy", "AVM.accuracy", "mismatched_acc")],
            f"{rel['reliance_relevant_last']:.3f}" if rel else "–", f"{rel['reliance_irrelevant_last']:.3f}" if rel else "–",
            f"{r['train_wall_s']:.0f}" if r["train_wall_s"] else "–",
        ])
    out += [markdown_table(["Method", "Epochs", "Seed", "Avg Acc", "ADVH Acc", "VDAH Acc", "AVM Acc", "Mismatched",
                            "reliance rel.", "reliance irrel.", "train s"], rows), ""]
    out += ["reliance rel. / irrel.: MoD-DPO's logged `mod/reliance_relevant` / `mod/reliance_irrelevant` at the last "
            "step (log πθ(y_w | clean) − log πθ(y_w | relevant / irrelevant modality corrupted)); other stages do not log it.", ""]
    out += ["## Wall times", ""]
    out.append(markdown_table(["Stage", "seconds"], [[k, "–" if v is None else f"{v:.0f}"] for k, v in data["wall_s"].items()]))
    return "\n".join(out) + "\n"


def plot(data: dict, size: Size, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("ADVH.accuracy", "ADVH Acc"), ("VDAH.accuracy", "VDAH Acc"), ("AVM.accuracy", "AVM Acc"),
               ("mismatched_acc", "Mismatched clips"), ("matched_acc", "Matched clips")]
    fig, axes = plt.subplots(1, len(ARMS), figsize=(6.5 * len(ARMS), 4.2), sharey=True)
    width = 0.8 / (len(size.methods) + 1)
    for ax, (arm, title) in zip(axes, ARMS.items()):
        table = data["arms"][arm]
        xs = range(len(metrics))
        ax.bar([x - 0.4 + width / 2 for x in xs], [data["base"][k] for k, _ in metrics], width, label="base", color="0.7")
        for i, method in enumerate(size.methods, 1):
            stats = [table[method]["stats"][k] for k, _ in metrics]
            nan = float("nan")
            ax.bar([x - 0.4 + width / 2 + i * width for x in xs], [nan if m is None else m for m, _ in stats], width,
                   yerr=[0.0 if s is None else s for _, s in stats],
                   capsize=2, label=f"{METHODS[method].label} ({table[method]['epochs']:g} ep)")
        ax.set_xticks(list(xs), [t for _, t in metrics], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 105)
        ax.axhline(50, color="0.5", lw=0.6, ls=":")
        ax.legend(fontsize=7, loc="lower left")
    axes[0].set_ylabel("accuracy (%), mean ± sd over seeds")
    fig.suptitle(f"MiniAVH ({size.name}, {len(size.seeds)} seed(s))", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(root: Path, size: Size) -> Path:
    out = root / "results"
    out.mkdir(exist_ok=True)
    data = collect(root, size)
    (out / "results.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(summary_markdown(data, size), encoding="utf-8")
    plot(data, size, out / "plot.png")
    return out


__all__ = ["Run", "collect", "mean_sd", "plot", "run_scores", "summary_markdown", "write_report"]
