"""Cat-DPO dual ascent: γ rises above target, falls below, clipped to [0, γ_max]."""

from __future__ import annotations

import pytest
import torch

from sc_data.train.cat_dpo import CatDPOController, unsafe_rates


class TestCatDPO:
    def test_unsafe_rates_count_ties_half_and_skip_unknown(self) -> None:
        h = torch.tensor([-1.0, 0.0, 2.0, -3.0, 1.0])
        cats = [["privacy"], ["privacy", "cybercrime"], ["privacy"], ["unknown"], ["cybercrime"]]
        rates = unsafe_rates(h, cats)
        assert rates == {"privacy": (pytest.approx(0.5), 3), "cybercrime": (pytest.approx(0.25), 2)}

    def test_gamma_rises_above_target_falls_below_and_clips(self) -> None:
        ctl = CatDPOController(eta=0.5, target=0.2, gamma_max=0.6, ema=0.0, min_count=2)
        ctl.update({"privacy": (0.8, 10), "cybercrime": (0.0, 10), "violence_physical_harm": (1.0, 1)})
        assert ctl.gamma["privacy"] == pytest.approx(0.3)
        assert ctl.gamma["cybercrime"] == 0.0  # clipped at 0
        assert "violence_physical_harm" not in ctl.gamma  # below min_count
        ctl.update({"privacy": (0.8, 10)})
        assert ctl.gamma["privacy"] == pytest.approx(0.6)
        ctl.update({"privacy": (0.8, 10)})
        assert ctl.gamma["privacy"] == pytest.approx(0.6)  # clipped at gamma_max
        ctl.update({"privacy": (0.0, 10)})
        assert ctl.gamma["privacy"] == pytest.approx(0.5)  # falls once the category is safe

    def test_ema_smoothing(self) -> None:
        ctl = CatDPOController(eta=1.0, target=0.0, gamma_max=10, ema=0.5, min_count=1)
        ctl.update({"privacy": (1.0, 5)})
        ctl.update({"privacy": (0.0, 5)})
        assert ctl.unsafe["privacy"] == pytest.approx(0.5)
        assert ctl.gamma["privacy"] == pytest.approx(1.5)

    def test_margins_take_largest_gamma_unknown_zero(self) -> None:
        ctl = CatDPOController(eta=1, target=0, gamma_max=5, ema=0, min_count=1)
        ctl.load_state_dict({"gamma": {"privacy": 0.3, "cybercrime": 0.7}, "unsafe": {}})
        m = ctl.margins([["privacy", "cybercrime"], ["privacy"], ["unknown"], None, []])
        torch.testing.assert_close(m, torch.tensor([0.7, 0.3, 0.0, 0.0, 0.0]))
        assert ctl.state_dict()["gamma"] == {"privacy": 0.3, "cybercrime": 0.7}
