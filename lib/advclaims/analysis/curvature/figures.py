"""Figures of "With friends like these, who needs adversaries?" (Figs. 1-5, Table 1), matplotlib Agg."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advclaims.analysis.figures import plt, save

CLASS_COLOURS = plt.get_cmap("tab10")


def _image(ax, img, title: str, *, symmetric: bool = True) -> None:
    """An image (C, H, W) as a picture; directions are shown with a symmetric colour scale."""
    a = img.detach().cpu().float().numpy()
    a = a[0] if a.shape[0] == 1 else np.transpose((a - a.min()) / max(float(np.ptp(a)), 1e-12), (1, 2, 0))
    if a.ndim == 2:
        m = float(np.abs(a).max()) or 1.0
        lim = (-m, m) if symmetric else (None, None)
        ax.imshow(a, cmap="RdBu_r" if symmetric else "gray", vmin=lim[0], vmax=lim[1])
    else:
        ax.imshow(a)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def spectra(path: Path, curv) -> None:
    """CV-1: each class's principal curvatures, most positive to most negative."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for cc in curv.classes:
        k = cc.curvatures.numpy()
        ax.plot(np.arange(len(k)), k, lw=1, color=CLASS_COLOURS(cc.target % 10), label=f"class {cc.target}")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("direction index (sorted)")
    ax.set_ylabel("curvature of F_c - F_ĉ")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(f"Alg. 1 principal curvatures per class ({curv.model_label}; h = {curv.h:.3g})", fontsize=9)
    save(fig, path)


def median_scores(path: Path, curves, *, title: str, c: int | None = None) -> None:
    """Fig. 2: the median class-c score (30th-70th percentile band) and the median top non-target score along class c's
    direction; the fraction of non-c images moved into c, their median softmax c score, and the fraction of c images
    that stay in c (dashed)."""
    n_cls = curves.pred.shape[0]
    c = int(np.random.default_rng(0).integers(n_cls)) if c is None else c   # "a randomly selected target class"
    s = curves.s.numpy()
    target, top_other = curves.own[c].numpy(), curves.top_other[c].numpy()   # (S, n)
    pred = curves.pred[c].numpy()
    pred0 = pred[curves.zero]
    soft = np.exp(target - curves.lse[c].numpy())
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for vals, colour, name in ((target, "#C44E52", f"class {c} (target)"), (top_other, "#4C72B0", "top non-target")):
        ax1.plot(s, np.median(vals, 1), color=colour, label=name)
        ax1.fill_between(s, np.percentile(vals, 30, 1), np.percentile(vals, 70, 1), color=colour, alpha=0.25)
    ax1.set_xlabel("s (L2 norm of the perturbation)")
    ax1.set_ylabel("class score (logit)")
    ax1.set_title("median class score (30th-70th percentile)", fontsize=8)
    ax1.legend(fontsize=7)
    outside, inside = pred0 != c, pred0 == c
    ax2.plot(s, (pred[:, outside] == c).mean(1), color="#C44E52", label="non-target moved into target")
    ax2.plot(s, np.median(soft[:, outside], 1), color="#DD8452", label="their median softmax target score")
    if inside.any():
        ax2.plot(s, (pred[:, inside] == c).mean(1), "k--", label="target that stays target")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_xlabel("s")
    ax2.set_title("transition into target class", fontsize=8)
    ax2.legend(fontsize=7)
    fig.suptitle(f"{title} of class {c} ({curves.model_label})", fontsize=9)
    save(fig, path)


def direction_grid(path: Path, curves) -> None:
    """Fig. 2 (right): each class's direction as an image."""
    n = curves.directions.shape[0]
    cols = min(n, 10)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.35 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            _image(ax, curves.directions[i], f"class {i}")
        else:
            ax.axis("off")
    fig.suptitle(f"{curves.kind} curvature direction per class", fontsize=8)
    save(fig, path)


