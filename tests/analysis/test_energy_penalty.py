"""The differentiable compute energy (`SpikeEnergy`) against the energy model's own count, and
the spike penalty in training."""

import pytest
import torch

from dietsnn import ann_to_snn, build_ann, calibrate_thresholds
from dietsnn.analysis import SpikeEnergy, measure
from dietsnn.config import TrainConfig
from dietsnn.data import Splits, dataset_info
from dietsnn.training import fit


def _snn(T: int = 3, encoding: str = "direct"):
    torch.manual_seed(0)
    snn = ann_to_snn(build_ann("vgg_small"), T, encoding)
    x = torch.randn(32, 1, 28, 28)
    calibrate_thresholds(snn, x, 99.7, 0.5, timesteps=20)
    return snn, x


@pytest.mark.parametrize("T", [1, 3])
def test_cost_is_the_inverse_of_the_measured_energy_ratio(T):
    snn, x = _snn(T)
    snn.eval()
    y = torch.zeros(len(x), dtype=torch.long)
    ref = measure(snn, x, y, batch_size=8)["energy"]
    with SpikeEnergy(snn) as en, torch.no_grad():
        for xb in x.split(8):  # several forwards, one cost
            snn(xb)
        cost = en.cost()
    assert cost.item() == pytest.approx(ref["snn_pj"] / ref["ann_pj"], rel=1e-5)
    assert cost.item() == pytest.approx(1 / ref["ratio"], rel=1e-5)


def test_cost_gradient_lowers_spikes():
    snn, x = _snn()
    snn.train()
    with SpikeEnergy(snn) as en:
        snn(x)
        cost = en.cost()
        cost.backward()
    lifs = [m for m in snn.modules() if hasattr(m, "threshold")]
    # more threshold -> fewer spikes -> less energy: every trained threshold's gradient is < 0
    grads = [m.threshold.grad.item() for m in lifs]
    assert all(g < 0 for g in grads), grads
    assert all(m.leak.grad is not None for m in lifs)
    # reaches the weights that drive spikes
    assert snn.get_submodule("net.features.0").weight.grad.abs().sum() > 0


@pytest.mark.parametrize("engine", ["native", "eager"])
def test_the_penalised_step_keeps_the_fused_blocks_and_their_numbers(engine, monkeypatch):
    """With the penalty the LIF blocks still run as one operation each (no hooks); the loss and
    every gradient equal those of the same step run layer by layer (a hook on each LIF forces
    that), bit for bit, with dropout active."""
    from dietsnn import use_engine
    from dietsnn.functional import native, ops

    if engine == "native" and not native.available():
        pytest.skip("no native kernels")
    snn = ann_to_snn(build_ann("vgg_small", dropout=0.2), 3)
    torch.manual_seed(0)
    x = torch.randn(16, 1, 28, 28)
    calibrate_thresholds(snn, x, 99.7, 0.5, timesteps=10)
    snn.train()
    lifs = [m for m in snn.modules() if hasattr(m, "threshold")]
    calls = []
    real = torch.ops.dietsnn.lif_pool_forward
    monkeypatch.setattr(ops.torch.ops.dietsnn, "lif_pool_forward",
                        lambda *a: calls.append(1) or real(*a), raising=False)
    res = []
    for hooked in (False, True):
        hooks = [m.register_forward_hook(lambda *_: None) for m in lifs] if hooked else []
        snn.zero_grad()
        torch.manual_seed(1)  # the same dropout masks
        with use_engine(engine), SpikeEnergy(snn) as en:
            loss = torch.nn.functional.cross_entropy(snn(x), torch.arange(16) % 10) \
                + 0.1 * en.cost()
            loss.backward()
        res.append((loss.detach(), [p.grad.clone() for p in snn.parameters()]))
        for h in hooks:
            h.remove()
        if not hooked:
            fused_calls, calls[:] = len(calls), []
    assert fused_calls == (len(lifs) if engine == "native" else 0) and calls == []
    assert torch.equal(res[0][0], res[1][0])
    assert all(torch.equal(a, b) for a, b in zip(res[0][1], res[1][1]))


def test_spike_counter_counts_what_the_monitor_records():
    from dietsnn import SpikeMonitor
    from dietsnn.monitor import SpikeCounter

    snn, x = _snn()
    snn.eval()
    with torch.no_grad(), SpikeMonitor(snn, counts=True) as mon:
        snn(x)
    outer = SpikeCounter(snn)
    with torch.no_grad(), outer:
        with SpikeCounter(snn) as counter:  # an inner counter takes over
            snn(x[:8])
            snn(x[8:])
        snn(x[:1])
    for name in mon.names:
        (f0, n0, b0), (f1, n1, b1) = counter.records[name]
        assert (b0, b1) == (8, len(x) - 8) and n0 == n1 == mon[name][0].numel()
        assert f0.item() + f1.item() == mon[name].sum().item()
        assert [r[2] for r in outer.records[name]] == [1]
    assert all(m.tally is None for m in snn.modules() if hasattr(m, "tally"))


@pytest.mark.parametrize("engine", ["native", "eager"])
def test_per_step_counts_are_the_monitors_spikes_at_each_step(engine):
    """`SpikeCounter(per_step=True)`: each layer's spikes at each step, the fused blocks
    (counted in the kernel) and the layers one by one (eager) alike, equal to the spike
    tensors a `SpikeMonitor` records."""
    from dietsnn import SpikeMonitor, use_engine
    from dietsnn.monitor import SpikeCounter

    snn, x = _snn(T=4)
    snn.eval()
    with torch.no_grad(), SpikeMonitor(snn) as mon:
        snn(x)
    with torch.no_grad(), use_engine(engine), SpikeCounter(snn, per_step=True) as counter:
        snn(x)
    for name in mon.names:
        ((fired, neurons, images),) = counter.records[name]
        assert fired.shape == (4,) and images == len(x) and neurons == mon[name][0, 0].numel()
        assert fired.tolist() == mon[name].flatten(1).sum(1).tolist()


