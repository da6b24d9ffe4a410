"""The information bottleneck of Kim, Lee & Ro (NeurIPS 2021): robust and non-robust channels.

The model is split after its last convolutional block, f = tail ∘ encode, Z = encode(x) (N, C, H, W).
Per image and channel, a noise scale sigma = softplus(lambda) (lambda starts at 0) is fitted with
Adam (lr 0.1, 200 steps) to
    CE(tail(Z + sigma · eps), y) + beta · KL,   eps ~ N(0, 1) per image and channel,
    KL = mean over images and channels of 0.5 (var_z / sigma^2 + log(sigma^2 / var_z) - 1),
var_z being each channel's spatial variance in Z (unbiased, as torch's .var). A channel is robust
when sigma^2 > T = max(var_z) over the fitting batch and its channels (Eq. 5): i_r = 1(sigma^2 > T),
i_nr = 1 - i_r, Z_r = i_r · Z, Z_nr = i_nr · Z, so Z = Z_r + Z_nr exactly.

Facts taken from the authors' public code (model/IFP.py) where the paper is silent: lambda and the
noise have shape (N, C, 1, 1), i.e. one sigma and one noise draw per image and channel, shared over
the spatial positions, so every image gets its own masks; T is the maximum over the whole fitting
batch (100 images in their test script); CE is a batch mean; the split point ("pop=3") is the output
of the last convolution's batch norm, before its ReLU (VGG-16: index 41 of torchvision's
features, before the last max-pool; WRN-28-10: the final BN, before the ReLU and pooling).

Z̄ = encode(x_adv) are the features of adversarial examples; masks fitted on clean images are applied
to them as i_r · Z̄ and i_nr · Z̄ (Table 1), masks fitted on the adversarial images themselves give
i_r^a · Z̄ and i_nr^a · Z̄ (Table 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from advclaims.attacks import frozen
from advclaims.models.layout import NoFeatureSplit
from advclaims.models.vgg import VGG16BN
from advclaims.models.wrn import WideResNet28

BETA = 0.3          # weight of the information loss (authors' code)
STEPS = 200         # Adam steps on lambda
LR = 0.1            # Adam learning rate
FIT_BATCH = 100     # images per fitting batch: T is the maximum over one batch (authors' test batch size)
KL_DELTA = 1e-10    # keeps the KL finite where a variance is 0 (authors' code)
FIT_GROUP = 100     # fitting batches fitted at once off the CPU (10,000 images: the paper's whole test set)


SPLIT_NEEDED = ("the information-bottleneck claims (IB-1 to IB-6) need features(x) returning (N, C, H, W) maps with "
                "H x W >= 2 and head(z) returning the logits, head(features(x)) == model(x); see README.md, 'Your own "
                "models'")


@dataclass(frozen=True)
class Split:
    """model = tail ∘ encode, cut where the bottleneck sits; ``layer`` says where, in words."""

    model: nn.Module
    encode: Callable[[torch.Tensor], torch.Tensor]
    tail: Callable[[torch.Tensor], torch.Tensor]
    layer: str


def split_at_last_conv_block(model: nn.Module) -> Split:
    """The authors' split point for VGG-16-BN and WRN-28-10; ``features``/``head`` for other models.

    Our VGG's ``features`` ends after the last max-pool (1x1 maps on 28- and 32-pixel inputs, where a
    spatial variance is undefined), so VGG is cut inside ``body`` at the authors' point instead.
    """
    if isinstance(model, VGG16BN):
        front, back = model.body[:-2], model.body[-2:]  # [..., conv, BN] | [ReLU, MaxPool]
        return Split(model, lambda x: front(model.normalize(x)), lambda z: model.head(back(z)),
                     "VGG-16: last conv's batch norm, before its ReLU and the last max-pool")
    if isinstance(model, WideResNet28):
        def encode(x):
            return model.bn(model.layer3(model.layer2(model.layer1(model.conv1(model.normalize(x))))))
        return Split(model, encode, lambda z: model.head(F.relu(z)), "WRN-28-10: final batch norm, before its ReLU")
    if not (callable(getattr(model, "features", None)) and callable(getattr(model, "head", None))):
        raise NoFeatureSplit(f"model {type(model).__name__} has no features()/head() split: {SPLIT_NEEDED}")
    return Split(model, model.features, model.head, f"{type(model).__name__}: features() output")


@torch.no_grad()
def check_split(split: Split, x: torch.Tensor) -> None:
    """NoFeatureSplit (one line) unless encode(x) gives (N, C, H, W) maps with at least 2 positions (a spatial
    variance) on which tail() runs; ``x`` is one or a few input images."""
    with frozen(split.model):
        z = split.encode(x)
        if not (isinstance(z, torch.Tensor) and z.dim() == 4 and z.shape[2] * z.shape[3] >= 2):
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise NoFeatureSplit(f"model {type(split.model).__name__}: {split.layer} gives {shape}, "
                                 f"not (N, C, H, W) maps with H x W >= 2: {SPLIT_NEEDED}")
        split.tail(z)


@dataclass(frozen=True)
class ChannelMasks:
    """Robust channel index per image. robust: (N, C) bool; sigma: (N, C) fitted noise scale;
    threshold: (N,) T of each image's fitting batch; beta: the information loss weight."""

    robust: torch.Tensor
    sigma: torch.Tensor
    threshold: torch.Tensor
    beta: float

    @property
    def non_robust(self) -> torch.Tensor:
        return ~self.robust

    def index(self, kind: str) -> torch.Tensor:
        """i_r or i_nr as 0/1 floats (N, C), the paper's channel index."""
        if kind not in ("robust", "non_robust"):
            raise ValueError(f"kind must be 'robust' or 'non_robust', got {kind!r}")
        i_r = self.robust.float()
        return i_r if kind == "robust" else 1.0 - i_r

    def as_payload(self) -> dict:
        return {"robust": self.robust.cpu(), "sigma": self.sigma.cpu(), "threshold": self.threshold.cpu(),
                "beta": torch.tensor(self.beta)}

    @classmethod
    def from_payload(cls, p: dict) -> "ChannelMasks":
        return cls(p["robust"], p["sigma"], p["threshold"], float(p["beta"]))


