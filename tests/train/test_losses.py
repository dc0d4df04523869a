"""Each loss against an explicit float64 per-example formula loop."""

from __future__ import annotations

import math

import pytest
import torch

from sc_data.train.losses import LOSS_TYPES, build_loss, sft_nll


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _reference(kind: str, pc, pr, rc, rr, lc, lr, beta, eps, margin):
    out = []
    for i in range(len(pc)):
        cr, rj = pc[i] - rc[i], pr[i] - rr[i]
        h = cr - rj
        z = beta * h - margin[i]
        if kind == "sigmoid":
            loss = -_logsig(z)
        elif kind == "hinge":
            loss = max(0.0, 1.0 - z)
        elif kind == "ipo":
            hm = cr / lc[i] - rj / lr[i]
            loss = (hm - margin[i] / beta - 1.0 / (2.0 * beta)) ** 2
        elif kind == "cdpo":
            loss = -(1 - eps) * _logsig(z) - eps * _logsig(-z)
        else:
            loss = ((1 - eps) * -_logsig(z) - eps * -_logsig(-z)) / (1 - 2 * eps)
        out.append((loss, beta * cr, beta * rj))
    return torch.tensor(out, dtype=torch.float64)


class TestLosses:
    @pytest.mark.parametrize("kind", LOSS_TYPES)
    @pytest.mark.parametrize("with_margin", [False, True])
    def test_matches_float64_reference(self, kind: str, with_margin: bool) -> None:
        g = torch.Generator().manual_seed(3)
        n = 16
        pc, pr, rc, rr = (-30 * torch.rand(n, generator=g, dtype=torch.float64) for _ in range(4))
        lc = torch.randint(1, 40, (n,), generator=g).double()
        lr = torch.randint(1, 40, (n,), generator=g).double()
        margin = torch.rand(n, generator=g, dtype=torch.float64) if with_margin else torch.zeros(n, dtype=torch.float64)
        beta, eps = 0.1, (0.2 if kind in ("cdpo", "robust") else 0.0)
        loss_fn = build_loss(kind, beta=beta, label_smoothing=eps)
        loss, cr, rj = loss_fn(pc.float(), pr.float(), rc.float(), rr.float(), chosen_len=lc.float(), rejected_len=lr.float(),
                               margin=margin.float() if with_margin else None)
        ref = _reference(kind, pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), lc.tolist(), lr.tolist(), beta, eps, margin.tolist())
        torch.testing.assert_close(loss.double(), ref[:, 0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cr.double(), ref[:, 1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(rj.double(), ref[:, 2], rtol=1e-5, atol=1e-5)

    def test_cdpo_and_robust_differ(self) -> None:
        args = (torch.tensor([-5.0]), torch.tensor([-9.0]), torch.tensor([-6.0]), torch.tensor([-7.0]))
        cdpo = build_loss("cdpo", beta=0.1, label_smoothing=0.1)(*args)[0]
        robust = build_loss("robust", beta=0.1, label_smoothing=0.1)(*args)[0]
        assert not torch.allclose(cdpo, robust)

    def test_sigmoid_at_zero_is_log2_and_gradient_flows(self) -> None:
        pc = torch.tensor([-3.0, -4.0], requires_grad=True)
        loss, cr, _ = build_loss("sigmoid", beta=0.1)(pc, torch.tensor([-3.0, -4.0]), torch.tensor([-3.0, -4.0]), torch.tensor([-3.0, -4.0]))
        torch.testing.assert_close(loss, torch.full((2,), math.log(2.0)))
        loss.sum().backward()
        # d/dpc of −log σ(β·h) at h=0 is −β/2.
        torch.testing.assert_close(pc.grad, torch.full((2,), -0.05))
        assert not cr.requires_grad

    def test_ipo_needs_lengths(self) -> None:
        t = torch.zeros(2)
        with pytest.raises(ValueError, match="IPO compares per-token means: pass chosen_len and rejected_len"):
            build_loss("ipo", beta=0.1)(t, t, t, t)

    def test_sft_nll_is_per_token_mean(self) -> None:
        torch.testing.assert_close(sft_nll(torch.tensor([-6.0, -1.0]), torch.tensor([3.0, 4.0])), torch.tensor([2.0, 0.25]))
