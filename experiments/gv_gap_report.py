"""Tables and figures of the generation-verification gap experiment (`experiments.gv_gap`).

Figures (PNG and PDF, per model), from summary.json and results.jsonl:
  relative_gap_<model>   the relative gap (+-1 bootstrap SE) per verifier / filter and ensemble, one
                         panel per task;
  scores_hist_<model>    histograms of û for correct and incorrect samples, one row per verifier,
                         one column per task;
  passk_<model>          pass@k against k for every k, one line per task;
  rounds                 the self-improvement rounds: J(f_t) and the gap against t per arm, and
                         pass@k against k for each round and arm (when the run has rounds).
"""

from __future__ import annotations

import collections
import os

import numpy as np

from experiments.plots import _panels, _save, model_label, plt
from sharpen_jax.jsonl import read_jsonl


def group(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """results.jsonl records by (model, task), prompts sorted by index."""
    groups = collections.defaultdict(list)
    for record in records:
        groups[(record["model"], record["task"])].append(record)
    return {key: sorted(rows, key=lambda r: r["index"]) for key, rows in groups.items()}


def scaling_rows(table: dict, flops: dict[str, float]) -> list[dict]:
    """One row per (model, task, verifier, filter): pre-training FLOPs (None if unknown) and the gaps."""
    rows = []
    for model, per_task in table.items():
        for task, entry in per_task.items():
            for verifier, by_filter in entry["gaps"].items():
                for name, g in by_filter.items():
                    rows.append({"model": model, "flops": flops.get(model) or None, "task": task,
                                 "verifier": verifier, "filter": name, "gap": g["gap"],
                                 "relative_gap": g["relative_gap"]})
    return rows


def timing_table(timing: list[dict]) -> dict:
    """Per stage (generation, each verifier) summed over prompt batches: seconds, tokens generated, tokens
    processed (generation: generated; verifiers: read by forward passes plus generated) and processed
    tokens/s. The last record of a batch counts (a batch redone after a kill is not counted twice)."""
    last = {(t["model"], t["task"], t["batch"]): t for t in timing}
    seconds, tokens, generated = collections.Counter(), collections.Counter(), collections.Counter()
    for t in last.values():
        seconds.update(t["seconds"])
        tokens.update(t["tokens"])
        generated.update(t["generated_tokens"])
    return {stage: {"seconds": seconds[stage], "generated_tokens": generated[stage], "processed_tokens": tokens[stage],
                    "tokens_per_s": tokens[stage] / seconds[stage] if seconds[stage] > 0 and tokens[stage] else None}
            for stage in seconds}


def _cell(entry: dict) -> str:
    if entry["mean"] is None:
        return "n/a"
    return f"{entry['mean']:+.3f} ± {entry['se']:.3f}" if entry["se"] is not None else f"{entry['mean']:+.3f}"


def markdown(summary: dict) -> str:
    """The summary as markdown: per model and task, the gap table, verifier reports and pass@k; then the
    scaling table and the timing."""
    lines = []
    for model, per_task in summary["results"].items():
        for task, t in per_task.items():
            lines += [f"**{model_label(model)} / {task}** ({t['num_prompts']} prompts, N = {t['num_samples']}): "
                      f"J(f) = {t['accuracy']:.3f}", "",
                      "| verifier | filter | gap | relative gap | J(f[w]) | kept | empty prompts |",
                      "|---|---|---|---|---|---|---|"]
            for verifier, by_filter in t["gaps"].items():
                for name, g in by_filter.items():
                    lines.append(f"| {verifier} | {name} | {_cell(g['gap'])} | {_cell(g['relative_gap'])} | "
                                 f"{g['filtered_accuracy']:.3f} | {g['kept_fraction']:.2f} | {g['num_empty']} |")
            lines.append("")
            for verifier, r in t["verifiers"].items():
                dist = r.get("histogram") or r.get("quantiles")
                auc = "n/a" if r["dominance_auc"] is None else f"{r['dominance_auc']:.2f}"
                lines.append(f"- {verifier}: {r['parse_failures']} of {r['num_scores']} parse failures, "
                             f"{r['distinct_values']} distinct scores {dist}, AUC {auc}")
            passk = t["pass_at_k"]
            lines += ["", "pass@k: " + ", ".join(f"k={k}: {v['mean']:.3f}" for k, v in passk.items()), ""]
    lines += ["**Scaling** (relative gap against pre-training FLOPs 6ND)", "",
              "| model | FLOPs | task | verifier | filter | relative gap |", "|---|---|---|---|---|---|"]
    for row in summary["scaling"]:
        flops = f"{row['flops']:.2g}" if row["flops"] else "unknown"
        lines.append(f"| {model_label(row['model'])} | {flops} | {row['task']} | {row['verifier']} | {row['filter']} | "
                     f"{_cell(row['relative_gap'])} |")
    if summary["rounds"]:
        lines += ["", "**Self-improvement rounds** (J(f_t); gap and relative gap of f_t's self-verification)", "",
                  "| arm | round | J | gap | relative gap | pass@1 | pass@N | kept rows | train loss |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for arm, rows in summary["rounds"].items():
            for row in rows:
                ks = list(row["pass_at_k"])
                loss = f"{row['train_loss']:.3f}" if row.get("train_loss") is not None else "-"
                lines.append(f"| {arm} | {row['round']} | {row['accuracy']:.3f} | {_cell(row['gap'])} | "
                             f"{_cell(row['relative_gap'])} | {row['pass_at_k'][ks[0]]['mean']:.3f} | "
                             f"{row['pass_at_k'][ks[-1]]['mean']:.3f} | {row.get('kept_rows', '-')} | {loss} |")
    lines += ["", "**Time** (this machine; not part of the resumable results)", "",
              "| stage | seconds | generated tokens | processed tokens | processed tokens/s |", "|---|---|---|---|---|"]
    for stage, t in summary["timing"].items():
        rate = f"{t['tokens_per_s']:.1f}" if t["tokens_per_s"] else "-"
        lines.append(f"| {stage} | {t['seconds']:.1f} | {t['generated_tokens']} | {t['processed_tokens']} | {rate} |")
    return "\n".join(lines) + "\n"


def plot_relative_gaps(summary: dict, model: str, base: str) -> list[str]:
    """Relative gap +-SE per verifier / filter, one panel per task."""
    per_task = summary["results"][model]
    fig, axes = _panels(len(per_task))
    for ax, (task, t) in zip(axes, per_task.items()):
        labels, means, ses = [], [], []
        for verifier, by_filter in t["gaps"].items():
            for name, g in by_filter.items():
                labels.append(f"{verifier} {name}")
                means.append(g["relative_gap"]["mean"] or 0.0)
                ses.append(g["relative_gap"]["se"] or 0.0)
        ax.barh(np.arange(len(labels)), means, xerr=ses, color="tab:blue", alpha=0.7)
        ax.set_yticks(np.arange(len(labels)), labels, fontsize=6)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("relative gap")
        ax.set_title(f"{task} (J = {t['accuracy']:.2f})", fontsize=9)
    fig.suptitle(f"Generation-verification gap: {model_label(model)}", fontsize=10)
    return _save(fig, base)


def plot_score_histograms(groups: dict, model: str, base: str) -> list[str]:
    """Histograms of û for correct and incorrect samples, rows = verifiers, columns = tasks."""
    mine = {task: rows for (m, task), rows in groups.items() if m == model}
    names = sorted({n for rows in mine.values() for n in rows[0]["samples"][0]["scores"]})
    fig, axes = plt.subplots(len(names), len(mine), figsize=(3.6 * len(mine), 2.4 * len(names)), squeeze=False,
                             layout="constrained")
    for col, (task, rows) in enumerate(mine.items()):
        for row, name in enumerate(names):
            ax = axes[row, col]
            pairs = [(s["scores"][name], s["correct"]) for r in rows for s in r["samples"] if name in s["scores"]]
            if not pairs:  # the verifier did not run on this task
                ax.axis("off")
                continue
            values, correct = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs], bool)
            bins = np.histogram_bin_edges(values, bins=min(20, max(len(np.unique(values)), 1)))
            for mask, label, color in ((correct, "correct", "tab:green"), (~correct, "incorrect", "tab:red")):
                if mask.any():
                    ax.hist(values[mask], bins=bins, alpha=0.55, label=label, color=color)
            ax.set_title(f"{task}: {name}", fontsize=8)
            ax.legend(fontsize=6)
    return _save(fig, base)


