"""Every default of dietsnn, defined once. The library's functions and the command line read
them from here, so `dietsnn run` and the same call through the Python API give the same result."""

from __future__ import annotations

from dataclasses import dataclass

DATASET = "fashion-mnist"
ARCH = "vgg_small"
DROPOUT = 0.1  # after every ReLU/LIF (the paper used 0.2 on CIFAR/ImageNet)
GAMMA = 0.3  # surrogate damping (docs/METHOD.md section 2)
SURROGATE = "linear"
VAL_SIZE = 5000  # validation images carved from the training set
EVAL_BATCH = 256
# the latency sweep of `dietsnn run`'s report: T values, and the test images it runs on
SWEEP_TIMESTEPS = (1, 2, 3, 4, 5, 6, 8, 10)
SWEEP_LIMIT = 2000
# an epoch whose mean training loss exceeds this many times chance level (ln of the number of
# classes) has diverged: far above where training started, and the model no longer learns
DIVERGED_LOSS_FACTOR = 100.0
# what max pooling becomes when converting a custom model: "spiking" (the max of spike trains,
# docs/CONVERSION.md) or "avg" (average pooling, with a warning); measured in CONVERSION.md
MAXPOOL = "spiking"

# bounds of every integer option and argument (far beyond any real use: a larger value is a
# mistake, refused before any work by the command line and the Python API alike)
MAX_TIMESTEPS = 100_000
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 20
MAX_SAMPLES = 1 << 31  # counts of images: --limit-train, --val-size, --calib-size, ...
MAX_CROP_PADDING = 64  # --crop-padding, in pixels
# the options of the training augmentation, shared by the ANN and SNN phases of a command
AUGMENT_KEYS = ("augment", "crop_padding", "flip")

# the values an option takes, read by the library's checks and the command line's choices
ENCODINGS = ("direct", "rate")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "none")
# "auto": bf16 autocast (ANN and SNN training) on a CPU that computes bf16 natively (AVX512-BF16
# or AMX; docs/RESULTS.md sections 1.2 and 1.4 show the accuracy is the same), float32 otherwise;
# an SNN's neurons integrate in float32 either way, and test accuracies are measured in float32
PRECISIONS = ("auto", "fp32", "bf16")
MAXPOOL_MODES = ("spiking", "avg")
# how the neurons run (functional/engine.py): "native" (C kernels, float32 on the CPU),
# "eager" (plain PyTorch ops, any device and dtype), "compile" (the PyTorch loops through
# torch.compile); "auto": native on the CPU where the kernels build, eager elsewhere
ENGINES = ("auto", "native", "eager", "compile")
ENGINE = "auto"


@dataclass
class ConversionConfig:
    """ANN -> SNN conversion and threshold calibration (docs/METHOD.md section 7)."""

    timesteps: int = 3  # chosen on validation (docs/RESULTS.md section 2)
    encoding: str = "direct"  # direct | rate
    percentile: float = 99.7
    # thresholds x scale after calibration (chosen on validation for T); "auto": the one of
    # SCALES with the best validation accuracy of the converted SNN
    scale: float | str = 0.5
    # the units of biases, residual gains and the output gain of a model with biases or residual
    # adds (docs/CONVERSION.md, "Biases and scales"): "scaled", from the thresholds after the
    # scale; "calibrated", from those before it; "auto": with scale="auto", the pair of the best
    # validation accuracy, otherwise "scaled" (docs/RESULTS.md sections 1.6-1.7)
    units: str = "auto"
    calib_size: int = 512  # training images used for calibration
    calib_timesteps: int = 25  # 100 in the authors' code: the same accuracy (docs/RESULTS.md 2.5)
    gamma: float = GAMMA
    surrogate: str = SURROGATE
    leak: float = 1.0  # initial leak of every layer (1 = IF)


UNITS = ("auto", "scaled", "calibrated")

# the threshold scales that scale="auto" (and the ablation, for each T) chooses from on validation
SCALES = (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


@dataclass
class TrainConfig:
    """One training phase (ANN or SNN); the defaults are the ANN's, `SNN_TRAIN` the SNN's."""

    epochs: int = 10
    lr: float = 0.05
    optimizer: str = "sgd"  # sgd | adam
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | step | none
    batch_size: int = 128
    augment: bool = True  # as the dataset defines it (none on 28x28 sets), or as below
    # the training augmentation in place of the dataset's (data/catalog.py): random crop after
    # this much zero padding, random horizontal flip; None: the dataset's (28x28 sets: none)
    crop_padding: int | None = None
    flip: bool | None = None
    seed: int = 0
    train_leak: bool = True
    train_threshold: bool = True
    precision: str = "auto"  # auto | fp32 | bf16
    neuron_lr: float | None = None  # leaks and thresholds; None: the weights' lr
    amsgrad: bool = False  # Adam's AMSGrad variant (the authors' SNN optimiser)
    # weight of the compute-energy term of an SNN's loss: cross-entropy + spike_penalty x
    # (SNN energy / ANN energy), docs/METHOD.md section 8.1; 0 = cross-entropy alone
    spike_penalty: float = 0.0


# the command line's threshold scale where the command has a validation split: "auto", the one
# of SCALES with the best converted accuracy there (on the default run it picks 0.5, the
# library's default: docs/RESULTS.md section 1); without a split ConversionConfig.scale
CLI_SCALE = "auto"

ANN_TRAIN = TrainConfig()
# leaks and thresholds at their own lr: at the weights' 1e-4 Adam barely moves them
# (docs/METHOD.md section 7.3; the value chosen on validation in docs/RESULTS.md section 2)
# spike_penalty: the smallest of 0.01, 0.02, 0.03 whose DIET-SNN spikes less than the converted
# SNN on the validation split, with validation accuracy within 0.3 points of no penalty
# (docs/RESULTS.md section 1.1)
SNN_TRAIN = TrainConfig(epochs=1, lr=1e-4, optimizer="adam", weight_decay=0.0, batch_size=64,
                        neuron_lr=0.03, spike_penalty=0.02)

# NIR export (docs/NIR.md): the step written into the graph, in seconds. 1e-4 s is the step that
# snnTorch's importer assumes and SpikingJelly's defaults to; Norse's `from_nir(dt=...)` takes it.
NIR_DT = 1e-4
# how a layer with leak 1 is written: "lif" (nir.LIF whose one-step decay 1 - 2**-30 rounds to 1
# in float32: the same spikes, and the form every importer takes, snnTorch's included) or "if"
# (nir.IF, the form closest to the model)
NIR_NONLEAKY = "lif"
# how average pooling is written: "conv" (nir.Conv2d with fixed weights 1/k^2, which every
# importer takes, Norse's included) or "avg" (nir.AvgPool2d, the form closest to the model)
NIR_POOLING = "conv"
