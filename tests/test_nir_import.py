"""NIR import (`dietsnn.from_nir`): dietsnn's own export round-trips exactly in every form, the
neuron mapping inverts NIR's Euler semantics for graphs written by other tools, the hard reset
follows its definition, and every graph dietsnn cannot run is refused with the node's name."""

import numpy as np
import pytest
import torch
from helpers import needs_fmnist
from test_export import tiny_snn

import dietsnn
from dietsnn.cli import main
from dietsnn.errors import UserError
from dietsnn.layers import lif_layers

nir = pytest.importorskip("nir")
from dietsnn.export import export_nir, to_nir  # noqa: E402
from dietsnn.layers import HardResetLIF  # noqa: E402

X = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(2))


def logits(model, x=X):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("form", [{}, {"nonleaky": "if", "pooling": "avg"}, {"integrator": True},
                                  {"dt": 1e-3}])
def test_dietsnn_export_round_trips_exactly(form):
    snn = tiny_snn(T=4)
    model = dietsnn.from_nir(to_nir(snn, **form))
    assert torch.equal(logits(model), logits(snn)) and logits(snn).abs().sum() > 0
    assert model.timesteps == 4 and model.encoding == "direct"
    assert [(m.leak.item(), m.threshold.item()) for _, m in lif_layers(model)] == [
        (m.leak.item(), m.threshold.item()) for _, m in lif_layers(snn)]
    assert not any(isinstance(m, HardResetLIF) for m in model.modules())  # metadata: subtract
    assert sum(isinstance(u, torch.nn.AvgPool2d) for u in model.units()) == 2  # conv pooling too


@needs_fmnist
def test_nir_file_loads_saves_and_runs_in_the_cli(tmp_path, capsys):
    snn = tiny_snn(T=3)
    export_nir(snn, tmp_path / "m.nir")
    model = dietsnn.load_model(tmp_path / "m.nir")  # a .nir that records its timesteps
    assert torch.equal(logits(model), logits(snn))
    dietsnn.save_model(model, tmp_path / "m.safetensors")  # an imported graph is a checkpoint
    assert torch.equal(logits(dietsnn.load_model(tmp_path / "m.safetensors")), logits(snn))
    main(["export", str(tmp_path / "m.nir"), str(tmp_path / "again.nir")])
    kinds = lambda f: {type(n).__name__ for n in nir.read(tmp_path / f).nodes.values()}  # noqa: E731
    assert "IF" not in kinds("again.nir") and "AvgPool2d" not in kinds("again.nir")  # default
    main(["export", "--exact", str(tmp_path / "m.nir"), str(tmp_path / "exact.nir")])
    assert {"IF", "AvgPool2d"} <= kinds("exact.nir")
    from dietsnn.checkpoint import read_model_file
    with pytest.raises(UserError, match="a NIR graph .*from_nir"):  # not "damaged"
        read_model_file(tmp_path / "m.nir")
    main(["evaluate", str(tmp_path / "m.nir"), "--dataset", "fashion-mnist", "--limit-test",
          "20", "--json"])
    assert '"timesteps": 3' in capsys.readouterr().out


def euler_graph(tau, r, v_th, reset, dt=1e-3, kind="LIF"):
    """Input [4] -> Linear(identity) -> one neuron layer -> output: a graph another tool writes."""
    w = np.eye(4, dtype=np.float32)
    f = lambda v: np.full(4, v, np.float32)  # noqa: E731
    neuron = (nir.LIF(tau=f(tau), r=f(r), v_leak=f(0), v_threshold=f(v_th), v_reset=f(0))
              if kind == "LIF" else nir.IF(r=f(r), v_threshold=f(v_th), v_reset=f(0)))
    nodes = {"input": nir.Input(np.array([4])), "w": nir.Linear(weight=w), "n": neuron,
             "output": nir.Output(np.array([4]))}
    md = {"reset": reset} if reset else {}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "w"), ("w", "n"), ("n", "output")],
                        metadata=md)


def reference(x, decay, gain, v_th, hard, T):
    """NIR's Euler step v <- (1 - decay) v + gain I, spike v > v_th, reset to 0 or by v_th."""
    v, total = torch.zeros_like(x, dtype=torch.float64), 0
    for _ in range(T):
        v = (1 - decay) * v + gain * x.double()
        z = (v > v_th).double()
        v = v * (1 - z) if hard else v - z * v_th
        total = total + z
    return total


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("tau,r,kind", [(4e-3, 1.0, "LIF"), (4e-3, 4.0, "LIF"), (0, 1e3, "IF"),
                                        (0, 500.0, "IF")])
def test_neurons_follow_nir_euler_semantics(tau, r, kind, reset):
    x = torch.rand(64, 4, generator=torch.Generator().manual_seed(0)) * 3
    dt, v_th, T = 1e-3, 0.7, 9
    model = dietsnn.from_nir(euler_graph(tau, r, v_th, reset, dt, kind), timesteps=T, dt=dt)
    decay, gain = (dt / tau, dt / tau * r) if kind == "LIF" else (0.0, dt * r)
    want = reference(x, decay, gain, v_th, reset == "zero", T)
    got = logits(model, x).double()
    assert (got == want).float().mean() > 0.99  # float32 vs float64 ties only
    assert want.sum() > 0 and (want < T).any()  # neither silent nor saturated


