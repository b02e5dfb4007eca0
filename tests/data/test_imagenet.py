import pytest
import torch

from dietsnn import data
from dietsnn.data.imagenet import ImageFolderSet, random_resized_crop_box, transform
from dietsnn.errors import UserError

PIL = pytest.importorskip("PIL.Image")
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def write_folders(root, per_train=4, per_val=2, size=(40, 40)):
    """imagenet/{train,val}/<class>/*.JPEG, class k a solid colour (JPEG keeps it nearly exact)."""
    for split, per in (("train", per_train), ("val", per_val)):
        for k, color in enumerate(COLORS):
            d = root / "imagenet" / split / f"n0{k}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per):
                PIL.new("RGB", size, color).save(d / f"img_{i}.JPEG", quality=100)
    return root


def expected_pixel(k):
    mean, std = data.DATASETS["imagenet"].mean, data.DATASETS["imagenet"].std
    return torch.tensor([(c / 255 - m) / s for c, m, s in zip(COLORS[k], mean, std)])


def test_load_splits_labels_and_eval_transform(tmp_path):
    write_folders(tmp_path)
    s = data.load("imagenet", tmp_path, val_size=3, seed=0)
    assert s.info.num_classes == 3 and s.info.classes == ("n00", "n01", "n02")
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (9, 3, 6)
    assert sorted(s.test_y.tolist()) == [0, 0, 1, 1, 2, 2]
    x = s.test_x[torch.tensor([0, 5])]  # indexing with indices loads for evaluation
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    for img, k in zip(x, s.test_y[[0, 5]].tolist()):
        assert torch.allclose(img.mean((1, 2)), expected_pixel(k), atol=0.05)
    assert isinstance(s.test_x[:2], ImageFolderSet) and len(s.test_x[:2]) == 2
    again = data.load("imagenet", tmp_path, val_size=3, seed=0)
    assert again.val_x.samples == s.val_x.samples


def test_eval_transform_resizes_short_side_and_center_crops():
    img = PIL.new("RGB", (80, 40), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 40))  # a white strip at the far left is cropped away
    x = transform(img, 224, (0.0,) * 3, (1.0,) * 3)
    assert x.shape == (3, 224, 224)
    assert x.max() < 0.05  # 80x40 -> 512x256, center 224: the strip (0..64) is outside


def test_random_resized_crop_and_flip():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        x0, y0, cw, ch = random_resized_crop_box(40, 30, g)
        assert 0 <= x0 and x0 + cw <= 40 and 0 <= y0 and y0 + ch <= 30
        assert 0.08 * 1200 * 0.8 <= cw * ch <= 1200 and 0.7 <= cw / ch <= 1.4
    img = PIL.new("RGB", (40, 40), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 40))  # left half white
    left = [transform(img, 32, (0.0,) * 3, (1.0,) * 3, torch.Generator().manual_seed(s))[:, :, 0]
            .mean().item() for s in range(20)]
    assert max(left) > 0.9 and min(left) < 0.1  # flipped and unflipped both happen


def test_batches_are_seeded_and_independent_of_workers(tmp_path):
    write_folders(tmp_path)
    s = data.load("imagenet", tmp_path, val_size=3, seed=0)
    runs = []
    for workers in (0, 1):
        s.train_x.workers = workers
        b = s.train_x.batches(4, shuffle=True, augment=True, seed=7)
        assert len(b) == 3
        runs.append(list(b))
    (xa, ya), (xb, yb) = runs[0][0], runs[1][0]
    assert xa.shape == (4, 3, 224, 224) and ya.dtype == torch.long
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert sum(len(y) for _, y in runs[0]) == 9


def test_fit_and_evaluate_on_folders(tmp_path):
    from dietsnn.config import TrainConfig
    from dietsnn.models.resnet import ResNet
    from dietsnn.training import evaluate, fit

    write_folders(tmp_path)
    s = data.load("imagenet", tmp_path, val_size=3, seed=0)
    for part in (s.train_x, s.val_x, s.test_x):
        part.workers = 0
    model = ResNet((1, 1, 1, 1), 3, 3, 224, 0.0, widths=(4, 4, 4, 4), stem_width=4)
    cfg = TrainConfig(epochs=1, lr=0.01, batch_size=4, seed=0)
    res = fit(model, s, cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    assert len(res["history"]) == 1 and (tmp_path / "run" / "state.pt").is_file()
    ev = evaluate(model, s.test_x, s.test_y, batch_size=4)
    assert 0.0 <= ev["accuracy"] <= 1.0 and ev["loss"] > 0


def test_missing_or_empty_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        data.load("imagenet", tmp_path / "none")
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="imagenet is incomplete, .* lacks val"):
        data.load("imagenet", tmp_path)
    (tmp_path / "imagenet" / "train" / "a").mkdir(parents=True)
    (tmp_path / "imagenet" / "val" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="no images"):
        data.load("imagenet", tmp_path)


def test_pipeline_data_access_on_folders(tmp_path):
    """What pipeline.convert / layer_report / the sweep do with the splits, on image folders."""
    from dietsnn import ann_to_snn, calibrate_thresholds, pipeline
    from dietsnn.analysis import measure
    from dietsnn.models.resnet import ResNet

    write_folders(tmp_path)
    s = data.load("imagenet", tmp_path, val_size=3, seed=0)
    ctx = pipeline.Context(s, progress=False, log=lambda *a: None, eval_batch=4)
    snn = ann_to_snn(ResNet((1, 1, 1, 1), 3, 3, 224, 0.0, widths=(4, 4, 4, 4), stem_width=4), 2)
    images = ctx.data.calibration_images(5, 0)
    assert images.shape == (5, 3, 224, 224)
    assert len(calibrate_thresholds(snn, images, 99.7, 0.3, 3)) == 11
    layers, acc = pipeline.layer_report(snn, ctx)
    assert len(layers) == 11 and 0.0 <= acc <= 1.0
    m = measure(snn, s.test_x[:4], s.test_y[:4], batch_size=2)
    assert len(m["spike_rates"]) == 11 and m["energy"]["ratio"] > 0
