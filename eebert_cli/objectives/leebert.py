"""LeeBERT: mutual learning between exits with learned loss-term weights (eebert's reading).

Loss terms, for each exit i: cross-entropy to the targets (``ce``),
distillation from the deployed model (``kd``, temperature T; off with
``teacher=false``), and for every other exit j a mutual-learning term
KL(p_j || p_i) with p_j detached (the partner teaches, is not pulled). Every
term has a free weight parameter theta, normalised by ``norm``:
"softmax" (weights = softmax over all terms, scaled to their initial total) or
"sigmoid" (each weight = 2 sigmoid(theta) x its initial value). Initial
weights: ce 1, kd 1, each mutual term 1/(K-1), so a weight of 1 is "as much
as one target".

Bi-level fitting: the trainer fits exit parameters on a training part and
calls :meth:`outer_step` with a batch from a held-out part of the training
data (``outer_share`` of it). The outer gradient is DARTS' one-step unrolled
one: take a virtual SGD step (``virtual_lr``) of the exits on the weighted
inner loss, evaluate the plain per-exit cross-entropy on the held-out batch,
differentiate through the step to theta. Cross-level optimisation (CLO) mixes
it with the inner gradient (the weighted training loss's own gradient in
theta): g = (1 - mix) g_outer + mix g_inner, each unit-normalised first so
``mix`` is a share of direction, not of scale. Theta is fitted by Adam
(``weight_lr``); the learned weights go into the artifact's training report.

Collapse guard. Both directions are unit-normalised and Adam rescales each
coordinate, so the softmax's own saturation never slows the update: left
alone, theta runs until one term holds all the weight (measured on the demo:
``mutual@4<-5`` about 15 of 15). Two parameters stop that:

- ``floor`` (default 0.5): the loss uses w = (1 - floor) x learned + floor x
  initial. No term falls below floor x its initial weight; with softmax none
  exceeds (1 - floor) x total + floor x initial and the total stays the
  initial one. Holds at every step, whatever ``weight_lr`` or the run length.
- ``weight_entropy`` (default 0.5): a pull toward the initial balance added to
  theta's update: the relative entropy KL(p || q) of the learned weight
  distribution p to the initial one q, applied as its natural gradient
  log(p_t / q_t) - KL (the plain gradient is that times p_t and fades as a term
  dies). Against a drive of norm at most 1, at the update's fixed point each
  term's share is within exp(+-1/weight_entropy) of its initial share
  (relative to the common level): theta stays finite and the learned part
  stays informative.

``floor=0, weight_entropy=0`` is the unguarded update. :meth:`report` gives the
weights the loss uses, the learned part before the floor, and a summary: the
effective number of terms exp(entropy of w / sum w), before and now, and the
largest over the smallest weight relative to its initial value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..core.registry import Range
from .base import OBJECTIVES, Objective
from .ce_distil import kd_loss


@OBJECTIVES.register("leebert")
class LeeBert(Objective):
    bilevel = True
    bounds = {"mix": Range(0.0, 1.0), "outer_share": Range(0.0, 1.0, True, True), "floor": Range(0.0, 1.0, hi_open=True),
              "weight_entropy": Range(0.0), "weight_lr": Range(0.0), "virtual_lr": Range(0.0)}  # weight_lr 0: fixed weights

    def __init__(self, norm: str = "softmax", temperature: float = 2.0, teacher: bool = True,
                 mix: float = 0.3, weight_lr: float = 0.01, virtual_lr: float = 0.1, outer_share: float = 0.2,
                 floor: float = 0.5, weight_entropy: float = 0.5):
        super().__init__()
        if norm not in ("softmax", "sigmoid"):
            raise TypeError(f"norm must be 'softmax' or 'sigmoid', got {norm!r}")
        self.floor, self.weight_entropy = floor, weight_entropy
        self.norm, self.temperature, self.teacher = norm, temperature, teacher
        self.mix, self.weight_lr, self.virtual_lr, self.outer_share = mix, weight_lr, virtual_lr, outer_share
        self.names: list[str] = []
        self.theta: nn.Parameter | None = None
        self.opt = None
        self.steps = 0

    # -- setup: one weight per loss term, named for the report
    def bind(self, exits) -> None:
        layers = list(exits.layers)
        k = len(layers)
        names, init = [], []
        for i, li in enumerate(layers):
            names.append(f"ce@{li}"); init.append(1.0)
            if self.teacher:
                names.append(f"kd@{li}"); init.append(1.0)
            for lj in layers:
                if lj != li:
                    names.append(f"mutual@{li}<-{lj}"); init.append(1.0 / max(1, k - 1))
        self.names = names
        self.register_buffer("init", torch.tensor(init))
        base = torch.log(self.init) if self.norm == "softmax" else torch.zeros(len(init))
        self.theta = nn.Parameter(base.clone())
        self.opt = torch.optim.Adam([self.theta], lr=self.weight_lr)

    def learned(self) -> torch.Tensor:
        if self.norm == "softmax":
            return torch.softmax(self.theta, 0) * self.init.sum()
        return 2 * torch.sigmoid(self.theta) * self.init

    def weights(self) -> torch.Tensor:
        return (1 - self.floor) * self.learned() + self.floor * self.init

    def spread_pull(self) -> torch.Tensor:
        """Natural gradient of KL(p || q) in theta: does not fade as a weight shrinks."""
        with torch.no_grad():
            w = self.learned()
            p, q = w / w.sum(), self.init / self.init.sum()
            r = (p / q).log()
            return r - (p * r).sum()

    def terms(self, exit_logits, batch) -> torch.Tensor:
        out = []
        logp = [F.log_softmax(l, -1) for l in exit_logits]
        for i, li in enumerate(exit_logits):
            out.append(F.cross_entropy(li, batch.targets))
            if self.teacher:
                out.append(kd_loss(li, batch.teacher, self.temperature))
            for j in range(len(exit_logits)):
                if j != i:
                    partner = logp[j].detach()
                    out.append(F.kl_div(logp[i], partner, log_target=True, reduction="batchmean"))
        return torch.stack(out)

    def forward(self, exit_logits, batch):
        if self.theta is None:
            raise RuntimeError("leebert objective used before bind(exits)")
        return (self.weights() * self.terms(exit_logits, batch)).sum() / len(exit_logits)

    def heldout(self, exit_logits, batch):
        """Epoch selection must not depend on the moving weights: plain mean cross-entropy."""
        return self.outer_loss(exit_logits, batch)

    @staticmethod
    def outer_loss(exit_logits, batch):
        return sum(F.cross_entropy(l, batch.targets) for l in exit_logits) / len(exit_logits)

    def outer_step(self, exits, inner, outer) -> None:
        get_i, b_i = inner
        get_o, b_o = outer
        names = [n for n, p in exits.named_parameters() if p.requires_grad]
        params = dict(exits.named_parameters())
        l_in = self(functional_call(exits, params, (get_i,)), b_i)
        grads = torch.autograd.grad(l_in, [params[n] for n in names], create_graph=True, allow_unused=True)
        fast = dict(params)
        for n, g in zip(names, grads):
            if g is not None:
                fast[n] = params[n] - self.virtual_lr * g
        l_out = self.outer_loss(functional_call(exits, fast, (get_o,)), b_o)
        g_out = torch.autograd.grad(l_out, self.theta, retain_graph=True)[0]
        g_in = torch.autograd.grad(l_in, self.theta)[0]

        def unit(g):
            n = g.norm()
            return g / n if n > 0 else g

        self.opt.zero_grad()
        g = (1 - self.mix) * unit(g_out) + self.mix * unit(g_in)
        if self.weight_entropy:
            g = g + self.weight_entropy * self.spread_pull()
        self.theta.grad = g.detach()
        self.opt.step()
        self.steps += 1

    @staticmethod
    def effective_terms(w: torch.Tensor) -> float:
        p = w / w.sum()
        return float(torch.exp(-(p * p.log()).sum()))

    def report(self):
        if self.theta is None:
            return {}
        w, learned = self.weights().detach(), self.learned().detach()
        rel = w / self.init

        def named(x):
            return {n: round(float(v), 5) for n, v in zip(self.names, x)}

        return {"norm": self.norm, "mix": self.mix, "floor": self.floor, "weight_entropy": self.weight_entropy,
                "outer_steps": self.steps, "weights": named(w), "learned": named(learned), "initial": named(self.init),
                "summary": {"effective_terms": round(self.effective_terms(w), 3),
                            "effective_terms_initial": round(self.effective_terms(self.init), 3),
                            "terms": len(self.names),
                            "max_min_vs_initial": round(float(rel.max() / rel.min()), 3)}}