def test_reset_defaults_to_nir_zero_and_can_be_chosen():
    g = euler_graph(4e-3, 1.0, 0.7, None)
    assert isinstance(lif_layers(dietsnn.from_nir(g, timesteps=2, dt=1e-3))[0][1], HardResetLIF)
    soft = lif_layers(dietsnn.from_nir(g, timesteps=2, dt=1e-3, reset="subtract"))[0][1]
    assert type(soft) is dietsnn.LIF and soft.leak.item() == pytest.approx(0.75)
    assert soft.threshold.item() == pytest.approx(0.7 / 0.25)


def test_hard_reset_layer_trains_exports_and_saves(tmp_path):
    g = euler_graph(4e-3, 1.0, 0.7, None)
    model = dietsnn.from_nir(g, timesteps=5, dt=1e-3).train()
    x = torch.rand(8, 4) * 3
    model(x).sum().backward()
    lif = lif_layers(model)[0][1]
    assert lif.threshold.grad is not None and lif.leak.grad is not None
    back = to_nir(model.eval())
    assert back.metadata["reset"] == "zero"
    assert torch.equal(logits(dietsnn.from_nir(back), x), logits(model, x))
    dietsnn.save_model(model, tmp_path / "hard.safetensors")  # a checkpoint like any other
    again = dietsnn.load_model(tmp_path / "hard.safetensors")
    assert isinstance(lif_layers(again)[0][1], HardResetLIF)
    assert torch.equal(logits(again, x), logits(model, x)) and logits(model, x).sum() > 0


def test_scale_folds_sumpool_and_integrator_import():
    w = np.array([[1.0, 2.0], [3.0, -1.0]], np.float32)
    f = lambda v: np.full(2, v, np.float32)  # noqa: E731
    nodes = {"input": nir.Input(np.array([2])), "a": nir.Affine(weight=w, bias=f(0.5)),
             "s": nir.Scale(scale=np.array([2.0, 0.5], np.float32)),
             "n": nir.IF(r=f(1.0), v_threshold=f(1.0), v_reset=f(0)),
             "i": nir.I(r=f(1.0)), "output": nir.Output(np.array([2]))}
    names = list(nodes)
    g = nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:])),
                     metadata={"timesteps": 3, "dt": 1.0})
    model = dietsnn.from_nir(g)
    lin = model.units()[0]
    np.testing.assert_allclose(lin.weight.detach().numpy(), w * np.array([[2.0], [0.5]]))
    np.testing.assert_allclose(lin.bias.detach().numpy(), [1.0, 0.25])
    pool = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                         padding=np.array([0, 0]))
    sp = dietsnn.from_nir(nir.NIRGraph(nodes={"input": nir.Input(np.array([1, 4, 4])), "p": pool,
                                              "output": nir.Output(np.array([1, 2, 2]))},
                                       edges=[("input", "p"), ("p", "output")]), timesteps=1)
    assert logits(sp, torch.ones(1, 1, 4, 4)).flatten().tolist() == [4.0] * 4


def graph_with(node, shape=(4,)):
    nodes = {"input": nir.Input(np.array(shape)), "bad": node, "output": nir.Output(np.array(shape))}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "bad"), ("bad", "output")])


def test_unmappable_graphs_are_refused_with_the_node_named(tmp_path):
    f = lambda v: np.full(4, v, np.float32)  # noqa: E731
    cuba = nir.CubaLIF(tau_syn=f(1e-3), tau_mem=f(1e-3), r=f(1), v_leak=f(0), v_threshold=f(1))
    varied = nir.LIF(tau=np.array([1e-3, 2e-3, 1e-3, 1e-3], np.float32), r=f(1), v_leak=f(0),
                     v_threshold=f(1), v_reset=f(0))
    leak = nir.LIF(tau=f(1e-3), r=f(1), v_leak=f(0.1), v_threshold=f(1), v_reset=f(0))
    for node, msg in [(cuba, "'bad' \\(CubaLIF\\)"), (nir.Delay(f(1)), "'bad' \\(Delay\\)"),
                      (varied, "'bad': tau differs across neurons"), (leak, "'bad': v_leak"),
                      (nir.Threshold(f(1)), "'bad' \\(Threshold\\)")]:
        with pytest.raises(UserError, match=msg):
            dietsnn.from_nir(graph_with(node), timesteps=2, dt=1e-4)
    branch = graph_with(nir.Linear(weight=np.eye(4, dtype=np.float32)))
    branch.edges.append(("input", "output"))
    with pytest.raises(UserError, match="'input' has .* 2 outputs"):
        dietsnn.from_nir(branch, timesteps=2)
    with pytest.raises(UserError, match="timesteps"):
        dietsnn.from_nir(graph_with(nir.Linear(weight=np.eye(4, dtype=np.float32))))
    with pytest.raises(UserError, match="reset must be"):
        dietsnn.from_nir(graph_with(nir.Linear(weight=np.eye(4))), timesteps=1, reset="hard")
    with pytest.raises(TypeError, match="nir.NIRGraph"):
        dietsnn.from_nir(42)
    (tmp_path / "x.nir").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="not a NIR graph"):
        dietsnn.from_nir(tmp_path / "x.nir", timesteps=1)
    (tmp_path / "y.nir").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(UserError, match="not a readable NIR graph"):
        dietsnn.from_nir(tmp_path / "y.nir", timesteps=1)