def spatial_variance(z: torch.Tensor) -> torch.Tensor:
    """var_z: (N, C) unbiased variance of each channel over its H x W positions."""
    if z.dim() != 4 or z.shape[2] * z.shape[3] < 2:
        raise ValueError(f"Z must be (N, C, H, W) with at least 2 positions per channel, got {tuple(z.shape)}; "
                         "split the model before its spatial dimensions collapse")
    return z.var(dim=(2, 3))


def information_terms(var_z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL[N(Z, var_z) || N(Z, sigma^2)] per image and channel (N, C)."""
    q = sigma.pow(2)
    return 0.5 * (var_z / (q + KL_DELTA) + torch.log((q + KL_DELTA) / (var_z + KL_DELTA)) - 1)


def information_loss(var_z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL[N(Z, var_z) || N(Z, sigma^2)], averaged over images and channels (Eq. 4's L_I)."""
    return information_terms(var_z, sigma).mean()


def vectorised_on(device: torch.device | str) -> bool:
    """Whether fit_channel_masks fits on ``device`` with the vectorised path by default: everywhere but the CPU."""
    return torch.device(device).type != "cpu"


def fit_fields(device: torch.device | str) -> dict:
    """The store-key fields that tell a fit by fit_channel_masks' default path on ``device`` from the CPU's: none on
    the CPU (the per-batch loop and its CPU generator: CPU keys stay what they were); elsewhere the vectorised
    path's noise source (a generator of the device's type) and its grouping, which decide its random draws."""
    device = torch.device(device)
    return {"noise": device.type, "fit_group": FIT_GROUP} if vectorised_on(device) else {}


def fit_channel_masks(split: Split, z: torch.Tensor, y: torch.Tensor, *, beta: float = BETA,
                      steps: int = STEPS, lr: float = LR, batch_size: int = FIT_BATCH, seed: int = 0,
                      vectorised: bool | None = None, group: int = FIT_GROUP) -> ChannelMasks:
    """Fit sigma on features z (N, C, H, W) with labels y, in batches of ``batch_size``; threshold.

    Deterministic for a given seed. The model is frozen while fitting: only lambda has a gradient.

    Two paths (``vectorised``: None picks by z's device, vectorised_on): on the CPU one batch after the other, the
    noise from one CPU generator drawn batch after batch (every stored CPU fit was made so). Vectorised (the default
    on an accelerator): ``group`` batches fitted at once, the noise drawn on z's device from a generator of that
    device seeded with ``seed`` (no host copy per step), one draw per step for the whole group, group after group.
    Each image's sigma depends on its own features, label and noise only, and each batch keeps its own
    normalisation (its CE and KL means become sums weighted by 1 / its size), so a batch's result is the one it
    would have alone with those draws, up to float rounding; the draws differ from the CPU path's (fit_fields
    keys them).
    """
    if beta < 0 or steps < 0 or lr <= 0 or batch_size < 1 or group < 1:
        raise ValueError("fit_channel_masks needs beta >= 0, steps >= 0, lr > 0, batch_size >= 1 and group >= 1")
    if vectorised is None:
        vectorised = vectorised_on(z.device)
    if vectorised:
        return _fit_vectorised(split, z, y, beta=beta, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                               group=group)
    generator = torch.Generator().manual_seed(seed)
    robust, sigmas, thresholds = [], [], []
    with frozen(split.model):
        for start in range(0, len(z), batch_size):
            zb, yb = z[start:start + batch_size].detach(), y[start:start + batch_size]
            var_z = spatial_variance(zb)
            lam = torch.zeros(zb.shape[0], zb.shape[1], 1, 1, device=zb.device, requires_grad=True)
            optimizer = torch.optim.Adam([lam], lr=lr)
            for _ in range(steps):
                sigma = F.softplus(lam)
                noise = torch.randn(lam.shape, generator=generator).to(zb.device)
                loss = F.cross_entropy(split.tail(zb + sigma * noise), yb) + beta * information_loss(var_z, sigma[:, :, 0, 0])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            sigma = F.softplus(lam.detach())[:, :, 0, 0]
            threshold = var_z.max()
            robust.append(sigma.pow(2) > threshold)
            sigmas.append(sigma)
            thresholds.append(threshold.expand(zb.shape[0]))
    return ChannelMasks(torch.cat(robust), torch.cat(sigmas), torch.cat(thresholds), float(beta))


def _fit_vectorised(split: Split, z: torch.Tensor, y: torch.Tensor, *, beta: float, steps: int, lr: float,
                    batch_size: int, seed: int, group: int) -> ChannelMasks:
    """fit_channel_masks' vectorised path: ``group`` batches of ``batch_size`` per Adam run, noise drawn on z's
    device. Per batch b of n_b images, the CPU path minimises mean_b CE + beta mean_{b, C} KL; here the sum over
    the group's batches of the same, as sum_i CE_i / n_b(i) + beta sum_{i, c} KL_ic / (n_b(i) C): the gradient of
    an image's lambda is its batch's alone, and Adam is elementwise. (Adam's step barely depends on a common scale of
    an image's gradient, so the 1 / n_b weights matter only through its eps; they are kept so that each batch
    minimises its own loss.)"""
    generator = torch.Generator(device=z.device).manual_seed(seed)
    robust, sigmas, thresholds = [], [], []
    span = batch_size * group
    with frozen(split.model):
        for start in range(0, len(z), span):
            zg, yg = z[start:start + span].detach(), y[start:start + span]
            n, channels = zg.shape[:2]
            var_z = spatial_variance(zg)
            batches = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
            size = torch.cat([torch.full((b - a,), float(b - a), device=zg.device) for a, b in batches])
            threshold = torch.cat([var_z[a:b].max().expand(b - a) for a, b in batches])
            lam = torch.zeros(n, channels, 1, 1, device=zg.device, requires_grad=True)
            optimizer = torch.optim.Adam([lam], lr=lr)
            for _ in range(steps):
                sigma = F.softplus(lam)
                noise = torch.randn(lam.shape, generator=generator, device=zg.device)
                ce = F.cross_entropy(split.tail(zg + sigma * noise), yg, reduction="none")
                kl = information_terms(var_z, sigma[:, :, 0, 0]).sum(1)
                loss = (ce / size).sum() + beta * (kl / (size * channels)).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            sigma = F.softplus(lam.detach())[:, :, 0, 0]
            robust.append(sigma.pow(2) > threshold[:, None])
            sigmas.append(sigma)
            thresholds.append(threshold)
    return ChannelMasks(torch.cat(robust), torch.cat(sigmas), torch.cat(thresholds), float(beta))


def decompose(z: torch.Tensor, masks: ChannelMasks) -> tuple[torch.Tensor, torch.Tensor]:
    """(Z_r, Z_nr) = (i_r · Z, i_nr · Z), masks broadcast over the spatial positions."""
    if masks.robust.shape != z.shape[:2]:
        raise ValueError(f"masks are {tuple(masks.robust.shape)} but Z is {tuple(z.shape)}: one row per image, "
                         "one column per channel")
    i_r = masks.index("robust").to(z)[:, :, None, None]
    i_nr = masks.index("non_robust").to(z)[:, :, None, None]
    return i_r * z, i_nr * z


def random_channel_masks(counts: torch.Tensor, channels: int, *, draws: int, seed: int) -> torch.Tensor:
    """(draws, N, C) bool: for image i, ``counts[i]`` of the ``channels`` chosen uniformly at random, ``draws``
    times over (a control of the same size as a fitted mask). Deterministic for a seed (one CPU generator)."""
    counts = torch.as_tensor(counts).long().cpu()
    if counts.dim() != 1 or bool((counts < 0).any()) or bool((counts > channels).any()) or draws < 1:
        raise ValueError(f"counts must be (N,) in [0, {channels}] and draws >= 1")
    scores = torch.rand(draws, len(counts), channels, generator=torch.Generator().manual_seed(seed))
    ranks = scores.argsort(dim=-1).argsort(dim=-1)  # each channel's rank in a random order, per draw and image
    return ranks < counts[None, :, None]


@torch.no_grad()
def encode_all(split: Split, x: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([split.encode(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def predictions_of_channels(split: Split, z: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Predicted labels of tail(keep · Z) for a (N, C) channel selection (bool or 0/1)."""
    return split.tail(z * keep.to(z)[:, :, None, None]).argmax(1)


@torch.no_grad()
def masked_predictions(split: Split, z: torch.Tensor, masks: ChannelMasks) -> dict[str, torch.Tensor]:
    """Predicted labels of tail(Z), tail(i_r · Z) and tail(i_nr · Z): keys int, robust, non_robust."""
    z_r, z_nr = decompose(z, masks)
    return {"int": split.tail(z).argmax(1), "robust": split.tail(z_r).argmax(1),
            "non_robust": split.tail(z_nr).argmax(1)}
