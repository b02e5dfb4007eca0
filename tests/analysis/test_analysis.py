import json

import pytest
import torch
from helpers import write_idx

from dietsnn import ann_to_snn, build_ann, save_model
from dietsnn.analysis import energy, layer_flops, smallest_t_within
from dietsnn.cli import main
from dietsnn.errors import UserError
from dietsnn.functional import native
from dietsnn.functional.energy import snn_energy
from dietsnn.layers import LIF


def test_vgg16_flops_match_the_paper_counts():
    rows = layer_flops(build_ann("vgg16", 10, 3, 32))
    assert sum(r["flops"] for r in rows) == 338_403_328
    assert rows[0] == {"name": "features.0", "flops": 1_769_472}
    big = layer_flops(build_ann("vgg16", 1000, 3, 224))
    assert sum(r["flops"] for r in big) == 15_470_264_320


def test_energy_of_small_network_with_hand_set_spike_rates():
    # vgg_small on 28x28: conv 1->32 @28x28, conv 32->64 @14x14, conv 64->64 @14x14,
    # linear 3136->256, linear 256->10
    snn = ann_to_snn(build_ann("vgg_small"), 5)
    flops = [9 * 1 * 32 * 784, 9 * 32 * 64 * 196, 9 * 64 * 64 * 196, 3136 * 256, 256 * 10]
    assert [r["flops"] for r in layer_flops(snn)] == flops
    rates = {"net.features.1": 0.5, "net.features.5": 1.25, "net.features.8": 2.0,
             "net.classifier.2": 0.25}
    en = energy(snn, rates)
    mac, ac = 4.6, 0.9
    want_snn = (flops[0] * mac + flops[1] * 0.5 * ac + flops[2] * 1.25 * ac + flops[3] * 2.0 * ac
                + flops[4] * 0.25 * ac)
    assert en["ann_pj"] == pytest.approx(sum(flops) * mac)
    assert en["snn_pj"] == pytest.approx(want_snn)
    assert en["ratio"] == pytest.approx(sum(flops) * mac / want_snn)
    assert [r["spike_rate_in"] for r in en["layers"]] == [None, 0.5, 1.25, 2.0, 0.25]
    # rate-coded input: the first layer is accumulates driven by input spikes
    en_rate = energy(snn, rates, input_rate=0.4)
    assert en_rate["layers"][0]["snn_pj"] == pytest.approx(flops[0] * 0.4 * ac)
    assert snn_energy([10], [None]) == [pytest.approx(46.0)]


def test_smallest_t_within_one_point():
    rows = [{"timesteps": t, "accuracy": a} for t, a in [(1, 0.5), (2, 0.88), (4, 0.905), (8, 0.91)]]
    assert smallest_t_within(rows, 0.91) == 4
    assert smallest_t_within(rows, 0.99) is None


@pytest.fixture
def tiny_run(tmp_path):
    write_idx(tmp_path / "data" / "fashion-mnist", n_train=120, n_test=40)
    torch.manual_seed(0)
    ann = build_ann("vgg_small")
    save_model(ann, tmp_path / "ann" / "model.safetensors")
    return tmp_path


