"""The head refit (method.md step 4), `head.solver=newton`: solved to convergence on the cached pooled rows.

Over the kept channels of a mask m, DEAR's refit objective is

    L(w, b) = mean_i BCE(w . x_i + b, y_i)                   training views (K per image)
            + inpaint_weight * mean_j BCE(w . x_j + b, y_j)  inpaint views (target: region survived)
            + l2 / 2 * ||w * sd||^2                          L2 on the standardised weights

the reference's per-batch loss BCE(main) + BCE(inpaint) taken over every cached row at once. It is
convex (strictly, for l2 > 0), so it has one optimum and a solver either reaches it or says it did
not. `newton_fit` finds it by Newton's method with a backtracking line search on features
standardised on the training rows (mean 0, sd 1 per kept channel): a Hessian of at most a few
thousand channels is cheap to factor, and on the demo Newton reaches a gradient below 1e-9 in 6-14
steps per L2 strength where first-order methods (L-BFGS, and the reference's Adam) need thousands.
Forming the Hessian costs rows x channels^2 and a step rows x channels, so a Hessian is reused while
it steers well (the previous strength's included): 8-9 Hessians per solve of six strengths instead of
19-21, the same optimum, and an old Hessian whose step fails is formed anew, not searched along (one
alpha pair of the demo's sweep took 479 evaluations of the loss that way, 0.67 s; 55 now, 0.17 s).
The standardisation is folded back into the weights, so the saved head is
still `linear(m * pool(F))`.

The L2 strength is chosen from `l2` (a grid, strongest first, each solve warm-started from the
previous one) by the validation split's BCE, which is smooth where balanced accuracy at logit 0
is a step function of a few hundred images.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dear_exp.cache import Tensors
from dear_exp.refit.head import MaskedLinearHead

log = logging.getLogger(__name__)

CHUNK = 1 << 16  # rows per block: float64 copies of the rows are made one block at a time
# a Hessian is kept for the next step while a full step shrinks max |gradient| at least this much (0:
# formed at every step, plain Newton); on the demo it cuts the Hessians of a solve from 19-21 to 8-9
KEEP_IF_SHRINKS = 0.25


@dataclass(frozen=True)
class Solve:
    """One solve of the objective at one L2 strength: what shows it converged, and how it validates."""

    l2: float
    iterations: int
    objective: float
    grad_max: float  # max |dL/dtheta| over the standardised weights and the bias, at the end
    converged: bool
    val_loss: float
    val_bacc: float


@dataclass(frozen=True)
class Group:
    """Rows of one loss term: features [N, C] (any float dtype), 0/1 targets [N], the term's weight."""

    x: torch.Tensor
    y: torch.Tensor
    weight: float


