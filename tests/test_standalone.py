"""LIF layers on their own ([T, B, ...] in and out, learnable leak and threshold) and the spike
monitor, on hand-built and converted networks."""

import pytest
import torch
from torch import nn

import dietsnn
from dietsnn.functional import lif_reference


def test_a_lone_lif_runs_time_major_input_like_the_reference_loop():
    layer = dietsnn.LIF(leak=0.9, threshold=0.5)
    x = torch.randn(5, 3, 4, 6) * 1.5  # [T, B, C, F]
    out = layer(x)
    ref_x = x.clone().requires_grad_()
    leak = torch.tensor(0.9, requires_grad=True)
    v = torch.tensor(0.5, requires_grad=True)
    ref = lif_reference(ref_x, leak, v)
    assert out.shape == x.shape and torch.equal(out, ref)
    w = torch.randn_like(x)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(layer.leak.grad, leak.grad)
    torch.testing.assert_close(layer.threshold.grad, v.grad)
    with pytest.raises(ValueError, match=r"time-major input \[T, B, ...\], got shape \(7,\)"):
        layer(torch.randn(7))


def test_a_hand_built_snn_learns_its_leaks_and_thresholds():
    """Linear layers applied per step (time folded into the batch by the user), LIF on [T, B, F]."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1, self.fc2 = nn.Linear(8, 16), dietsnn.LIF(0.95, 0.4), nn.Linear(16, 3)

        def forward(self, x):  # [T, B, 8]
            return self.fc2(self.lif1(self.fc1(x))).sum(0)

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    x, y = torch.randn(4, 32, 8), torch.randint(0, 3, (32,))
    with dietsnn.use_engine():  # also clamps leak and threshold after each step
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    assert net.lif1.leak.item() != pytest.approx(0.95) and 0 < net.lif1.leak.item() <= 1.0
    assert net.lif1.threshold.item() != pytest.approx(0.4)
    program = torch.export.export(net.eval(), (x,))
    assert "dietsnn.lif_forward.default" in {str(n.target) for n in program.graph.nodes}
    with torch.no_grad():
        assert torch.equal(program.module()(x), net(x))


def test_the_monitor_records_spike_trains_in_time_major_layout():
    torch.manual_seed(0)
    snn = dietsnn.ann_to_snn(dietsnn.build_ann("vgg_small"), 3, threshold=0.05).eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        plain = snn(x)
        with dietsnn.SpikeMonitor(snn) as trains, dietsnn.SpikeMonitor(snn, counts=True) as counts:
            monitored = snn(x)
            snn(x[:2])
        snn(x)  # after the block: not recorded
    assert torch.equal(plain, monitored)  # the fused blocks run unfused: the same numbers
    names = [n for n, _ in dietsnn.layers.lif_layers(snn)]
    assert trains.names == names and len(trains.records[names[0]]) == 2
    first = trains[names[0]]
    assert first.shape == (3, 6, 32, 28, 28) and set(first.unique().tolist()) == {0.0, 1.0}
    for n in names:  # two forwards joined over the batch; counts are the trains summed over time
        assert trains[n].shape[:2] == (3, 6)
        assert torch.equal(counts[n], trains[n].sum(0))
    # the first layer's spikes, recomputed from its input current (direct encoding: constant)
    conv = snn.get_submodule("net.features.0")
    lif = snn.get_submodule("net.features.1")
    current = conv(x).unsqueeze(0).expand(3, *conv(x).shape)
    assert torch.equal(trains[names[0]][:, :4], lif_reference(current, lif.leak.detach(),
                                                               lif.threshold.detach()))
    with pytest.raises(KeyError, match="no LIF layer 'nope'"):
        trains["nope"]
    assert dietsnn.SpikeMonitor(nn.Linear(2, 2)).names == []
