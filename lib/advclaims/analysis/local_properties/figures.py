"""Figures of "Dissecting local properties of adversarial examples": Figs. 1, 2, 3, 5, 6 and 9 and
Tables 2 and 4 as bar charts, drawn with matplotlib's Agg backend into PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advclaims.analysis.figures import plt, save

COLORS = ["#55A868", "#C44E52", "#4C72B0", "#8172B2", "#CCB974", "#64B5CD"]


def curves(path: Path, radii, rows: dict[str, list[dict]], *, names: dict[str, str], xlabel: str, title: str,
           chance: float | None = None) -> None:
    """One panel per model: accuracy against radius for each named curve, with its 95% CI band."""
    fig, axes = plt.subplots(1, len(rows), figsize=(4.6 * len(rows), 3.4), squeeze=False)
    for ax, (model, table) in zip(axes[0], rows.items()):
        for color, (key, label) in zip(COLORS, names.items()):
            if key not in table[0]:
                continue
            ax.plot(radii, [r[key] for r in table], color=color, label=label, marker=".")
            ax.fill_between(radii, [r[f"{key}_ci"][0] for r in table], [r[f"{key}_ci"][1] for r in table],
                            color=color, alpha=0.2)
        if chance is not None:
            ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
        ax.set_ylim(0, 1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy")
        ax.set_title(model, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    save(fig, path)


def spectra(path: Path, maps: dict[str, np.ndarray], *, radius: float, title: str) -> None:
    """Mean log-amplitude spectra (centred) and their differences; the inner band's circle on the latter."""
    fig, axes = plt.subplots(1, len(maps), figsize=(3.0 * len(maps), 3.0), squeeze=False)
    diffs = [m for name, m in maps.items() if "-" in name]
    lim = max(float(np.abs(m).max()) for m in diffs) if diffs else 1.0  # one scale: differences compare
    amplitudes = [m for name, m in maps.items() if "-" not in name]
    lo, hi = min(float(m.min()) for m in amplitudes), max(float(m.max()) for m in amplitudes)
    for ax, (name, m) in zip(axes[0], maps.items()):
        if "-" in name:
            im = ax.imshow(m, cmap="bwr", vmin=-lim, vmax=lim)
            h, w = m.shape
            ax.add_patch(plt.Circle((w // 2, h // 2), radius, fill=False, ls="--", color="k", lw=0.8))
        else:
            im = ax.imshow(m, cmap="jet", vmin=lo, vmax=hi)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    save(fig, path)


def perturbation_grid(path: Path, nat: np.ndarray, panels: dict[str, dict[str, np.ndarray]], *, eps: float,
                      captions: list[str], title: str) -> None:
    """Fig. 3: per row one image: natural, then per model its adversarial example and perturbation
    (overall scaled to [0, 1], mean over channels, each channel; red +eps, blue -eps)."""
    n, c = nat.shape[0], nat.shape[1]
    cols = [("natural", None, None)]
    for model in panels:
        cols += [(f"adv ({model})", model, "adv"), (f"δ overall ({model})", model, "overall"),
                 (f"δ mean ({model})", model, "mean")]
        cols += [(f"δ ch{j + 1} ({model})", model, j) for j in range(c)] if c > 1 else []
    fig, axes = plt.subplots(n, len(cols), figsize=(1.5 * len(cols), 1.6 * n + 0.6), squeeze=False)
    for i in range(n):
        for k, (name, model, what) in enumerate(cols):
            ax = axes[i, k]
            ax.axis("off")
            if model is None:
                ax.imshow(_rgb(nat[i]), cmap="gray", vmin=0, vmax=1)
                ax.set_title(captions[i], fontsize=6)
                continue
            delta = panels[model]["delta"][i]
            if what == "adv":
                ax.imshow(_rgb(panels[model]["adv"][i]), cmap="gray", vmin=0, vmax=1)
            elif what == "overall":
                ax.imshow(_rgb((delta + eps) / (2 * eps)), cmap="bwr", vmin=0, vmax=1)
            elif what == "mean":
                ax.imshow(delta.mean(0), cmap="bwr", vmin=-eps, vmax=eps)
            else:
                ax.imshow(delta[what], cmap="bwr", vmin=-eps, vmax=eps)
            if i == 0:
                ax.set_title(name, fontsize=6)
    fig.suptitle(title, fontsize=9)
    save(fig, path)


def _rgb(img: np.ndarray) -> np.ndarray:
    return img[0] if img.shape[0] == 1 else np.clip(img.transpose(1, 2, 0), 0, 1)


def outcome_layers(path: Path, tables: dict[str, list[dict]], *, title: str) -> None:
    """Tables 2 and 4 as bars: mean Max and Total per stage, successful vs failed attacks."""
    fig, axes = plt.subplots(len(tables), 2, figsize=(9, 3.0 * len(tables)), squeeze=False)
    for row_axes, (attack, rows) in zip(axes, tables.items()):
        layers = [r["layer"] for r in rows]
        x = np.arange(len(layers))
        for ax, kind in zip(row_axes, ("max", "total")):
            ax.bar(x - 0.2, [r[f"{kind}_success"] for r in rows], width=0.4, label="successful", color="#C44E52")
            ax.bar(x + 0.2, [r[f"{kind}_failed"] for r in rows], width=0.4, label="failed", color="#4C72B0")
            ax.set_xticks(list(x), layers, fontsize=8)
            ax.set_yscale("log")
            ax.set_title(f"{attack}: {kind.capitalize()} |f(x_adv) - f(x)| per image", fontsize=9)
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    save(fig, path)


def weight_decay_panels(path: Path, wds, magnitude, per_layer: dict[str, list[float]], accuracy: dict[str, list[float]],
                        *, kind: str, title: str) -> None:
    """Figs. 5 / 9: (a) kernel magnitude, (b-g) response differences per stage, (h) accuracies, vs weight decay."""
    panels = [("(a) mean |kernel|", {"": magnitude})] + \
             [(f"({chr(ord('b') + k)}) {layer} {kind}", {"": v}) for k, (layer, v) in enumerate(per_layer.items())] + \
             [(f"({chr(ord('b') + len(per_layer))}) accuracy", accuracy)]
    cols = 4
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (name, series) in zip(axes.flat, panels):
        for color, (label, values) in zip(COLORS, series.items()):
            ax.plot(wds, values, marker="o", color=color, label=label or None)
        ax.set_xscale("log")
        ax.set_xlabel("weight decay", fontsize=8)
        ax.set_title(name, fontsize=9)
        if len(series) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    save(fig, path)
