"""Figures of the information-bottleneck claims: Table 1's grouped accuracies, Fig. 5's beta sweep, and accuracy
beside perturbation size per attack (Tables 3 and 4)."""

from __future__ import annotations
from __future__ import annotations

from pathlib import Path

import numpy as np


from advclaims.analysis.figures import plt, save
from advclaims.analysis.info_bottleneck.suite import ATTACK_LABELS


def grouped_bars(path: Path, acc: dict, *, labels: dict, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    groups = list(acc)
    width = 0.8 / len(labels)
    for j, (key, label) in enumerate(labels.items()):
        est = [acc[g][key] for g in groups]
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [e.value for e in est], width=width, label=label,
               yerr=[[e.value - e.low for e in est], [e.high - e.value for e in est]], capsize=3)
    ax.set_xticks(range(len(groups)), ["Clean" if g == "clean" else ATTACK_LABELS[g] for g in groups])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    save(fig, path)


def beta_sweep(path: Path, rows: list[dict], channels: int, *, title: str) -> None:
    """Fig. 5: (a) accuracy of robust / non-robust features vs beta, (b) channels assigned."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    betas = [r["beta"] for r in rows]
    for key, label, style in (("robust_acc_clean", "R. clean", "-o"), ("non_robust_acc_clean", "NR. clean", "-s"),
                              ("robust_acc_pgd", "R. PGD", "--o"), ("non_robust_acc_pgd", "NR. PGD", "--s")):
        lo = [r[key] - r[f"{key}_ci"][0] for r in rows]
        hi = [r[f"{key}_ci"][1] - r[key] for r in rows]
        ax1.errorbar(betas, [r[key] for r in rows], yerr=[lo, hi], fmt=style, capsize=3, label=label)
    ax1.set_xscale("log")
    ax1.set_ylim(0, 1)
    ax1.set_xlabel("beta")
    ax1.set_ylabel("accuracy")
    ax1.set_title("(a) accuracy of the distilled features (Fig. 5a-b)", fontsize=9)
    ax1.legend(fontsize=7)
    ax2.plot(betas, [r["robust_channels"] for r in rows], "-o", label="robust")
    ax2.plot(betas, [r["non_robust_channels"] for r in rows], "-s", label="non-robust")
    ax2.axhline(channels, color="grey", lw=0.8, ls=":")
    ax2.set_xscale("log")
    ax2.set_xlabel("beta")
    ax2.set_ylabel(f"channels per image (of {channels})")
    ax2.set_title("(b) number of assigned channels (Fig. 5c)", fontsize=9)
    ax2.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    save(fig, path)


def accuracy_and_norms(path: Path, rows: list[dict], *, eps: float, title: str) -> None:
    """Accuracy per attack (95% CI) beside its mean L2 and L-inf norms over its successes, eps marked."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    names = [r["attack"] for r in rows]
    labels = ("accuracy", "mean L2 norm (successful attacks)", "mean L-inf norm (successful attacks)")
    for ax, key, label in zip(axes, ("accuracy", "l2", "linf"), labels):
        vals = [np.nan if r[key] is None else r[key] for r in rows]
        err = [[v - r.get(f"{key}_ci", [v] * 2)[0] for v, r in zip(vals, rows)],
               [r.get(f"{key}_ci", [v] * 2)[1] - v for v, r in zip(vals, rows)]]
        ax.bar(range(len(rows)), vals, yerr=err, capsize=3, color="#4C72B0")
        ax.set_xticks(range(len(rows)), names, rotation=40, ha="right", fontsize=7)
        ax.set_title(label, fontsize=9)
    axes[0].set_ylim(0, 1)
    axes[2].axhline(eps, color="grey", lw=0.8, ls=":", label=f"eps {eps:g}")
    axes[2].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    save(fig, path)