class Block:
    """Standardised rows with a bias column, z = [ (x - mu) / sd, 1 ] (float64, and a float32 copy for
    the Hessian, made when a Hessian first needs it), their 0/1 targets, and each row's weight in the
    loss (its term's weight / its count)."""

    def __init__(self, z: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> None:
        self.z, self.y, self.w = z, y, w

    @functools.cached_property
    def z32(self) -> torch.Tensor:
        return self.z.float()


class Design:
    """The rows of every loss term, standardised, on `device`, CHUNK rows per block. When they fit in
    `keep_bytes` they are built once, as one block (one matrix product per pass); else rebuilt at each
    pass (rows far larger than memory still solve)."""

    def __init__(
        self,
        groups: list[Group],
        kept: torch.Tensor,
        mu: torch.Tensor,
        sd: torch.Tensor,
        device: torch.device,
        keep_bytes: int = 2 << 30,
    ) -> None:
        self.groups, self.kept, self.mu, self.sd, self.device = groups, kept, mu, sd, device
        rows = sum(len(g.y) for g in groups)
        self.kept_blocks = None
        if rows * (len(mu) + 1) * 12 <= keep_bytes:
            z = torch.empty(rows, len(mu) + 1, dtype=torch.float64, device=device)
            y, w = z.new_empty(rows), z.new_empty(rows)
            start = 0
            for g in groups:  # written in place: the same values as _build's blocks, in two passes fewer
                end = start + len(g.y)
                self._standardise(g.x, z[start:end])
                y[start:end], w[start:end] = g.y, g.weight / len(g.y)
                start = end
            self.kept_blocks = [Block(z, y, w)]

    def _standardise(self, x: torch.Tensor, z: torch.Tensor) -> None:
        """z = [ (x[:, kept] - mu) / sd, 1 ] in float64, into z."""
        d = len(self.mu)
        z[:, :d].copy_(x.index_select(1, self.kept.cpu().nonzero().squeeze(1)))
        z[:, :d].sub_(self.mu).div_(self.sd)
        z[:, d] = 1.0

    def _build(self) -> Iterator[Block]:
        for g in self.groups:
            scale = g.weight / len(g.y)
            for start in range(0, len(g.y), CHUNK):
                x = g.x[start : start + CHUNK]
                z = torch.empty(len(x), len(self.mu) + 1, dtype=torch.float64, device=self.device)
                self._standardise(x, z)
                y = g.y[start : start + CHUNK].to(self.device, torch.float64)
                yield Block(z, y, torch.full_like(y, scale))

    def blocks(self) -> Iterator[Block]:
        return iter(self.kept_blocks) if self.kept_blocks is not None else self._build()


def _penalty(theta: torch.Tensor) -> torch.Tensor:
    """1 on the standardised weights, 0 on the bias (not penalised)."""
    penalty = torch.ones_like(theta)
    penalty[-1] = 0.0
    return penalty


def _objective(design: Design, theta: torch.Tensor, l2: float) -> tuple[float, torch.Tensor]:
    """L and dL/dtheta at theta = [v, c] (standardised weights, bias), in float64."""
    penalty = _penalty(theta)
    loss = 0.5 * l2 * float((penalty * theta) @ theta)
    grad = l2 * penalty * theta
    for b in design.blocks():
        s = b.z @ theta
        loss += float((b.w * (F.softplus(s) - b.y * s)).sum())
        grad += b.z.T @ (b.w * (torch.sigmoid(s) - b.y))
    return loss, grad


def _data_hessian(design: Design, theta: torch.Tensor) -> torch.Tensor:
    """The Hessian of the data terms at theta (the L2 term's, l2 * diag(penalty), is added per
    strength). In float32: it only steers the step; the gradient that decides convergence is float64."""
    hess = torch.zeros(len(theta), len(theta), dtype=torch.float32, device=theta.device)
    for b in design.blocks():
        p = torch.sigmoid(b.z @ theta)
        hess.addmm_(b.z32.T, b.z32 * (b.w * p * (1 - p)).float().unsqueeze(1))
    return hess.double()


def _factor(hess: torch.Tensor, l2: float, theta: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The Newton system's matrix at one L2 strength, Cholesky-factored (True), or as it is where it is
    not positive definite (False: only when l2 is tiny and a channel is constant everywhere)."""
    system = hess + torch.diag(l2 * _penalty(theta))
    factor, info = torch.linalg.cholesky_ex(system)
    return (factor, True) if int(info) == 0 else (system, False)


def _step(factor: tuple[torch.Tensor, bool], grad: torch.Tensor) -> torch.Tensor:
    matrix, cholesky = factor
    if cholesky:
        return torch.cholesky_solve(grad.unsqueeze(1), matrix).squeeze(1)
    return torch.linalg.lstsq(matrix, grad.unsqueeze(1)).solution.squeeze(1)


def newton_solve(
    design: Design,
    l2: float,
    start: torch.Tensor,
    tol: float,
    max_iter: int,
    hess: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int, float, float, torch.Tensor]:
    """Newton's method with an Armijo backtracking line search: (theta, iterations, L, max |grad|, the
    data Hessian last formed). The Hessian costs rows x channels^2, a step rows x channels, so a
    Hessian is kept while it steers well (each step a full one that shrinks max |grad| at least 4-fold)
    and formed anew after a step that does not; a kept Hessian whose full step fails Armijo's test is
    formed anew at the current point before any step (no line search along an old Hessian's step: near
    the optimum rounding alone fails the test, and the search halved the step 34 times for nothing).
    `hess`: one formed before (the previous L2 strength's, near this start). The optimum, and the
    convergence test on the float64 gradient, are those of plain Newton."""
    theta = start.clone()
    loss, grad = _objective(design, theta, l2)
    iterations = 0
    fresh = hess is None
    if hess is None:
        hess = _data_hessian(design, theta)
    factor = _factor(hess, l2, theta)
    while _max(grad) > tol and iterations < max_iter:
        step = _step(factor, grad)
        slope = float(grad @ step)
        t, candidate = 1.0, theta - step
        new_loss, new_grad = _objective(design, candidate, l2)
        descends = _descends(loss, new_loss, slope, t, grad, new_grad)
        steers = descends and _max(new_grad) <= KEEP_IF_SHRINKS * _max(grad)
        if not fresh and not descends:
            hess, fresh = _data_hessian(design, theta), True
            factor = _factor(hess, l2, theta)
            continue
        while not descends and t >= 1e-10:
            t *= 0.5
            candidate = theta - t * step
            new_loss, new_grad = _objective(design, candidate, l2)
            descends = _descends(loss, new_loss, slope, t, grad, new_grad)
        theta, loss, grad = candidate, new_loss, new_grad
        iterations += 1
        fresh = False
        if not steers and _max(grad) > tol:
            hess, fresh = _data_hessian(design, theta), True
            factor = _factor(hess, l2, theta)
    return theta, iterations, loss, _max(grad), hess


def _max(grad: torch.Tensor) -> float:
    return float(grad.abs().max())


def _descends(loss: float, new_loss: float, slope: float, t: float, grad: torch.Tensor, new_grad: torch.Tensor) -> bool:
    """Armijo's sufficient decrease; where the decrease a full step predicts (slope / 2) is below what
    float64 resolves in the loss, a full step that shrinks the gradient (the loss cannot show it)."""
    if new_loss <= loss - 1e-4 * t * slope:
        return True
    return t == 1.0 and slope <= 1e-13 * max(1.0, abs(loss)) and _max(new_grad) < _max(grad)


def _val_metrics(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Validation BCE and balanced accuracy at logit 0 (a logit of exactly 0 is wrong for both)."""
    loss = float(F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype)))
    real, fake = y == 0, y == 1
    bacc = 0.5 * (float((logits[real] < 0).double().mean()) + float((logits[fake] > 0).double().mean()))
    return loss, bacc


