"""Eigendecompositions of Algorithm 1's curvature operator (``operator.CurvatureOperator``, or any object with its
``per_point``, ``__call__``, ``points`` and ``dims``): dense for small inputs, block Lanczos with a search for flat
directions for large ones (CIFAR's D = 3072). Split from operator.py, which builds the operator and the claims.

The linear algebra runs in float64 on the operator's device (its boundary points'): on a GPU no D x D products,
QRs, SVDs or ``eigh`` on two CPU threads. Random draws come from the CPU generator ``g`` and are then moved, so
the same seed gives the same directions on every device; on the CPU every operation is what it was. Results are
returned on the CPU (the store keeps them there)."""

from __future__ import annotations

import math

import torch


def _randn(g: torch.Generator, *shape: int, device: torch.device) -> torch.Tensor:
    """Standard normal float64 draws from the CPU generator ``g``, on ``device``."""
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(device)


def _dense(op, g: torch.Generator):
    dims, device = op.dims, op.points.device
    basis = torch.linalg.qr(_randn(g, dims, dims, device=device))[0]
    cols = op.per_point(basis.T.float()).double()              # (N, D, D): row j is H_n q_j
    a = cols @ basis                                          # a[n, j, i] = <q_i, H_n q_j>: A_n transposed
    sym, anti = a + a.transpose(1, 2), a - a.transpose(1, 2)
    sym_gram = torch.einsum("nij,mij->nm", sym, sym)
    asym_gram = torch.einsum("nij,mij->nm", anti, anti)
    values, vectors = torch.linalg.eigh(sym.mean(0) / 2)
    order = values.argsort(descending=True)
    return (values[order].float().cpu(), (basis @ vectors[:, order]).float().cpu(), asym_gram.float().cpu(),
            sym_gram.float().cpu())


def _apply(op, basis: torch.Tensor) -> torch.Tensor:
    """H q for the columns q of ``basis`` (D, b), as columns (D, b), in float64 on the operator's device."""
    return op(basis.T.to(op.points.dtype)).double().T


