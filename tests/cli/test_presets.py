import pytest

from dietsnn import presets
from dietsnn.cli import build_parser, main
from dietsnn.cli import presets as cli_presets
from dietsnn.cli.options import conversion_config, train_config
from dietsnn.config import ANN_TRAIN, CLI_SCALE, SNN_TRAIN


def parse(*argv):
    parser = build_parser()
    return cli_presets.apply(parser, list(argv), parser.parse_args(list(argv)))


def test_preset_sets_paper_defaults_for_run():
    a = parse("run", "--preset", "cifar10-resnet20")
    assert (a.dataset, a.arch, a.timesteps, a.scale, a.dropout) == ("cifar10", "resnet20", 5, 0.2, 0.2)
    assert (a.ann_epochs, a.ann_lr, a.ann_optimizer, a.ann_weight_decay) == (300, 1e-2, "sgd", 5e-4)
    assert (a.snn_lr, a.snn_batch_size, a.snn_optimizer, a.snn_weight_decay) == (1e-4, 64, "adam", 0.0)


def test_explicit_options_override_the_preset_in_any_order():
    a = parse("run", "--ann-epochs", "3", "--preset", "cifar10-vgg16", "--scale", "0.25",
              "--dataset", "cifar100")
    assert (a.ann_epochs, a.scale, a.dataset, a.arch, a.snn_epochs) == (3, 0.25, "cifar100", "vgg16", 60)


@pytest.mark.parametrize("argv,want", [
    (["train-ann", "--preset", "imagenet-vgg16"],
     {"dataset": "imagenet", "epochs": 90, "batch_size": 256, "lr": 1e-2, "val_size": 10000}),
    (["train-snn", "ck", "--preset", "cifar100-vgg16"],
     {"dataset": "cifar100", "epochs": 60, "batch_size": 64, "lr": 1e-4, "timesteps": 5}),
    (["convert", "ck", "--preset", "cifar10-resnet20"], {"scale": 0.2, "timesteps": 5}),
])
def test_preset_per_command(argv, want):
    a = parse(*argv)
    assert {k: getattr(a, k) for k in want} == want


def test_no_preset_keeps_the_defaults():
    a, b = parse("run"), build_parser().parse_args(["run"])
    assert vars(a) == vars(b) and a.preset is None
    assert a.ann_epochs == ANN_TRAIN.epochs and a.scale is None  # auto on validation, else 0.5
    assert conversion_config(a).scale == CLI_SCALE


def test_presets_command_lists_the_table(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in presets.PRESETS:
        assert name in out
    assert "resnet20" in out and "300 / 0.01 / 128" in out
    assert "crop 2 + flip" in out and "dataset's" in out


def test_augmentation_options_reach_both_training_phases():
    a = parse("run")
    assert (a.crop_padding, a.flip, a.augment) == (None, None, True)  # the dataset's
    b = parse("run", "--crop-padding", "2", "--flip")
    for cfg in (train_config(b, "ann_"), train_config(b, "snn_", snn=True)):
        assert (cfg.crop_padding, cfg.flip, cfg.augment) == (2, True, True)
    assert parse("train-ann", "--no-flip").flip is False
    assert train_config(parse("train-snn", "ck", "--crop-padding", "0")).crop_padding == 0


def test_a_crop_padding_as_large_as_the_image_is_refused_before_work(capsys):
    assert main(["run", "--crop-padding", "28", "--out", "never-written"], validate_only=True) == 2
    assert "--crop-padding must be in [0, 27]" in capsys.readouterr().err


def test_fmnist_best_sets_its_recipe_and_explicit_options_win():
    p = presets.PRESETS["fmnist-best"]
    a = parse("run", "--preset", "fmnist-best")
    assert (a.dataset, a.arch, a.timesteps, a.scale) == ("fashion-mnist", "vgg_small_bn", 3, 0.7)
    assert (a.crop_padding, a.flip, a.augment) == (2, True, True)
    assert (a.ann_epochs, a.snn_epochs) == (p["ann"]["epochs"], p["snn"]["epochs"])
    assert (a.sweep_timesteps, a.sweep_limit) == ([1, 2, 3, 4, 5], 10000)
    ann, snn = train_config(a, "ann_"), train_config(a, "snn_", snn=True)
    assert (ann.crop_padding, ann.flip, snn.crop_padding, snn.flip) == (2, True, 2, True)
    assert (ann.lr, ann.optimizer, snn.lr, snn.optimizer) == (ANN_TRAIN.lr, "sgd", 1e-4, "adam")
    assert snn.spike_penalty == SNN_TRAIN.spike_penalty and snn.neuron_lr == SNN_TRAIN.neuron_lr
    assert conversion_config(a).scale == 0.7
    assert conversion_config(parse("run", "--scale", "auto")).scale == CLI_SCALE
    b = parse("run", "--preset", "fmnist-best", "--no-flip", "--crop-padding", "0", "-T", "2",
              "--arch", "vgg_small", "--sweep-limit", "500")
    assert (b.flip, b.crop_padding, b.timesteps, b.arch, b.sweep_limit) == (False, 0, 2, "vgg_small", 500)
    t = parse("train-ann", "--preset", "fmnist-best")
    assert (t.epochs, t.crop_padding, t.flip, t.arch) == (p["ann"]["epochs"], 2, True, p["arch"])
    c = parse("convert", "ck", "--preset", "fmnist-best")
    assert (c.timesteps, c.dataset) == (3, "fashion-mnist") and not hasattr(c, "crop_padding")
    assert main(["run", "--preset", "fmnist-best", "--out", "never-written"],
                validate_only=True) == 0