def per_sample_curves(path: Path, positive, negative, *, c: int | None = None, samples: int = 40) -> None:
    """Fig. 1: class-c score along d1 (most positive) and d2 (most negative) for random test images, one curve each,
    coloured by the predicted label at s = 0; the two directions shown as images below."""
    n_cls, _, n = positive.pred.shape
    rng = np.random.default_rng(1)
    c = int(rng.integers(n_cls)) if c is None else c
    pick = rng.choice(n, size=min(samples, n), replace=False)
    fig = plt.figure(figsize=(8, 5))
    grid = fig.add_gridspec(2, 2, height_ratios=(3, 1.3))
    panels = ((positive, "d1: most positively curved"), (negative, "d2: most negatively curved"))
    for j, (curves, name) in enumerate(panels):
        ax = fig.add_subplot(grid[0, j])
        pred0 = curves.pred[c, curves.zero].numpy()
        for i in pick:
            ax.plot(curves.s.numpy(), curves.own[c, :, i].numpy(), lw=0.8, color=CLASS_COLOURS(int(pred0[i]) % 10),
                    alpha=0.8)
        ax.set_xlabel("s")
        ax.set_ylabel(f"score of class {c}")
        ax.set_title(name, fontsize=8)
        _image(fig.add_subplot(grid[1, j]), curves.directions[c], name.split(":")[0])
    fig.suptitle(f"Fig. 1: per-image class-{c} score curves ({positive.model_label}; colour = label at s = 0)",
                 fontsize=9)
    save(fig, path)


SUBSPACE_STYLE = {"pos": ("S_pos", "#C44E52"), "neg": ("S_neg", "#4C72B0"), "posneg": ("S_pos∪neg", "#8172B3"),
                  "flat": ("S_flat", "#55A868"), "hi": ("S_hi", "#C44E52"), "lo": ("S_lo", "#55A868")}


def subspace_curves(path: Path, curves: dict, *, ylabel: str, reference: float | None, chance: float | None,
                    title: str) -> None:
    """Figs. 3 (top) and 4: a value against the subspace's dimension, one curve per subspace."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for kind, pts in curves.items():
        name, colour = SUBSPACE_STYLE.get(kind, (kind, None))
        xs, ys = zip(*sorted(pts))
        ax.plot(np.maximum(xs, 0.5), ys, marker="o", ms=3, label=name, color=colour)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=0.8, label="clean")
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("subspace dimension")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    save(fig, path)


def fraction_panels(path: Path, curves: dict, *, title: str) -> None:
    """Fig. 3 (bottom): fraction of each perturbation's L2 norm inside each subspace, against its dimension."""
    names = list(curves)
    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3), sharey=True)
    for ax, name in zip(np.atleast_1d(axes), names):
        for kind, pts in curves[name].items():
            label, colour = SUBSPACE_STYLE[kind]
            xs, ys = zip(*sorted(pts))
            ax.plot(np.maximum(xs, 0.5), ys, marker="o", ms=2, label=label, color=colour)
        ax.set_xscale("log")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("subspace dimension")
    np.atleast_1d(axes)[0].set_ylabel("fraction of L2 norm")
    np.atleast_1d(axes)[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    save(fig, path)


def confined_norms(path: Path, rows: list[dict], *, title: str) -> None:
    """Fig. 5: mean norm of confined DeepFool (blue) and of the images' projections (red) against d."""
    d = [r["d"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(d, [r["confined_deepfool_norm"] for r in rows], "o-", color="#4C72B0", label="confined DeepFool norm")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("d (S_hi dimensions)")
    ax.set_ylabel("mean L2 norm of the perturbation", color="#4C72B0")
    ax2 = ax.twinx()
    ax2.plot(d, [r["projection_norm"] for r in rows], "s-", color="#C44E52", label="image projection norm")
    ax2.set_ylabel("mean L2 norm of the projected image", color="#C44E52")
    ax.set_title(title, fontsize=9)
    save(fig, path)


def fooling_rates(path: Path, rows: list[dict], scales, *, title: str) -> None:
    """Table 1 as a figure: fooling rate of transferred DeepFool perturbations against f, one line per d_low."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for r in rows:
        ax.plot(scales, [r[f"fooling_f{f}"] for f in scales], marker="o", ms=3,
                label=f"d_low {r['d_low']} (acc {r['accuracy']:.2f})")
    ax.set_xlabel("f (perturbation scale)")
    ax.set_ylabel("fooling rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    save(fig, path)