def test_cost_needs_an_observed_forward():
    snn, _ = _snn()
    with SpikeEnergy(snn) as en, pytest.raises(RuntimeError, match="no forward"):
        en.cost()


def test_cost_after_exit_observes_nothing():
    snn, x = _snn()
    en = SpikeEnergy(snn)
    with en:
        pass
    with torch.no_grad():
        snn(x[:4])
    with pytest.raises(RuntimeError):
        en.cost()


def test_spike_penalty_trains_to_fewer_spikes(tmp_path):
    snn0, x = _snn()
    torch.manual_seed(1)
    xs, ys = torch.randn(256, 1, 28, 28), torch.randint(0, 10, (256,))
    data = Splits(dataset_info("fashion-mnist"), xs, ys, xs[:64], ys[:64], xs[:64], ys[:64])
    rates = {}
    for pen in (0.0, 5.0):
        snn = ann_to_snn(build_ann("vgg_small"), 3)
        snn.load_state_dict(snn0.state_dict())
        cfg = TrainConfig(epochs=1, lr=1e-3, optimizer="adam", weight_decay=0.0, batch_size=64,
                          neuron_lr=0.03, augment=False, spike_penalty=pen)
        res = fit(snn, data, cfg, tmp_path / f"p{pen}", progress=False, log=lambda _: None)
        rates[pen] = measure(snn, xs[:64], ys[:64])["mean_spike_rate"]
        assert ("train_energy" in res["history"][0]) == (pen > 0)
    assert rates[5.0] < 0.8 * rates[0.0], rates


def test_the_penalty_observes_training_steps_only(tmp_path, monkeypatch):
    """Validation between epochs runs unobserved (no hooks: the fused kernels; no spike
    records kept), and the next epoch's steps are observed again."""
    import dietsnn.training as training

    snn, _ = _snn()
    torch.manual_seed(1)
    xs, ys = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    data = Splits(dataset_info("fashion-mnist"), xs, ys, xs[:32], ys[:32], xs[:32], ys[:32])
    hooked, evaluate = [], training.evaluate

    def spy(model, *a, **k):
        hooked.append(any(m._forward_hooks for m in model.modules()))
        return evaluate(model, *a, **k)

    monkeypatch.setattr(training, "evaluate", spy)
    cfg = TrainConfig(epochs=2, lr=1e-3, optimizer="adam", batch_size=32, spike_penalty=0.1)
    res = fit(snn, data, cfg, tmp_path, progress=False, log=lambda _: None)
    assert hooked == [False, False]
    assert all(r["train_energy"] > 0 for r in res["history"])
    assert not any(m._forward_hooks for m in snn.modules())  # all removed after fit


def test_no_penalty_leaves_the_loss_as_cross_entropy(tmp_path):
    """spike_penalty=0 observes nothing: no hooks, so the fused kernels keep running."""
    snn, x = _snn()
    cfg = TrainConfig(epochs=1, spike_penalty=0.0)
    from dietsnn.training import _energy_term

    ctx = _energy_term(snn, cfg)
    with ctx as en:
        assert en is None
        assert not any(m._forward_hooks for m in snn.modules())


def test_front_statistics_against_hand_computed_values():
    from dietsnn.analysis.front import mcnemar, t_interval

    ci = t_interval([0.90, 0.92, 0.91])
    assert ci["mean"] == pytest.approx(0.91)
    assert ci["half_width"] == pytest.approx(4.303 * 0.01 / 3 ** 0.5)
    # 10 images: a alone right on 3, b alone right on 0 -> p = 2 * (1/8) = 0.25
    y = [0] * 10
    a = [0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    b = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert mcnemar(a, b, y) == {"only_a": 3, "only_b": 0, "p": 0.25}
    assert mcnemar(a, a, y)["p"] == 1.0


def test_ablation_front_grid(tmp_path):
    """A tiny grid over two penalties writes cells, predictions, front.json/.md."""
    import json

    from dietsnn.analysis.ablation import Ablation, AblationConfig

    torch.manual_seed(0)
    xs, ys = torch.randn(96, 1, 28, 28), torch.randint(0, 10, (96,))
    data = Splits(dataset_info("fashion-mnist"), xs[:64], ys[:64], xs[64:80], ys[64:80],
                  xs[80:], ys[80:])
    cfg = AblationConfig(timesteps=(2,), seeds=(0, 1), variants="cd", train_subset=32,
                         batch_size=16, scales=(0.5,), calib_size=16, calib_timesteps=10,
                         penalties=(0.0, 1.0))
    res = Ablation(build_ann("vgg_small"), data, cfg, tmp_path, log=lambda _: None).run_grid()
    assert {p.name for p in (tmp_path / "cells").iterdir()} == {
        f"{v}-T2-s{s}{p}.json" for v in "cd" for s in (0, 1) for p in ("", "-p1")}
    assert len((tmp_path / "predictions" / "d-T2-s1-p1.txt").read_text().strip()) == 16
    front = json.loads((tmp_path / "front.json").read_text())
    assert {(r["variant"], r["spike_penalty"]) for r in front["rows"]} == {
        ("c", 0.0), ("c", 1.0), ("d", 0.0), ("d", 1.0)}
    assert all(len(p["mcnemar"]) == 2 for p in front["pairs"])
    assert "(d) − (c)" in (tmp_path / "front.md").read_text()
    assert res["cells"] == 4  # the ablation proper counts the unpenalised cells