def fold(
    theta: torch.Tensor, kept: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor, channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias in the original feature space: v . (x - mu) / sd + c = w . x + b, w = 0 off the mask."""
    d = len(theta) - 1
    scaled = theta[:d] / sd
    weight = torch.zeros(channels, dtype=torch.float64, device=theta.device)
    weight[kept] = scaled
    bias = theta[d] - scaled @ mu
    return weight.cpu(), bias.reshape(1).cpu()


def solved_head(weight: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor) -> MaskedLinearHead:
    """A float64 head holding a solved weight [1, C], bias [1] and mask [C]."""
    head = MaskedLinearHead(mask.numel(), dtype=torch.float64)
    with torch.no_grad():
        head.linear.weight.copy_(weight)
        head.linear.bias.copy_(bias)
    head.set_mask(mask)
    return head


@dataclass
class NewtonFit:
    """A converged refit: the head to save, the chosen solve, the whole L2 path, and the solution in the
    standardised space (`theta` over the kept channels, `mu`, `sd`) that the head folds."""

    head: MaskedLinearHead
    chosen: Solve
    path: list[Solve]
    theta: torch.Tensor
    mu: torch.Tensor
    sd: torch.Tensor

    def summary(self) -> dict[str, Any]:
        return {"solver": "newton", **asdict(self.chosen)}

    def to_tensors(self) -> Tensors:
        """The fit as a feature-cache entry (kind `heads`): a sweep's controls are solved once."""
        path = torch.tensor(
            [
                [s.l2, s.iterations, s.objective, s.grad_max, float(s.converged), s.val_loss, s.val_bacc]
                for s in self.path
            ],
            dtype=torch.float64,
        )
        return {
            "weight": self.head.linear.weight.detach(),
            "bias": self.head.linear.bias.detach(),
            "mask": self.head.mask,
            "theta": self.theta,
            "mu": self.mu,
            "sd": self.sd,
            "path": path,
            "chosen": torch.tensor(self.path.index(self.chosen)),
        }

    @classmethod
    def from_tensors(cls, t: Tensors) -> NewtonFit:
        head = solved_head(t["weight"], t["bias"], t["mask"])
        path = [Solve(r[0], int(r[1]), r[2], r[3], bool(r[4]), r[5], r[6]) for r in t["path"].tolist()]
        return cls(head, path[int(t["chosen"])], path, t["theta"], t["mu"], t["sd"])

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """The solver's own float64 logits for pooled rows: what the saved head reproduces."""
        kept = self.head.mask.bool()
        d = int(kept.sum())
        theta, mu, sd = self.theta.cpu(), self.mu.cpu(), self.sd.cpu()
        return ((pooled[:, kept].double() - mu) / sd) @ theta[:d] + theta[d]


def channel_stats(train: Tensors) -> tuple[torch.Tensor, torch.Tensor]:
    """Each channel's mean and (population) sd on the training rows, in float64: the standardisation
    of every mask's solve (a channel's values do not depend on which others are kept)."""
    x = train["pooled"].double()
    return x.mean(0), x.std(0, unbiased=False)


def newton_fit(
    train: Tensors,
    inpaint: Tensors,
    val: Tensors,
    mask: torch.Tensor,
    inpaint_weight: float,
    l2: list[float],
    tol: float = 1e-9,
    max_iter: int = 100,
    init: MaskedLinearHead | None = None,
    device: torch.device | str = "cpu",
    stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> NewtonFit:
    """The optimum of the refit objective for `mask`, at the L2 strength of `l2` that gives the lowest
    validation BCE (ties: the stronger). `init` is only the starting point (the optimum is unique).
    `stats`: every channel's `channel_stats` on these training rows, where computed before (the heads
    of a run share them)."""
    device = torch.device(device)
    kept = mask.bool().to(device)
    channels = mask.numel()
    mean, std = stats if stats is not None else channel_stats(train)
    mu, sd = mean[kept.cpu()].to(device), std[kept.cpu()].to(device)
    sd = torch.where(sd > 1e-12, sd, torch.ones_like(sd))  # a channel constant on the training rows: centred only
    groups = [Group(train["pooled"], train["label"], 1.0)]
    if inpaint_weight > 0:
        groups.append(Group(inpaint["pooled"], inpaint["label"], float(inpaint_weight)))
    design = Design(groups, kept, mu, sd, device)
    val_design = Design([Group(val["pooled"], val["label"], 1.0)], kept, mu, sd, device)
    d = int(kept.sum())
    theta = torch.zeros(d + 1, dtype=torch.float64, device=device)
    if init is not None:  # the same affine map, read in the standardised space
        w = init.linear.weight.detach().reshape(-1).to(device, torch.float64)[kept]
        theta = torch.cat([w * sd, (init.linear.bias.detach().to(device, torch.float64) + w @ mu).reshape(1)])
    path: list[tuple[Solve, torch.Tensor]] = []
    hess = None
    for strength in sorted(l2, reverse=True):
        theta, iterations, loss, grad_max, hess = newton_solve(design, float(strength), theta, tol, max_iter, hess)
        logits = torch.cat([b.z @ theta for b in val_design.blocks()])
        val_loss, val_bacc = _val_metrics(logits.cpu(), val["label"].double())
        solve = Solve(float(strength), iterations, loss, grad_max, grad_max <= tol, val_loss, val_bacc)
        if not solve.converged:
            log.warning(
                "The head refit did not converge at l2=%g: %d Newton iterations, objective %.6g, max |gradient| "
                "%.3g > head.tol=%g; raise head.max_iter or the smallest head.l2",
                strength,
                iterations,
                loss,
                grad_max,
                tol,
            )
        path.append((solve, theta.clone()))
    best = min(range(len(path)), key=lambda i: (path[i][0].val_loss, -path[i][0].l2))
    chosen, theta = path[best]
    if len(path) > 1 and chosen.l2 in (min(l2), max(l2)):
        log.info(
            "The validation split chose l2=%g, an end of head.l2=%s: a wider grid may validate better",
            chosen.l2,
            sorted(l2, reverse=True),
        )
    weight, bias = fold(theta, kept, mu, sd, channels)
    head = solved_head(weight.unsqueeze(0), bias, mask)
    return NewtonFit(head, chosen, [s for s, _ in sorted(path, key=lambda p: p[0].l2)], theta.cpu(), mu.cpu(), sd.cpu())