def plot_pass_at_k(summary: dict, model: str, base: str) -> list[str]:
    """pass@k against k for every task."""
    fig, axes = _panels(1)
    for task, t in summary["results"][model].items():
        ks = [int(k) for k in t["pass_at_k"]]
        axes[0].plot(ks, [t["pass_at_k"][str(k)]["mean"] for k in ks], marker="o", ms=3, label=task)
    axes[0].set_xlabel("k")
    axes[0].set_ylabel("pass@k")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7)
    return _save(fig, base)


def plot_rounds(summary: dict, base: str) -> list[str]:
    """J(f_t) and gap against round t per arm; pass@k against k for every round and arm."""
    fig, axes = _panels(2)
    styles = {"self": "-", "ground_truth": "--"}
    for arm, rows in summary["rounds"].items():
        t = [row["round"] for row in rows]
        axes[0].plot(t, [row["accuracy"] for row in rows], marker="o", ls=styles.get(arm, "-"), label=f"J ({arm})")
        axes[0].plot(t, [row["gap"]["mean"] for row in rows], marker="x", ls=styles.get(arm, "-"), label=f"gap ({arm})")
        for row in rows:
            ks = [int(k) for k in row["pass_at_k"]]
            axes[1].plot(ks, [row["pass_at_k"][str(k)]["mean"] for k in ks], ls=styles.get(arm, "-"),
                         label=f"{arm}, round {row['round']}")
    axes[0].set_xlabel("round t")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("k")
    axes[1].set_ylabel("pass@k")
    axes[1].legend(fontsize=6)
    return _save(fig, base)


def make_figures(workdir: str, summary: dict) -> list[str]:
    """Write every figure of a finished run into workdir/figures; returns the paths written."""
    groups = group(read_jsonl(os.path.join(workdir, "results.jsonl")))
    out = os.path.join(workdir, "figures")
    os.makedirs(out, exist_ok=True)
    paths = []
    for model in summary["results"]:
        label = model_label(model)
        paths += plot_relative_gaps(summary, model, os.path.join(out, f"relative_gap_{label}"))
        paths += plot_score_histograms(groups, model, os.path.join(out, f"scores_hist_{label}"))
        paths += plot_pass_at_k(summary, model, os.path.join(out, f"passk_{label}"))
    if summary["rounds"]:
        paths += plot_rounds(summary, os.path.join(out, "rounds"))
    return paths
