"""NIR export: node types, weights and neuron parameters survive `nir.write` / `nir.read`, and a
small NIR interpreter following the documented semantics reproduces the SNN's logits."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dietsnn
from dietsnn.config import NIR_DT
from dietsnn.errors import UserError
from dietsnn.layers import lif_layers

LEAKS = [0.75, 1.0, 0.5, 0.875]  # dyadic: tau = 1/(1-lam) and 1-1/tau are exact


def tiny_snn(T=3, encoding="direct"):
    torch.manual_seed(0)
    snn = dietsnn.ann_to_snn(dietsnn.build_ann("vgg_small"), T, encoding=encoding)
    with torch.no_grad():
        for (_, m), lam, v in zip(lif_layers(snn), LEAKS, [0.25, 0.125, 0.125, 0.0625]):
            m.leak.fill_(lam)
            m.threshold.fill_(v)
    return snn.eval()


nir = pytest.importorskip("nir")
from dietsnn.export import export_nir, to_nir  # noqa: E402


def chain(graph) -> list[str]:
    nxt = dict(graph.edges)
    order = ["input"]
    while order[-1] in nxt:
        order.append(nxt[order[-1]])
    return order


def simulate(graph, x: torch.Tensor) -> torch.Tensor:
    """Run a sequential NIR graph for metadata['timesteps'] Euler steps of metadata['dt'], with the
    reset the metadata names; direct encoding (x at every step). Returns the logits: the output
    node's value summed over the steps, or, after an integrator node, its last value."""
    md = graph.metadata
    dt, T = float(md["dt"]), int(md["timesteps"])
    assert md["reset"] == "subtract" and md["encoding"] == "direct"
    order = chain(graph)[1:-1]
    v = {}
    d = lambda a: torch.as_tensor(np.asarray(a), dtype=x.dtype)  # noqa: E731
    total = 0
    for _ in range(T):
        h = x
        for name in order:
            n = graph.nodes[name]
            if isinstance(n, nir.Conv2d):
                h = F.conv2d(h, d(n.weight), d(n.bias), tuple(n.stride), tuple(n.padding),
                             tuple(n.dilation), int(n.groups))
            elif isinstance(n, nir.AvgPool2d):
                h = F.avg_pool2d(h, tuple(n.kernel_size), tuple(n.stride), tuple(n.padding))
            elif isinstance(n, nir.Flatten):  # NIR dims exclude the batch dim
                rank = len(n.input_type["input"])
                start, end = (int(k) % rank + 1 for k in (n.start_dim, n.end_dim))
                h = h.flatten(start, end)
            elif isinstance(n, nir.Linear):
                h = h @ d(n.weight).T
            elif isinstance(n, (nir.LIF, nir.IF)):
                u = v.get(name, torch.zeros_like(h))
                if isinstance(n, nir.LIF):  # tau du/dt = (v_leak - u) + r I, Euler
                    u = u * (1 - dt / d(n.tau)) + dt / d(n.tau) * (d(n.v_leak) + d(n.r) * h)
                else:  # du/dt = r I
                    u = u + dt * d(n.r) * h
                z = (u > d(n.v_threshold)).to(x.dtype)
                v[name] = u - z * d(n.v_threshold)  # soft reset, per the graph metadata
                h = z
            elif isinstance(n, nir.I):
                v[name] = v.get(name, torch.zeros_like(h)) + dt * d(n.r) * h
                h = v[name]
            else:
                raise AssertionError(type(n))
        total = total + h
    return h if isinstance(graph.nodes[order[-1]], nir.I) else total


