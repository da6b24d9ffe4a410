"""Figures of the high_frequency claims (HF-1 .. HF-4), drawn with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advclaims.analysis.figures import plt, save  # Agg is selected there, once for every figure module


def spread_ratios(path: Path, rows: list[dict], *, title: str, threshold: float = 1.0) -> None:
    """HF-1: per stage, the worst class's spread ratio (RMS distance to the class mean over the distance to the
    nearest other class mean) with its 95% CI at each number of images per class (n-free: the points should
    agree); every class's ratio (dots) at the largest."""
    fig, ax = plt.subplots(figsize=(5.8, 3.6))
    sizes = sorted({r["images_per_class"] for r in rows})
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    colors = ("#DD8452", "#55A868", "#C44E52", "#4C72B0")
    for j, n in enumerate(sizes):
        at = {r["layer"]: r for r in rows if r["images_per_class"] == n}
        xs = [i + 0.12 * (j - (len(sizes) - 1) / 2) for i, layer in enumerate(layers) if layer in at]
        worst = [at[layer]["worst_spread_ratio"] for layer in layers if layer in at]
        ci = np.array([at[layer]["worst_spread_ratio_ci"] for layer in layers if layer in at])
        ax.errorbar(xs, worst, yerr=[np.subtract(worst, ci[:, 0]), np.subtract(ci[:, 1], worst)], fmt="o",
                    color=colors[j % len(colors)], capsize=3, zorder=3, label=f"worst class, {n} a class (95% CI)")
        if n == sizes[-1]:
            for x, layer in zip(xs, [layer for layer in layers if layer in at]):
                per_class = at[layer]["per_class_spread_ratio"]
                ax.scatter([x] * len(per_class), per_class, s=8, color="#888888", zorder=2)
    ax.axhline(threshold, ls="--", color="black", lw=1, label=f"claimed bound {threshold:g}")
    ax.set_xticks(range(len(layers)), layers, fontsize=8)
    ax.set_ylabel("RMS d(image, class mean) / d(mean, nearest class)", fontsize=8)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=6)
    ax.set_title(title, fontsize=9)
    save(fig, path)


def trajectory(path: Path, rows: list[dict], pair_curves: dict, *, title: str) -> None:
    """HF-2: log d(adv, mu_target) / d(adv, mu_source) against depth: every source->target pair (thin),
    the mean over images with its 95% CI (thick) and the clean images' mean (dashed). Below 0: nearer the target."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    x = np.arange(len(rows))
    for curve in pair_curves.values():
        ax.plot(x, curve, color="#4C72B0", alpha=0.15, lw=0.8)
    mean = [r["mean_log_ratio"] for r in rows]
    lo = [r["mean_log_ratio"] - r["mean_log_ratio_ci"][0] for r in rows]
    hi = [r["mean_log_ratio_ci"][1] - r["mean_log_ratio"] for r in rows]
    ax.errorbar(x, mean, yerr=[lo, hi], color="#C44E52", lw=2, capsize=4, label="mean over images (95% CI)")
    if all("mean_log_ratio_clean" in r for r in rows):
        ax.plot(x, [r["mean_log_ratio_clean"] for r in rows], color="#55A868", lw=1.5, ls="--",
                label="the same images, clean")
    ax.axhline(0, color="black", lw=1, ls="--")
    ax.set_xticks(x, [r["layer"] for r in rows], fontsize=8)
    ax.set_ylabel("log d(adv, μ_target) / d(adv, μ_source)", fontsize=8)
    ax.plot([], [], color="#4C72B0", alpha=0.4, lw=0.8, label="one source→target pair")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    save(fig, path)


def split_success(path: Path, rows: list[dict], *, margin: float, title: str) -> None:
    """HF-3: targeted success of x + low_pass(delta, r) and x + high_pass(delta, r) against r (95% CI);
    the checked radii are shaded."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    radii = [r["radius"] for r in rows]
    for part, color in (("low", "#4C72B0"), ("high", "#C44E52")):
        v = np.array([r[f"success_{part}"] for r in rows])
        ci = np.array([r[f"success_{part}_ci"] for r in rows])
        ax.plot(radii, v, color=color, marker=".", label=f"x + δ_{part}")
        ax.fill_between(radii, ci[:, 0], ci[:, 1], color=color, alpha=0.2)
    checked = [r["radius"] for r in rows if r["checked"]]
    if checked:
        ax.axvspan(checked[0] - 0.5, checked[-1] + 0.5, color="#DDDDDD", zorder=0,
                   label=f"checked radii (high − low > {margin:g})")
    ax.set_xlabel("filter radius r (frequencies ≤ r are 'low')")
    ax.set_ylabel("targeted success")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    save(fig, path)


def correlation_matrix(path: Path, matrix: np.ndarray, *, title: str) -> None:
    """HF-4: mean correlation of the perturbations' high-band spectra (rows: target class) with each
    class's mean high-band spectrum (columns); the row maximum is outlined."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    im = ax.imshow(matrix, cmap="viridis")
    for t, row in enumerate(matrix):
        if np.isfinite(row).any():
            c = int(np.nanargmax(row))
            ax.add_patch(plt.Rectangle((c - 0.5, t - 0.5), 1, 1, fill=False, ec="white", lw=1.5))
    k = matrix.shape[0]
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("class of the mean spectrum")
    ax.set_ylabel("target class of the perturbations")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Pearson r")
    ax.set_title(title, fontsize=8)
    save(fig, path)
