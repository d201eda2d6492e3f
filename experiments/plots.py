"""Figures and tables of the inference-sharpening experiment, from its results file and summary.

    python -m experiments.plots --workdir DIR      # rewrites DIR/figures/* and DIR/summary.md

Figures (PNG and PDF, one per model where marked):
  accuracy_vs_n_<model>   accuracy against N per self-reward with +-1 standard-error bands, and
                          greedy, single-sample and pass@N lines, one panel per task (paper Fig. 2);
  loglik_hist_<model>     histograms of the sequence log-likelihood log pi(y|x) of correct and
                          incorrect samples, one panel per task (paper Fig. 3);
  lift_heatmap            best-of-N_max accuracy minus greedy accuracy, in percentage points, per
                          model x task and reward (the layout of paper Fig. 1a); only when the
                          run has several models.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sharpen_jax.jsonl import read_jsonl  # noqa: E402
from sharpen_jax.selection import best_of_n  # noqa: E402

REWARD_LABELS = {"log_likelihood": "log-likelihood", "length_normalized": "length-normalized",
                 "majority": "majority vote", "verifier": "verifier"}


@dataclasses.dataclass(frozen=True)
class TaskArrays:
    """One (model, task) of a results file as arrays over B prompts x N samples."""

    correct: np.ndarray  # bool[B, N]
    greedy: np.ndarray  # bool[B]
    answers: np.ndarray  # object[B, N], extracted answers or None
    rewards: dict[str, np.ndarray]  # name -> float64[B, N]


def task_arrays(records: list[dict]) -> dict[tuple[str, str], TaskArrays]:
    """Group results.jsonl records by (model, task), prompts sorted by index, into arrays."""
    groups = collections.defaultdict(list)
    for record in records:
        groups[(record["model"], record["task"])].append(record)
    out = {}
    for key, rows in groups.items():
        rows.sort(key=lambda r: r["index"])
        names = list(rows[0]["samples"][0]["rewards"])
        answers = np.empty((len(rows), len(rows[0]["samples"])), object)
        answers[:] = [[s["extracted"] for s in r["samples"]] for r in rows]
        out[key] = TaskArrays(
            correct=np.array([[s["correct"] for s in r["samples"]] for r in rows], bool),
            greedy=np.array([r["greedy"]["correct"] for r in rows], bool), answers=answers,
            rewards={n: np.array([[s["rewards"][n] for s in r["samples"]] for r in rows], np.float64) for n in names})
    return out


def model_label(model: str) -> str:
    """A short, file-name-safe label for a model spec (the last path component)."""
    base = os.path.basename(os.path.normpath(model)) or model
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base.removesuffix(".gguf"))


def _save(fig, base: str) -> list[str]:
    paths = [f"{base}.png", f"{base}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return paths


def _panels(count: int):
    fig, axes = plt.subplots(1, count, figsize=(4.2 * count, 3.6), squeeze=False, layout="constrained")
    return fig, axes[0]


def plot_accuracy_vs_n(summary: dict, model: str, base: str) -> list[str]:
    """Accuracy vs N per reward with +-SE bands; greedy, single sample and pass@N for reference."""
    per_task = summary["results"][model]
    fig, axes = _panels(len(per_task))
    for ax, (task, table) in zip(axes, per_task.items()):
        ns = [int(n) for n in table["pass_at_n"]]
        for name, by_n in table["best_of_n"].items():
            mean = np.array([by_n[str(n)]["mean"] for n in ns])
            se = np.array([by_n[str(n)]["se"] for n in ns])
            line, = ax.plot(ns, mean, marker="o", ms=3, label=f"best-of-N: {REWARD_LABELS.get(name, name)}")
            ax.fill_between(ns, mean - se, mean + se, color=line.get_color(), alpha=0.15)
        pass_mean = [table["pass_at_n"][str(n)]["mean"] for n in ns]
        ax.plot(ns, pass_mean, color="0.35", ls=":", marker=".", label="pass@N")
        for key, style, label in (("greedy", "--", "greedy"), ("single_sample", "-.", "single sample (T=1)")):
            value, se = table[key]["mean"], table[key]["se"]
            ax.axhline(value, color="k", ls=style, lw=1, label=label)
            ax.axhspan(value - se, value + se, color="k", alpha=0.06)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("N (samples)")
        ax.set_title(f"{task} ({table['num_prompts']} prompts)")
    axes[0].set_ylabel("accuracy")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"Best-of-N with self-rewards: {model_label(model)}", fontsize=10)
    return _save(fig, base)


def plot_loglik_histograms(arrays: dict[tuple[str, str], TaskArrays], model: str, base: str,
                           reward: str = "log_likelihood") -> list[str]:
    """Histograms (densities) of a reward, default log pi(y|x), for correct vs incorrect samples."""
    per_task = {task: a for (m, task), a in arrays.items() if m == model}
    fig, axes = _panels(len(per_task))
    for ax, (task, a) in zip(axes, per_task.items()):
        values, correct = a.rewards[reward].ravel(), a.correct.ravel()
        bins = np.histogram_bin_edges(values, bins=30)
        for mask, label, color in ((correct, "correct", "tab:green"), (~correct, "incorrect", "tab:red")):
            if mask.any():
                ax.hist(values[mask], bins=bins, density=True, alpha=0.5, color=color,
                        label=f"{label} ({int(mask.sum())})")
        ax.set_xlabel(f"{REWARD_LABELS.get(reward, reward)} of a sample")
        auc = best_of_n.dominance_auc(values, correct)
        ax.set_title(task if auc is None else f"{task}: P(correct > incorrect) = {auc:.2f}", fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("density")
    fig.suptitle(f"Self-reward of correct vs incorrect samples: {model_label(model)}", fontsize=10)
    return _save(fig, base)


def lift_table(summary: dict, reward: str) -> tuple[list[str], list[str], np.ndarray]:
    """(models, tasks, lift[M, T]): best-of-N_max accuracy minus greedy accuracy, in percentage points."""
    models = list(summary["results"])
    tasks = sorted({t for per_task in summary["results"].values() for t in per_task})
    lift = np.full((len(models), len(tasks)), np.nan)
    for i, model in enumerate(models):
        for j, task in enumerate(tasks):
            table = summary["results"][model].get(task)
            if table is not None:
                top = str(max(int(n) for n in table["best_of_n"][reward]))
                lift[i, j] = 100.0 * (table["best_of_n"][reward][top]["mean"] - table["greedy"]["mean"])
    return models, tasks, lift


def plot_lift_heatmap(summary: dict, base: str) -> list[str]:
    """Heat map per reward of the best-of-N_max lift over greedy (percentage points), models x tasks."""
    names = summary["rewards"]
    fig, axes = plt.subplots(1, len(names), figsize=(1.0 + 3.6 * len(names), 1.6 + 0.45 * len(summary["results"])),
                             squeeze=False, layout="constrained")
    for ax, name in zip(axes[0], names):
        models, tasks, lift = lift_table(summary, name)
        bound = max(1.0, float(np.nanmax(np.abs(lift))))
        image = ax.imshow(lift, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
        for (i, j), value in np.ndenumerate(lift):
            ax.text(j, i, "-" if np.isnan(value) else f"{value:+.1f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(len(models)), [model_label(m) for m in models], fontsize=7)
        ax.set_title(REWARD_LABELS.get(name, name), fontsize=8)
        fig.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
    fig.suptitle("Best-of-N_max accuracy minus greedy (percentage points)", fontsize=10)
    return _save(fig, base)


def make_figures(workdir: str) -> list[str]:
    """Write every figure of a finished run into workdir/figures; returns the paths written."""
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    arrays = task_arrays(read_jsonl(os.path.join(workdir, "results.jsonl")))
    out = os.path.join(workdir, "figures")
    os.makedirs(out, exist_ok=True)
    paths = []
    for model in summary["results"]:
        label = model_label(model)
        paths += plot_accuracy_vs_n(summary, model, os.path.join(out, f"accuracy_vs_n_{label}"))
        paths += plot_loglik_histograms(arrays, model, os.path.join(out, f"loglik_hist_{label}"))
    if len(summary["results"]) > 1:
        paths += plot_lift_heatmap(summary, os.path.join(out, "lift_heatmap"))
    return paths


def _cell(entry: dict) -> str:
    return f"{entry['mean']:.3f} ± {entry['se']:.3f}"


def markdown_tables(summary: dict) -> str:
    """The summary as markdown: per model and task, greedy and single sample, then best-of-N rows."""
    lines = []
    for model, per_task in summary["results"].items():
        for task, table in per_task.items():
            ns = list(table["pass_at_n"])
            lines += [f"**{model_label(model)} / {task}** ({table['num_prompts']} prompts, N_max = "
                      f"{table['num_samples']}): greedy {_cell(table['greedy'])}, single sample "
                      f"{_cell(table['single_sample'])}", "",
                      "| method | " + " | ".join(f"N={n}" for n in ns) + " |",
                      "|---|" + "---|" * len(ns)]
            for name, by_n in table["best_of_n"].items():
                lines.append(f"| best-of-N: {REWARD_LABELS.get(name, name)} | "
                             + " | ".join(_cell(by_n[n]) for n in ns) + " |")
            lines.append("| pass@N | " + " | ".join(_cell(table["pass_at_n"][n]) for n in ns) + " |")
            auc = ", ".join(f"{REWARD_LABELS.get(k, k)} {v:.2f}" for k, v in table["dominance_auc"].items()
                            if v is not None)
            lines += ["", f"P(reward of a correct sample > of an incorrect one): {auc or 'n/a (one class empty)'}",
                      ""]
    return "\n".join(lines)


def main() -> None:
    """Command line: rewrite summary.md and the figures of a finished run from its files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a finished inference_sharpening run")
    args = parser.parse_args()
    with open(os.path.join(args.workdir, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(args.workdir, "summary.md"), "w") as f:
        f.write(markdown_tables(summary))
    for path in make_figures(args.workdir):
        print(path)


if __name__ == "__main__":
    main()
