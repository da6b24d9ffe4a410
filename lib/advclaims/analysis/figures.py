"""Figures that mirror the papers' figures, drawn with matplotlib's Agg backend into PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save(fig, path: Path) -> None:
    """Write a figure as PNG (creating the folder) and free it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)




def bars(path: Path, estimates: dict, *, ylabel: str, title: str, ylim: tuple[float, float] | None = None) -> None:
    """One bar per named Estimate, with its confidence interval as an error bar; ``ylim`` fixes the axis (e.g. (0, 1)
    for accuracies), matplotlib's own range otherwise."""
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    names = list(estimates)
    vals = [estimates[k].value for k in names]
    err = [[estimates[k].value - estimates[k].low for k in names], [estimates[k].high - estimates[k].value for k in names]]
    ax.bar(names, vals, yerr=err, capsize=4, color=["#888888", "#4C72B0", "#C44E52", "#55A868"][: len(names)])
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    save(fig, path)


def paired_layers(path: Path, rows: list[dict], *, models: tuple[str, str], title: str,
                  keys: tuple[str, str] = ("std", "adv")) -> None:
    """Max and Total per stage for two sets (Table 1 as a figure), log scale, 95% CI bars; ``keys`` name
    the row columns (``{kind}_{key}`` and ``{kind}_{key}_ci``) of the two bars, ``models`` their labels."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    layers = [r["layer"] for r in rows]
    x = range(len(layers))
    for ax, kind in zip(axes, ("max", "total")):
        for offset, (tag, name, color) in zip((-0.2, 0.2), ((keys[0], models[0], "#C44E52"), (keys[1], models[1], "#4C72B0"))):
            vals = [r[f"{kind}_{tag}"] for r in rows]
            lo = [r[f"{kind}_{tag}"] - r[f"{kind}_{tag}_ci"][0] for r in rows]
            hi = [r[f"{kind}_{tag}_ci"][1] - r[f"{kind}_{tag}"] for r in rows]
            ax.bar([i + offset for i in x], vals, width=0.4, yerr=[lo, hi], capsize=3, label=name, color=color)
        ax.set_xticks(list(x), layers, fontsize=8)
        ax.set_yscale("log")
        ax.set_title(f"{kind.capitalize()} |f(x_adv) - f(x)| per image", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    save(fig, path)