def test_sweep_and_energy_commands_write_their_files(tiny_run, capsys):
    d = tiny_run
    common = ["--data-dir", str(d / "data"), "--quiet", "--val-size", "20"]
    assert main(["convert", str(d / "ann"), "--out", str(d / "conv"), "--calib-size", "16",
                 "--calib-timesteps", "4", *common]) == 0
    assert main(["sweep", str(d / "conv"), "--timesteps", "1,3", *common]) == 0
    assert (d / "conv" / "sweep.png").is_file()
    sweep = json.loads((d / "conv" / "metrics.json").read_text())["sweep"]["SNN"]
    assert [r["timesteps"] for r in sweep] == [1, 3]
    capsys.readouterr()
    assert main(["energy", str(d / "conv"), "--json", *common]) == 0
    res = json.loads(capsys.readouterr().out)
    assert {"ann_pj", "snn_pj", "ratio", "layers"} <= set(res["energy"])
    assert set(res["energy"]["layers"][0]) >= {"name", "flops", "spike_rate_in", "ann_pj", "snn_pj"}
    stored = json.loads((d / "conv" / "metrics.json").read_text())
    assert stored["energy"]["ratio"] == pytest.approx(res["energy"]["ratio"])
    # a second sweep or energy replaces the earlier result only with --overwrite
    before = {f: (d / "conv" / f).read_bytes() for f in ("metrics.json", "sweep.png")}
    capsys.readouterr()
    assert main(["sweep", str(d / "conv"), "--timesteps", "2", *common]) == 2
    assert "metrics.json's sweep holds an earlier sweep result; pass --overwrite" in \
        capsys.readouterr().err
    assert main(["energy", str(d / "conv"), "--e-mac", "9", *common]) == 2
    assert "holds an earlier energy result" in capsys.readouterr().err
    assert {f: (d / "conv" / f).read_bytes() for f in before} == before
    assert main(["sweep", str(d / "conv"), "--timesteps", "2", "--overwrite", *common]) == 0
    sweep = json.loads((d / "conv" / "metrics.json").read_text())["sweep"]["SNN"]
    assert [r["timesteps"] for r in sweep] == [2]
    assert main(["energy", str(d / "conv"), "--e-mac", "9", "--overwrite", *common]) == 0
    assert json.loads((d / "conv" / "metrics.json").read_text())["energy"]["e_mac_pj"] == 9


@pytest.mark.slow
def test_ablation_grid_cells_and_resume(tmp_path):
    # an untrained ANN whose linear layers are initialised like its convs (He): spikes reach the
    # output, so every trained leak and threshold gets a gradient
    d = tmp_path
    write_idx(d / "data" / "fashion-mnist", n_train=120, n_test=40)
    torch.manual_seed(0)
    ann = build_ann("vgg_small")
    for m in ann.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, 0.0, (2.0 / m.in_features) ** 0.5)
    save_model(ann, d / "ann" / "model.safetensors")
    out = d / "abl"
    args = ["ablation", str(d / "ann"), "--out", str(out), "--data-dir", str(d / "data"),
            "--quiet", "--val-size", "20", "--timesteps", "1,2", "--rate-timesteps", "3",
            "--seeds", "0,1", "--scales", "0.5,1", "--calib-size", "16",
            "--calib-timesteps", "4", "--batch-size", "32", "--snn-epochs", "1",
            "--neuron-lr", "0.05", "--no-compile"]
    assert main(args) == 0
    cells = {p.stem: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}
    assert len(cells) == 3 * 2 * 2 + 3 * 2  # (b, c, d) x T in {1, 2} + (a) x T in {1, 2, 3}
    for k, c in cells.items():
        if k[0] in "ab":  # neither leak nor threshold trained: as converted
            assert c["leaks"] == c["leaks_init"] and c["thresholds"] == c["thresholds_init"]
        else:
            assert c["thresholds"] != c["thresholds_init"]
    for s in (0, 1):
        assert cells[f"c-T2-s{s}"]["leaks"] == cells[f"c-T2-s{s}"]["leaks_init"]
        assert cells[f"d-T2-s{s}"]["leaks"] != cells[f"d-T2-s{s}"]["leaks_init"]
        # at T=1 the leak multiplies a zero membrane: no gradient, (c) and (d) coincide
        assert cells[f"d-T1-s{s}"]["accuracy"] == cells[f"c-T1-s{s}"]["accuracy"]
        assert cells[f"d-T1-s{s}"]["leaks"] == cells[f"d-T1-s{s}"]["leaks_init"]
    res = json.loads((out / "ablation.json").read_text())
    rows = {r["timesteps"]: r for r in res["variants"]["b"]["rows"]}
    accs = [cells[f"b-T2-s{s}"]["accuracy"] for s in (0, 1)]
    assert rows[2]["accuracy_mean"] == pytest.approx(sum(accs) / 2)
    assert rows[2]["seeds"] == 2
    assert [r["timesteps"] for r in res["variants"]["a"]["rows"]] == [1, 2, 3]
    md = (out / "ablation.md").read_text()
    assert md.count("\n| (") == 8 and "on 100 training images" in md and "(d) − (b), paired by seed" in md
    assert (out / "ablation.png").is_file()
    # a finished grid in --out is never rerun over without --resume
    assert main(args) == 2
    # --resume skips finished cells and reruns only the missing one
    (out / "cells" / "d-T2-s1.json").unlink()
    before = {p.name: p.read_bytes() for p in (out / "cells").glob("*.json")}
    assert main([*args, "--resume"]) == 0
    after = {p.name: p.read_bytes() for p in (out / "cells").glob("*.json")}
    assert set(after) == set(before) | {"d-T2-s1.json"}
    assert all(after[k] == v for k, v in before.items())


