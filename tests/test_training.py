import pytest
import torch

import dietsnn
from dietsnn import evaluation
from dietsnn.config import TrainConfig
from dietsnn.data import Splits, dataset_info
from dietsnn.errors import UserError
from dietsnn.training import fit, resolve_precision


@pytest.mark.parametrize("caps, auto", [
    ({"avx512_bf16": True, "amx_bf16": False}, "bf16"),
    ({"avx512_bf16": False, "amx_bf16": True}, "bf16"),
    ({"avx512_bf16": False, "amx_bf16": False}, "fp32"),
    ({}, "fp32"),
])
def test_auto_precision_is_bf16_on_a_cpu_with_native_bf16(monkeypatch, caps, auto):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    assert resolve_precision("auto", "cpu") == auto
    assert resolve_precision("auto", "meta") == "fp32"  # not a CPU
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(UserError, match="choose auto, fp32 or bf16"):
        resolve_precision("fp16", "cpu")


def _splits(n=48):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Splits(dataset_info("fashion-mnist"), x, y, x[:16], y[:16], x[:16], y[:16])


def test_auto_precision_trains_an_ann_in_bf16_where_the_cpu_has_it(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})
    dtypes = []
    ann = dietsnn.build_ann("vgg_small")
    ann.features[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    res = fit(ann, _splits(), TrainConfig(epochs=1, batch_size=16), tmp_path, progress=False)
    assert res["history"][0]["precision"] == "bf16" and dtypes[0] == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in ann.parameters())
    assert evaluation.autocast("auto").fast_dtype == torch.bfloat16
