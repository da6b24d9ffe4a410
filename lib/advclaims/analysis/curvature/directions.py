"""Class scores along principal curvature directions (curvature paper, Sec. 4.1, Figs. 1-2): claims CV-2..CV-5.

Every test image x_n is moved to x_n + s d_c along one unit direction d_c per class c (its most positively
curved, most negatively curved or flattest direction from Algorithm 1), for s on a symmetric grid.
Images are not clamped, as in the paper's mean-subtracted image space.

The range of s is ours: the paper does not state it (Figs. 1-2 go until the classes have changed). It is the
protocol parameter ``s_max``, in units of the mean norm of the mean-subtracted test images (``unit``): the
curves are computed once out to the largest of S_MAX_FACTORS, and each statistic is reported at every factor
(the default's in Measurement.statistics, the others in Measurement.sensitivity["s_max"]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as sps

from advclaims.attacks._common import frozen
from advclaims.attacks.fastpath import fast_model
from advclaims.verdict import stats
from advclaims.verdict.measurement import Measurement, measures
from advclaims.analysis.curvature import figures as cfig
from advclaims.analysis.curvature.operator import PrincipalCurvatures

S_MAX_FACTORS = (0.5, 1.0, 2.0)   # s_max / mean image norm at which the claims are read (expected/: s_max)
S_MAX_DEFAULT = 1.0
S_MAX = "s_max"               # the sensitivity parameter of CV-2 .. CV-5 (expected/)
S_POINTS = 33                 # s / (2 * unit) in {-1, -15/16, ..., 1}: 5, 9 and 17 |s| levels at the three factors
FIELDS = ("pred", "own", "top_other", "lse", "moved")


@dataclass
class ScoreCurves:
    """What the claims read from the logits of image n moved by s[k] along class c's direction (``kind``), each
    (C, S, n): the prediction, the class-c score F_c, the top non-c score, the log-sum-exp of all scores (for the
    softmax), and the mean |change of every class score| from s = 0. (Full logits would not fit for 100 classes.)"""

    kind: str
    s: torch.Tensor               # (S,)
    pred: torch.Tensor
    own: torch.Tensor
    top_other: torch.Tensor
    lse: torch.Tensor
    moved: torch.Tensor
    labels: torch.Tensor          # (n,)
    directions: torch.Tensor      # (C, channels, H, W)
    model_label: str = ""
    unit: float | None = None     # the mean image norm s_max is counted in (None: the grid spans the largest factor)

    def __post_init__(self):
        if self.unit is None:
            self.unit = float(self.s.abs().max()) / max(S_MAX_FACTORS)

    @classmethod
    def from_logits(cls, kind: str, s: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                    directions: torch.Tensor, model_label: str = "", unit: float | None = None) -> "ScoreCurves":
        """From logits (C, S, n, K): logits[c] is the set moved along class c's direction."""
        zero = int(s.abs().argmin())
        parts = [_summary(logits[c], c, zero) for c in range(logits.shape[0])]
        return cls(kind, s, *(torch.stack([p[i] for p in parts]) for i in range(len(FIELDS))), labels, directions,
                   model_label, unit)

    def within(self, factor: float) -> "ScoreCurves":
        """The curves for |s| <= factor * unit (s_max = factor times the mean image norm)."""
        s_max = factor * self.unit
        if s_max > float(self.s.abs().max()) * (1 + 1e-6):
            raise ValueError(f"s_max = {factor:g} x {self.unit:.4g} lies beyond the computed grid (|s| <= "
                             f"{float(self.s.abs().max()):.4g}); compute the curves out to the largest factor")
        keep = self.s.abs() <= s_max * (1 + 1e-6)
        return ScoreCurves(self.kind, self.s[keep], *(getattr(self, f)[:, keep] for f in FIELDS), self.labels,
                           self.directions, self.model_label, self.unit)

    @property
    def zero(self) -> int:
        return int(self.s.abs().argmin())

    @property
    def levels(self) -> np.ndarray:
        """The |s| levels, from 0 up; each pairs the grid points +s and -s."""
        return self.s[self.zero:].numpy()

    def at_level(self, values: torch.Tensor) -> torch.Tensor:
        """Average a (…, S, …) tensor whose axis 1 runs over s into |s| levels: (…, L, …)."""
        z = self.zero
        pos, neg = values[:, z:], values[:, :z + 1].flip(1)
        return (pos + neg) / 2

    def payload(self) -> dict:
        return {k: getattr(self, k) for k in ("s", *FIELDS, "labels", "directions", "unit")}


