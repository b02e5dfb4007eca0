import json

import pytest
import torch
from test_data import write_idx

from dietsnn import ann_to_snn, build_ann, save_model
from dietsnn.analysis import energy, layer_flops, smallest_t_within
from dietsnn.cli import main
from dietsnn.functional.energy import snn_energy


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
    rates = {"features.1": 0.5, "features.5": 1.25, "features.8": 2.0, "classifier.2": 0.25}
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
    save_model(tmp_path / "ann" / "model.safetensors", ann)
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


def test_ablation_end_to_end_on_tiny_data(tiny_run):
    d = tiny_run
    out = d / "abl"
    assert main(["ablation", str(d / "ann"), "--out", str(out), "--data-dir", str(d / "data"),
                 "--quiet", "--val-size", "20", "--timesteps", "1,2", "--train-timesteps", "2",
                 "--calib-size", "16", "--calib-timesteps", "4", "--batch-size", "32",
                 "--no-compile"]) == 0
    res = json.loads((out / "ablation.json").read_text())
    assert list(res["variants"]) == ["a", "b", "c", "d"]
    assert res["variants"]["a"]["encoding"] == "rate"
    # (b) trains neither leak nor threshold: they stay as converted
    b, c = res["variants"]["b"], res["variants"]["c"]
    assert all(v == 1.0 for v in b["leaks"]) and all(v == 1.0 for v in c["leaks"])
    assert (out / "ablation.md").read_text().count("\n| (") == 4
    assert (out / "ablation.png").is_file()