def test_roundtrip_types_weights_and_neurons(tmp_path):
    snn = tiny_snn()
    path = tmp_path / "m.nir"
    export_nir(snn, path, nonleaky="if", pooling="avg")  # the exact form
    g = nir.read(path)
    types = [type(g.nodes[k]).__name__ for k in chain(g)]
    assert types == ["Input", "Conv2d", "LIF", "AvgPool2d", "Conv2d", "IF", "Conv2d", "LIF",
                     "AvgPool2d", "Flatten", "Linear", "LIF", "Linear", "Output"]
    assert list(g.nodes["input"].input_type["input"]) == [1, 28, 28]
    assert list(g.nodes["output"].output_type["output"]) == [10]
    convs = [g.nodes[k] for k in chain(g) if isinstance(g.nodes[k], nir.Conv2d)]
    for node, m in zip(convs, [u for u in snn.units() if isinstance(u, torch.nn.Conv2d)]):
        np.testing.assert_array_equal(node.weight, m.weight.detach().numpy())
        assert not node.bias.any() and list(node.stride) == [1, 1] and list(node.padding) == [1, 1]
    lins = [g.nodes[k] for k in chain(g) if isinstance(g.nodes[k], nir.Linear)]
    last = snn.get_submodule("net.classifier.4").weight.detach().numpy()
    np.testing.assert_array_equal(lins[-1].weight, last)
    flat = next(g.nodes[k] for k in chain(g) if isinstance(g.nodes[k], nir.Flatten))
    assert (flat.start_dim, flat.end_dim) == (-3, -1)  # the same with and without a batch dim
    neurons = [g.nodes[k] for k in chain(g) if isinstance(g.nodes[k], (nir.LIF, nir.IF))]
    shapes = [(32, 28, 28), (64, 14, 14), (64, 14, 14), (256,)]
    dt = g.metadata["dt"]
    for n, (_, m), shape, lam in zip(neurons, lif_layers(snn), shapes, LEAKS):
        v = m.threshold.item()
        assert n.v_threshold.shape == shape and np.all(n.v_reset == 0)
        assert n.metadata == {"leak": lam, "threshold": v, "reset": "subtract"}
        if lam == 1.0:  # r = 1 / dt: one Euler step adds the input current
            assert isinstance(n, nir.IF) and np.allclose(n.r, 1 / dt) and np.all(n.v_threshold == v)
        else:  # tau = dt / (1 - lam), r = 1, threshold scaled by 1 - lam
            assert np.allclose(n.tau, dt / (1.0 - lam)) and np.all(n.r == 1)
            assert np.allclose(n.v_threshold, (1 - lam) * v) and not n.v_leak.any()
    md = g.metadata
    assert md["timesteps"] == 3 and md["encoding"] == "direct" and dt == NIR_DT
    assert md["reset"] == "subtract" and md["surrogate"] == "linear"
    assert md["nonleaky"] == "if" and md["pooling"] == "avg" and "sum over" in md["output"]


FORMS = [{}, {"integrator": True}, {"nonleaky": "if"}, {"pooling": "avg"},
         {"nonleaky": "if", "pooling": "avg"}]


@pytest.mark.parametrize("form", FORMS, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items())
                         or "default")
def test_nir_semantics_reproduce_the_logits(form):
    """dt = 1 and dyadic leaks and thresholds: the Euler steps are exact in float64, except the
    "lif" form of leak 1, whose per-step decay 1 - 2**-30 is within the tolerance."""
    snn = tiny_snn(T=4).double()
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = snn(x)
    got = simulate(to_nir(snn, dt=1.0, **form), x)
    assert want.abs().sum() > 0  # the network is active, so the check means something
    tol = 1e-9 if form.get("nonleaky") == "if" else 1e-6
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_default_dt_reproduces_the_logits_to_float_precision():
    snn = tiny_snn(T=4)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = snn(x)
    got = simulate(to_nir(snn), x.double()).float()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_default_form_has_no_if_and_no_pooling_nodes():
    """The default is the form snnTorch and Norse import: no nir.IF, no nir.AvgPool2d."""
    g = to_nir(tiny_snn())
    kinds = {type(n).__name__ for n in g.nodes.values()}
    assert kinds == {"Input", "Conv2d", "LIF", "Flatten", "Linear", "Output"}
    pools = [n for n in g.nodes.values() if n.metadata.get("role") == "average pooling"]
    assert len(pools) == 2 and pools[0].weight.shape == (32, 32, 2, 2)
    assert pools[0].weight[3, 3].tolist() == [[0.25, 0.25], [0.25, 0.25]]
    assert pools[0].weight.sum() == 32  # nothing across channels
    leak1 = g.nodes["04_lif"]  # the layer with leak 1: a decay that rounds to 1 in float32
    assert np.float32(1 - g.metadata["dt"] / leak1.tau.astype(np.float64)).max() == 1.0


def test_rate_encoding_recorded_and_bad_requests_refused():
    assert to_nir(tiny_snn(encoding="rate")).metadata["encoding"] == "rate"
    with pytest.raises(UserError, match="ANN"):
        to_nir(dietsnn.build_ann("vgg_small"))
    for kwargs, msg in [({"dt": 0.0}, "dt"), ({"dt": float("inf")}, "dt"), ({"nonleaky": "x"}, "nonleaky"),
                        ({"pooling": "max"}, "pooling")]:
        with pytest.raises(UserError, match=msg):
            to_nir(tiny_snn(), **kwargs)
