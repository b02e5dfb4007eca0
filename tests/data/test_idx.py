
import pytest
import torch
from helpers import write_idx

from dietsnn import data
from dietsnn.errors import UserError


def test_loads_idx_from_data_dir_with_seeded_validation_split(tmp_path):
    write_idx(tmp_path / "fashion-mnist")
    a = data.load("fashion-mnist", tmp_path, val_size=10, seed=3)
    b = data.load("fashion-mnist", tmp_path, val_size=10, seed=3)
    c = data.load("fashion-mnist", tmp_path, val_size=10, seed=4)
    assert a.train_x.shape == (40, 1, 28, 28) and a.val_x.shape == (10, 1, 28, 28)
    assert a.test_x.shape == (20, 1, 28, 28) and a.train_x.dtype == torch.float32
    assert torch.equal(a.val_x, b.val_x) and not torch.equal(a.val_x, c.val_x)


def test_a_load_for_conversion_keeps_only_the_drawn_training_images(tmp_path):
    write_idx(tmp_path / "fashion-mnist")
    full = data.load("fashion-mnist", tmp_path, val_size=10, seed=3)
    part = data.load("fashion-mnist", tmp_path, val_size=10, seed=3, drawn=8)
    assert part.train_x.shape == (8, 1, 28, 28) and len(part.train_y) == 8
    for n in (1, 5, 8):  # the same images, in the same order, as from the whole split
        assert torch.equal(part.calibration_images(n, 3), full.calibration_images(n, 3))
    assert not torch.equal(full.calibration_images(8, 3), full.calibration_images(8, 4))
    assert torch.equal(part.val_x, full.val_x) and torch.equal(part.test_x, full.test_x)
    with pytest.raises(ValueError, match="hold 8 drawn"):
        part.calibration_images(9, 3)
    with pytest.raises(ValueError, match="seed 3"):
        part.calibration_images(8, 4)


def test_a_load_for_testing_only_keeps_no_training_image(tmp_path):
    write_idx(tmp_path / "fashion-mnist")
    full = data.load("fashion-mnist", tmp_path, val_size=0)
    test = data.load("fashion-mnist", tmp_path, val_size=0, train=False)
    assert test.train_x.shape == (0, 1, 28, 28) and len(test.train_y) == 0
    assert torch.equal(test.test_x, full.test_x) and torch.equal(test.test_y, full.test_y)


@pytest.mark.parametrize("corrupt,match", [("magic", "magic number"), ("truncated", "truncated"),
                                           ("count", "do not match")])
def test_corrupt_files_are_one_line_user_errors(tmp_path, corrupt, match):
    write_idx(tmp_path / "fashion-mnist", corrupt=corrupt)
    with pytest.raises(UserError, match=match) as e:
        data.load("fashion-mnist", tmp_path)
    assert "\n" not in str(e.value)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UserError, match="fashion-mnist"):
        data.load("imagenet-tiny")


def test_augment_keeps_shape_and_is_seeded():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    a = data.augment(x, 1, True, torch.Generator().manual_seed(0))
    b = data.augment(x, 1, True, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    same = data.augment(x, 0, False, torch.Generator().manual_seed(0))
    assert torch.equal(same, x)


def test_augmentation_replaces_the_datasets_crop_and_flip():
    info = data.dataset_info("fashion-mnist")
    assert data.augmentation(info) == info and (info.crop_padding, info.flip) == (0, False)
    aug = data.augmentation(info, crop_padding=2, flip=True)
    assert (aug.crop_padding, aug.flip, aug.mean) == (2, True, info.mean)
    cifar = data.dataset_info("cifar10")
    assert (data.augmentation(cifar, 0, False).crop_padding, cifar.crop_padding) == (0, 4)
    with pytest.raises(UserError, match="crop-padding"):
        data.augmentation(info, crop_padding=28)


def test_batches_cover_every_sample_once():
    x = torch.arange(10).float().view(10, 1, 1, 1)
    seen = torch.cat([xb.flatten() for xb, _ in data.Batches(x, torch.zeros(10), 3, shuffle=True)])
    assert sorted(seen.tolist()) == list(range(10))
