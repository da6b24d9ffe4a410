"""Frequency tools: centred 2-D FFT per channel, low-/high-pass at a radius, swaps, spectra.

A low-pass filter of radius r keeps the frequencies within Euclidean distance r of the centre of
the shifted spectrum; high-pass keeps the rest, so low_pass + high_pass = identity exactly.
Wang et al.'s public helper weights frequencies outside the mask by 0.5 rather than 0: ``outside``
exposes that weight (default 0). All functions are batched over (N, C, H, W) on x's device.
"""

from __future__ import annotations

import math

import torch


def radial_distance(h: int, w: int, device=None) -> torch.Tensor:
    """Distance of every frequency of an fftshift-ed (h, w) spectrum from its centre."""
    rows = torch.arange(h, device=device, dtype=torch.float32) - h // 2
    cols = torch.arange(w, device=device, dtype=torch.float32) - w // 2
    return torch.sqrt(rows.view(-1, 1) ** 2 + cols.view(1, -1) ** 2)


def full_radius(h: int, w: int) -> int:
    """The smallest radius whose low-pass filter keeps the whole spectrum."""
    return math.ceil(math.hypot(h - h // 2, w - w // 2))


def spectrum(x: torch.Tensor) -> torch.Tensor:
    """Centred complex spectrum per channel: fftshift(fft2(x))."""
    return torch.fft.fftshift(torch.fft.fft2(x.float()), dim=(-2, -1))


def inverse(spec: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifft2(torch.fft.ifftshift(spec, dim=(-2, -1))).real


def low_pass_mask(h: int, w: int, radius: float, *, outside: float = 0.0, device=None) -> torch.Tensor:
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    inside = radial_distance(h, w, device) <= radius
    return torch.where(inside, torch.ones((), device=device), torch.full((), float(outside), device=device))


def _filtered(x: torch.Tensor, centred_mask: torch.Tensor) -> torch.Tensor:
    """inverse(spectrum(x) * mask) without the two shifts of the whole batch: the mask is shifted once
    instead (a permutation of the same products, so the same values; the shifts dominated the cost)."""
    return torch.fft.ifft2(torch.fft.fft2(x.float()) * torch.fft.ifftshift(centred_mask, dim=(-2, -1))).real


def low_pass(x: torch.Tensor, radius: float, *, outside: float = 0.0) -> torch.Tensor:
    """Keep the frequencies within ``radius`` of the centre (weight ``outside`` elsewhere)."""
    return _filtered(x, low_pass_mask(x.shape[-2], x.shape[-1], radius, outside=outside, device=x.device))


def high_pass(x: torch.Tensor, radius: float, *, outside: float = 0.0) -> torch.Tensor:
    """The complement of ``low_pass`` with the same arguments: low_pass + high_pass = x."""
    return _filtered(x, 1 - low_pass_mask(x.shape[-2], x.shape[-1], radius, outside=outside, device=x.device))


def swap(low_from: torch.Tensor, high_from: torch.Tensor, radius: float, *, outside: float = 0.0) -> torch.Tensor:
    """Low frequencies of one batch with the high frequencies of another (e.g. nat low + adv high)."""
    return low_pass(low_from, radius, outside=outside) + high_pass(high_from, radius, outside=outside)


def log_amplitude(x: torch.Tensor, *, floor: float = 1e-8) -> torch.Tensor:
    """log |F(x)| per channel, centred; ``floor`` keeps log finite at exact zeros."""
    return torch.log(spectrum(x).abs().clamp_min(floor))


def band_means(values: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of a centred (..., H, W) map over the inner disc (<= radius) and the outer band, per leading index."""
    inner = radial_distance(values.shape[-2], values.shape[-1], values.device) <= radius
    flat = values.flatten(-2)
    mask = inner.flatten()
    return flat[..., mask].mean(-1), flat[..., ~mask].mean(-1)