def _summary(logits: torch.Tensor, c: int, zero: int) -> tuple[torch.Tensor, ...]:
    """The FIELDS of logits (S, n, K) moved along class c's direction."""
    others = logits.clone()
    others[..., c] = float("-inf")
    return (logits.argmax(-1), logits[..., c], others.amax(-1), logits.logsumexp(-1),
            (logits - logits[zero]).abs().mean(-1))


def perturbation_range(images: torch.Tensor, mean_image: torch.Tensor) -> float:
    """The unit of s_max: the mean L2 norm of the mean-subtracted images."""
    return float((images - mean_image).flatten(1).norm(dim=1).mean())


@torch.no_grad()
def score_curves(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, curv: PrincipalCurvatures,
                 kind: str, *, unit: float, points: int = S_POINTS, batch: int = 1000) -> ScoreCurves:
    """Every image moved along every class's ``kind`` direction, for s in linspace(-s_big, s_big), s_big the
    largest of S_MAX_FACTORS times ``unit`` (the mean image norm)."""
    s_big = max(S_MAX_FACTORS) * unit
    s = torch.linspace(-s_big, s_big, points)
    dirs = torch.stack([curv.direction(c, kind) for c in range(len(curv.classes))]).to(images)
    zero = int(s.abs().argmin())
    parts = []
    with frozen(model):
        forward = fast_model(model, images)  # the model's logits up to float rounding (NiN, CPU: 1.45x)
        for c in range(len(dirs)):
            logits = torch.stack([torch.cat([forward(images[i:i + batch] + t * dirs[c])
                                             for i in range(0, len(images), batch)]) for t in s.tolist()])  # (S, n, K)
            parts.append([f.cpu() for f in _summary(logits, c, zero)])
    fields = (torch.stack([p[i] for p in parts]) for i in range(len(FIELDS)))
    return ScoreCurves(kind, s, *fields, labels.cpu(), dirs.cpu(), getattr(curv, "model_label", ""), unit)


def across_s_max(analysis, *curves: ScoreCurves) -> Measurement:
    """``analysis(*curves)`` at the default s_max, with its statistics at every other factor in
    Measurement.sensitivity["s_max"] (the curves are cut from the same grid, computed once)."""
    at = {f: analysis(*(c.within(f) for c in curves)) for f in S_MAX_FACTORS}
    main, widest = at[S_MAX_DEFAULT], at[max(S_MAX_FACTORS)]
    main.sensitivity[S_MAX] = {f"{f:g}": m.statistics for f, m in at.items() if f != S_MAX_DEFAULT}
    main.tables, main.figures = widest.tables, widest.figures       # the curves over the whole computed range
    main.values["s_max"] = S_MAX_DEFAULT * curves[0].unit
    main.notes.append(f"s_max = {S_MAX_DEFAULT:g} x the mean test-image norm ({curves[0].unit:.3g}); also read at "
                      f"{', '.join(f'{f:g}' for f in S_MAX_FACTORS if f != S_MAX_DEFAULT)} x (sensitivity)")
    return main


# ---------------------------------------------------------------------------------------------
# statistics: per-image values, bootstrapped over images


def over_images(fn, n: int, *, chunk: int = 50, **kw) -> stats.Estimate:
    """fn(indices (b, n) of b resamples of the n images) -> (b,) values, with a percentile bootstrap interval
    over the images; fn sees the resamples ``chunk`` at a time (vectorised, bounded memory)."""
    def stat(idx, axis=-1):
        i = idx.astype(int)
        rows = i.reshape(-1, i.shape[-1])
        out = np.concatenate([np.asarray(fn(rows[k:k + chunk]), dtype=float).reshape(-1)
                              for k in range(0, len(rows), chunk)])
        return out.reshape(i.shape[:-1]) if i.ndim > 1 else float(out[0])
    return stats.bootstrap(stat, np.arange(n, dtype=float), method="percentile", **kw)