def test_ablation_api_opens_its_folder_as_a_run_dir(tmp_path):
    """Ablation.run refuses a folder with other work (the one RunDir mechanism) and a split
    without validation, before any computation."""
    from dietsnn.analysis.ablation import Ablation, AblationConfig
    from dietsnn.data import Splits, dataset_info

    x, y = torch.zeros(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)
    splits = Splits(dataset_info("fashion-mnist"), x, y, x[:2], y[:2], x, y)
    out = tmp_path / "abl"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    ablation = Ablation(build_ann("vgg_small"), splits, AblationConfig(), out)
    with pytest.raises(UserError, match="is not empty .*files that dietsnn did not write"):
        ablation.run()
    with pytest.raises(UserError, match="holds no dietsnn run"):
        ablation.run(overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    no_val = Splits(dataset_info("fashion-mnist"), x, y, x[:0], y[:0], x, y)
    with pytest.raises(UserError, match="give --val-size >= 1"):
        Ablation(build_ann("vgg_small"), no_val, AblationConfig(), tmp_path / "b")


@pytest.mark.parametrize("arch", ["vgg_small", "graph"])
def test_sweep_from_one_run_matches_a_run_at_each_t(arch):
    from dietsnn import calibrate_thresholds, convert
    from dietsnn.analysis import measure, sweep

    torch.manual_seed(0)
    if arch == "graph":  # a traced model with a residual add
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.c1, self.c2 = torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
                self.r1, self.r2 = torch.nn.ReLU(), torch.nn.ReLU()
                self.fc = torch.nn.Linear(8 * 28 * 28, 10)

            def forward(self, x):
                h = self.r1(self.c1(x))
                return self.fc((self.r2(self.c2(h)) + h).flatten(1))
        snn = convert(Net(), 4)
    else:
        snn = ann_to_snn(build_ann("vgg_small"), 4)
    x, y = torch.randn(96, 1, 28, 28), torch.randint(0, 10, (96,))
    calibrate_thresholds(snn, x[:32], scale=0.5, timesteps=8)
    fused = []
    orig = LIF.fused_forward
    with pytest.MonkeyPatch.context() as mp:  # the sweep counts spikes without hooks
        mp.setattr(LIF, "fused_forward", lambda self, *a: fused.append(r := orig(self, *a)) or r)
        rows = sweep(snn, [5, 1, 3], x, y, batch_size=40)
    if arch == "vgg_small" and native.available():  # every LIF with its dropout/pooling
        assert fused and all(r is not None for r in fused)
    assert snn.timesteps == 4 and [r["timesteps"] for r in rows] == [5, 1, 3]
    for r in rows:
        snn.timesteps = r["timesteps"]
        m = measure(snn, x, y, batch_size=40)
        assert r["accuracy"] == m["accuracy"]
        assert r["mean_spike_rate"] == pytest.approx(m["mean_spike_rate"], rel=1e-12)
        assert r["energy_ratio"] == pytest.approx(m["energy"]["ratio"], rel=1e-12)
    assert rows[0]["mean_spike_rate"] > rows[2]["mean_spike_rate"] > rows[1]["mean_spike_rate"] > 0