def _orthonormalise(block: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The part of ``block``'s columns orthogonal to q's (twice, for stability), orthonormalised."""
    for _ in range(2):
        block = block - q @ (q.T @ block)
    u, s, _ = torch.linalg.svd(block, full_matrices=False)
    return u[:, s > 1e-10 * max(float(s[0]), 1e-300)] if len(s) else u


def _block_lanczos(op, g: torch.Generator, k: int, *, block: int = 16, probes: int = 16, iterations=lambda n: n):
    """Block Lanczos with Rayleigh-Ritz on the symmetric part, then a search of the rest for flat directions.

    The operator is not a symmetric matrix (a finite step on a ReLU net is not even linear), so it cannot go to a
    symmetric eigensolver as it is (the authors' eigs assumes it is). What is decomposed is the symmetric part
    A = (H + H^T) / 2 of H's linear extension on the vectors it was applied to, as the dense path does on a whole
    basis. Forward differences of gradients give H v, never H^T v outside the span already built (that would need
    double backward, which sees nothing on a ReLU net); inside it H^T is known from the same products (T^T). So
    the Krylov block that A adds is the part of H Q's newest block orthogonal to Q: exactly A's residual when the
    antisymmetric part is zero, and off by it otherwise (CV-1's relative_asymmetry measures that part).

    Extremes: a block Krylov basis of 3k vectors. Flat directions, ranked by measured |curvature| (``_flat_search``):
    two more Krylov blocks grown inside the complement and random probes of what is left, every one of them
    applied to H. One Rayleigh-Ritz of A on everything measured gives the k most positive and k most negative
    curvatures; the rest of that space is re-expressed by the right singular vectors of H restricted to it
    (the directions u minimising ||H u||), each with its ||H u|| (its flatness) and u^T A u (its curvature), from
    the linear extension of the products; the k/4 flattest are then applied to H themselves and keep
    those measured values. Never measured: the last D - m directions (curvature NaN), placed in the signed order
    at the median Rayleigh quotient of the random probes, and ranked among the flat ones by the lower bound of
    ||A u|| their coupling to the measured space gives, or, uncoupled, at the probes' median ||H u||
    (``_split_rest``).
    Returns curvatures, directions, the two Gram matrices, the rest's flatness and every direction's flatness.
    """
    dims, device = op.dims, op.points.device
    m = min(dims - 1, 3 * k)
    block = max(1, min(block, m // 8))   # at least 8 Krylov steps: depth is what makes the ends converge
    m = min(m, block * (1 + iterations(math.ceil(m / block) - 1)))   # a preflight grows the basis a few blocks only
    empty = torch.zeros(dims, 0, dtype=torch.float64, device=device)
    q = _orthonormalise(_randn(g, dims, block, device=device), empty)
    hq = _apply(op, q)
    while q.shape[1] < m:
        new = _orthonormalise(hq[:, -block:], q)[:, :m - q.shape[1]]
        if new.shape[1] == 0:  # the Krylov space is invariant: restart it from a random block
            new = _orthonormalise(_randn(g, dims, min(block, m - q.shape[1]), device=device), q)
        q, hq = torch.cat([q, new], 1), torch.cat([hq, _apply(op, new)], 1)
    q, hq, inside, rest_flatness = _flat_search(op, g, q, hq, flat_block=max(1, k // 2), probes=max(probes, k // 2),
                                                 last=block)
    curv, dirs, flatness = _rayleigh_ritz(q, hq, k)
    # the flattest candidates measured directly: H is not linear, so H applied to a combination of measured
    # vectors is not the combination of their products that ranked them
    check = flatness.argsort()[:max(probes, k // 4)]
    h_check = _apply(op, dirs[:, check])
    flatness[check], curv[check] = h_check.norm(dim=0), (dirs[:, check] * h_check).sum(0)
    order = curv.argsort(descending=True)
    curv, dirs, flatness = curv[order], dirs[:, order], flatness[order]
    rest, coupling = _split_rest(q, hq)
    at = int((curv > inside).sum())                                          # the rest sits where its curvature does
    nan = torch.full((rest.shape[1],), float("nan"), dtype=torch.float64, device=device)
    curv = torch.cat([curv[:at], nan, curv[at:]])
    flatness = torch.cat([flatness[:at], coupling, flatness[at:]])
    dirs = torch.cat([dirs[:, :at], rest, dirs[:, at:]], 1)
    # asymmetry of the raw operator from random probe pairs: <u, H v> - <v, H u> against <u, H v> + <v, H u>
    uv = _randn(g, 2 * probes, dims, device=device).float()
    uv = uv / uv.norm(dim=1, keepdim=True)
    h_uv = op.per_point(uv)                                                  # (N, 2P, D)
    u, v = uv[:probes], uv[probes:]
    uhv = (h_uv[:, probes:] * u).sum(-1)                                     # (N, P)
    vhu = (h_uv[:, :probes] * v).sum(-1)
    anti, sym = uhv - vhu, uhv + vhu
    return (curv.float().cpu(), dirs.float().cpu(), (anti @ anti.T).float().cpu(), (sym @ sym.T).float().cpu(),
            rest_flatness, flatness.float().cpu())


def _flat_search(op, g: torch.Generator, q: torch.Tensor, hq: torch.Tensor, *, flat_block: int, probes: int,
                 last: int):
    """Grow the measured space (q, hq = H q) into the complement toward flat directions, and measure what is left.

    Two Krylov blocks inside the complement (the newest Krylov residual plus ``flat_block`` random directions,
    then H of those), so that polynomials of degree 2 in A filter out the curved part of the complement; then
    ``probes`` random unit directions of what is still unmeasured, applied to H: their median Rayleigh quotient
    and median ||H z|| are the rest's measured curvature and flatness. Returns the grown q and hq, those two
    medians (NaN, NaN when nothing is left)."""
    dims = q.shape[0]
    room = dims - q.shape[1]
    if room > 2 * (flat_block + last + probes):
        start = torch.cat([hq[:, -last:], _randn(g, dims, flat_block, device=q.device)], 1)
        for _ in range(2):
            new = _orthonormalise(start, q)
            if new.shape[1] == 0:
                break
            h_new = _apply(op, new)
            q, hq, start = torch.cat([q, new], 1), torch.cat([hq, h_new], 1), h_new
    room = dims - q.shape[1]
    if room <= 0:
        return q, hq, float("nan"), float("nan")
    z = _randn(g, dims, min(probes, room), device=q.device)
    for _ in range(2):
        z = z - q @ (q.T @ z)
    z = z / z.norm(dim=0, keepdim=True)                                      # unit probes of the unmeasured rest
    hz = _apply(op, z)
    inside, flatness = float((z * hz).sum(0).median()), float(hz.norm(dim=0).median())
    basis, r = torch.linalg.qr(z)                                            # z = basis r: H basis = hz r^-1
    h_basis = torch.linalg.solve_triangular(r, hz, upper=True, left=False)
    return torch.cat([q, basis], 1), torch.cat([hq, h_basis], 1), inside, flatness


def _split_rest(q: torch.Tensor, hq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An orthonormal basis of the never-measured rest (the complement of q), decoupled part first, and a
    flatness for each: NaN (the rest's median, from the probes) where it is decoupled from the measured space,
    else the measured lower bound of ||A u|| that its coupling gives. For a symmetric A and u orthogonal to q,
    q^T A u = (A q)^T u = R^T u with R = (I - q q^T) H q, what H moved out of the measured space; so a rest
    direction inside span(R) (where the next Krylov step would go, and where curvature the basis missed
    shows) has ||A u|| >= ||R^T u||, and one orthogonal to span(R) is not coupled to anything measured."""
    dims, m = q.shape
    if m >= dims:
        return q.new_zeros(dims, 0), q.new_zeros(0)
    rest = torch.linalg.qr(q, mode="complete")[0][:, m:]                   # the orthonormal complement of q
    u, s, _ = torch.linalg.svd(rest.T @ (hq - q @ (q.T @ hq)), full_matrices=True)
    coupled = int((s > 1e-10 * max(float(s[0]), 1e-300)).sum()) if len(s) else 0
    rest = rest @ u                                                         # ordered by coupling, largest first
    bound = torch.full((rest.shape[1],), float("nan"), dtype=q.dtype, device=q.device)
    bound[:coupled] = s[:coupled]
    order = torch.cat([torch.arange(coupled, rest.shape[1]), torch.arange(coupled).flip(0)]).to(q.device)
    return rest[:, order], bound[order]


def _rayleigh_ritz(q: torch.Tensor, hq: torch.Tensor, k: int):
    """Curvatures (descending), directions and flatness ||H u|| from the measured space q (D, M), hq = H q.

    The k most positive and k most negative Ritz pairs of the symmetric part Q^T H Q; the M - 2k in between are
    replaced by the right singular vectors of H on their span (smallest ||H u|| first is what "flat" means: a
    direction along which every curvature is small, not one where positive and negative ones cancel in u^T A u),
    each with its Rayleigh quotient as its curvature. All sorted by curvature, most positive first."""
    t = q.T @ hq
    values, vectors = torch.linalg.eigh((t + t.T) / 2)
    order = values.argsort(descending=True)
    values, vectors = values[order], vectors[:, order]
    ends = min(k, vectors.shape[1] // 2)
    mid = vectors[:, ends:vectors.shape[1] - ends]
    if mid.shape[1]:
        _, _, vh = torch.linalg.svd(hq @ mid, full_matrices=False)
        mid = mid @ vh.T                                                     # still orthonormal, inside the same span
        inner = mid.T @ t @ mid
        values = torch.cat([values[:ends], torch.diagonal(inner), values[vectors.shape[1] - ends:]])
        vectors = torch.cat([vectors[:, :ends], mid, vectors[:, vectors.shape[1] - ends:]], 1)
        order = values.argsort(descending=True)
        values, vectors = values[order], vectors[:, order]
    return values, q @ vectors, (hq @ vectors).norm(dim=0)