def rank_correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho along the last axis of x and y (broadcast, ties ranked by their mean): one per row; 0 where
    either side is constant (no trend to rank), as stats.spearman_rho."""
    x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    rx, ry = (sps.rankdata(a, axis=-1) for a in (x, y))
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (rx * ry).sum(-1) / den
    return np.where(den > 0, rho, 0.0)


def partial_rank_correlation(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Spearman's partial rho of x and y controlling for z, along the last axis (rows as rank_correlation): the
    rank correlation of x and y once each one's rank correlation with z is taken out; 0 where undefined (x or y
    constant, or either perfectly rank-correlated with z)."""
    rxy, rxz, ryz = rank_correlation(x, y), rank_correlation(x, z), rank_correlation(y, z)
    den = np.sqrt(np.clip((1 - rxz ** 2) * (1 - ryz ** 2), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (rxy - rxz * ryz) / den
    return np.where(den > 1e-12, np.clip(rho, -1.0, 1.0), 0.0)


def level_trend(per_image: np.ndarray, levels: np.ndarray) -> stats.Estimate:
    """Spearman's rho between the levels and the mean over images of per_image (n, L); bootstrap over images."""
    data = np.asarray(per_image, dtype=float)
    levels = np.asarray(levels, dtype=float)
    return over_images(lambda i: rank_correlation(levels, data[i].mean(1)), len(data), bounds=(-1.0, 1.0))


@measures("CV-2", ("transition_at_max", "transition_trend", "target_score_trend", "median_score_gap_at_max"),
          parameters=(S_MAX,))
def class_transitions(curves: ScoreCurves) -> Measurement:
    """CV-2 (Fig. 2 and Sec. 4.1): along class c's most positively curved direction, images move into c as |s| grows."""
    return across_s_max(_transitions, curves)


def _transitions(curves: ScoreCurves) -> Measurement:
    n_cls, _, n = curves.pred.shape
    classes = torch.arange(n_cls)[:, None, None]
    pred0 = curves.pred[0, curves.zero]                          # (n,): the clean prediction
    into_levels = curves.at_level((curves.pred == classes).float())           # (C, L, n)
    not_c = (pred0[None] != torch.arange(n_cls)[:, None]).float()             # (C, n)
    # per image: the fraction of the classes it is not predicted as that it is moved into, per |s| level
    per_image = ((into_levels * not_c[:, None]).sum(0) / not_c.sum(0).clamp_min(1)).T.numpy()   # (n, L)
    t_lv, o_lv = curves.at_level(curves.own).numpy(), curves.at_level(curves.top_other).numpy()   # (C, L, n)
    target_median = np.median(t_lv, axis=-1)                     # (C, L)
    stats_ = {
        "transition_at_max": stats.mean(per_image[:, -1]),
        "transition_trend": level_trend(per_image, curves.levels),
        # the median over images of the class-c score, per class, averaged over classes: (b, L) per b resamples
        "target_score_trend": over_images(
            lambda i: rank_correlation(curves.levels, np.median(t_lv[..., i], -1).mean(0).T), n, bounds=(-1.0, 1.0)),
        "median_score_gap_at_max": over_images(
            lambda i: (np.median(t_lv[:, -1, i], -1) - np.median(o_lv[:, -1, i], -1)).mean(0), n),
    }
    rows = [{"s_over_mean_norm": float(s / curves.unit), "transition": float(per_image[:, i].mean()),
             "median_target_score": float(target_median[:, i].mean())} for i, s in enumerate(curves.s[curves.zero:])]
    return Measurement(
        statistics=stats_, n=n,
        values={"transition_at_max": stats_["transition_at_max"].value},
        tables={"transition_by_level": rows},
        figures={"fig2": lambda path: cfig.median_scores(path, curves,
                                                         title="Fig. 2: most positively curved direction"),
                 "directions": lambda path: cfig.direction_grid(path, curves)},
    )


@measures("CV-3", ("departure_at_max", "departure_trend"), parameters=(S_MAX,))
def class_departures(curves: ScoreCurves) -> Measurement:
    """CV-3 (Sec. 4.1 and the supplement): along class c's most negatively curved direction, images of class c leave c as |s| grows."""
    return across_s_max(_departures, curves)


def _departures(curves: ScoreCurves) -> Measurement:
    n_cls, _, n_all = curves.pred.shape
    pred0 = curves.pred[0, curves.zero]                          # (n,)
    # the images predicted as a class whose direction was measured: every image, unless the budget measures the
    # first classes only (CurvatureSizes.classes, CIFAR-100 at smoke)
    kept = (pred0 < n_cls).nonzero().squeeze(1)
    n, pred0 = len(kept), pred0[kept]
    own_dir = curves.pred[pred0, :, kept]                        # (n, S): each image along its own class's direction
    per_image = curves.at_level((own_dir != pred0[:, None]).float()).numpy()  # (n, L)
    stats_ = {"departure_at_max": stats.mean(per_image[:, -1]),
              "departure_trend": level_trend(per_image, curves.levels)}
    rows = [{"s_over_mean_norm": float(s / curves.unit), "left_own_class": float(per_image[:, i].mean())}
            for i, s in enumerate(curves.s[curves.zero:])]
    return Measurement(
        statistics=stats_, n=n, values={"images_of_measured_classes": n, "images": n_all},
        notes=[] if n == n_all else [(f"{n} of {n_all} test images are predicted as one of the {n_cls} classes whose "
                                      f"directions were measured; the others have no own-class direction")],
        tables={"departure_by_level": rows},
        figures={"supplement_negative": lambda path: cfig.median_scores(
            path, curves, title="Supplement: most negatively curved direction")},
    )


@measures("CV-4", ("prediction_change_at_max", "score_movement_ratio"), parameters=(S_MAX,))
def flat_direction_effects(flat: ScoreCurves, positive: ScoreCurves) -> Measurement:
    """CV-4 (Sec. 4.1 and the supplement): along the flattest directions, over the same range of s, predictions and scores barely move."""
    if not torch.equal(flat.s, positive.s):
        raise ValueError("flat and positive curves must share the grid of s")
    return across_s_max(_flat_effects, flat, positive)


def _flat_effects(flat: ScoreCurves, positive: ScoreCurves) -> Measurement:
    n = flat.pred.shape[2]
    pred0 = flat.pred[0, flat.zero]
    changed = (flat.pred != pred0).float()                       # (C, S, n)
    per_image_changed = flat.at_level(changed).mean(0).T.numpy()  # (n, L): averaged over the classes' directions
    ends = [0, len(flat.s) - 1]
    moved_flat = flat.moved[:, ends].mean((0, 1)).numpy()       # mean |change of every class score| at +-s_max
    moved_pos = positive.moved[:, ends].mean((0, 1)).numpy()
    stats_ = {"prediction_change_at_max": stats.mean(per_image_changed[:, -1]),
              "score_movement_ratio": stats.ratio_of_means(moved_flat, moved_pos)}
    rows = [{"s_over_mean_norm": float(s / flat.unit), "changed": float(per_image_changed[:, i].mean())}
            for i, s in enumerate(flat.s[flat.zero:])]
    return Measurement(
        statistics=stats_, n=n,
        values={"mean_abs_score_change_flat": float(moved_flat.mean()),
                "mean_abs_score_change_positive": float(moved_pos.mean())},
        tables={"prediction_change_by_level": rows},
        figures={"supplement_flat": lambda path: cfig.median_scores(path, flat,
                                                                    title="Supplement: flattest direction")},
    )


@measures("CV-5", ("spread_to_range",), parameters=(S_MAX,))
def additive_separability(positive: ScoreCurves, negative: ScoreCurves) -> Measurement:
    """CV-5 (Fig. 1 and Sec. 4.1): per-image curves of F_c along class c's directions are vertical shifts of one another.

    For each class c and direction (most positive and most negative), y_n(s) = F_c(x_n + s d) - F_c(x_n); the
    spread is the standard deviation over images averaged over s != 0, the range that of the median curve.
    The statistic is spread / range averaged over classes and both directions, bootstrapped over images.
    """
    return across_s_max(_separability, positive, negative)


def _separability(positive: ScoreCurves, negative: ScoreCurves) -> Measurement:
    curves = []
    for cv in (positive, negative):
        y = (cv.own - cv.own[:, [cv.zero]]).numpy()             # (C, S, n)
        curves.append(np.delete(y, cv.zero, axis=1))
    data = np.concatenate(curves)                                 # (2C, S-1, n)

    def ratio(i):                                                # i: (b, n) resamples
        y = data[..., i]                                         # (2C, S-1, b, n)
        med = np.median(y, -1)
        span = med.max(1) - med.min(1)                           # (2C, b)
        return np.mean(y.std(-1).mean(1) / np.maximum(span, 1e-12), 0)
    est = over_images(ratio, data.shape[-1], n_resamples=1000, chunk=10)
    return Measurement(
        statistics={"spread_to_range": est}, n=data.shape[-1],
        figures={"fig1": lambda path: cfig.per_sample_curves(path, positive, negative)},
    )
