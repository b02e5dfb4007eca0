"""Option groups and validators shared by every subcommand, and the step from parsed options to
library objects (configs, data). Defaults come from `dietsnn.config`."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import fields
from pathlib import Path

import torch

from .. import checkpoint as ckpt
from .. import config, data, logs, runtime
from ..config import ConversionConfig, TrainConfig
from ..errors import UserError
from ..functional.surrogate import SURROGATES
from ..pipeline import Context
from ..rundir import RunDir

# -- validators: each returns an argparse type that explains a bad value in one line ----------


MAX_SEED = 2**32 - 1  # every generator dietsnn seeds (torch, numpy) takes it
MAX_THREADS = 4096
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def int_in(name: str, lo: int, hi: int) -> Callable[[str], int]:
    """An integer in [lo, hi]: every integer option has an upper bound (`config.MAX_*`)."""
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {s!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{name} must be >= {lo}, got {v}")
        if v > hi:
            raise argparse.ArgumentTypeError(f"{name} must be <= {hi}, got {v}")
        return v
    return parse


def positive_int(name: str, maximum: int) -> Callable[[str], int]:
    return int_in(name, 1, maximum)


def float_in(name: str, lo: float, hi: float, lo_open: bool = True,
             hi_open: bool = False) -> Callable[[str], float]:
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {s!r}") from None
        if not math.isfinite(v) or abs(v) > FLOAT32_MAX:  # torch applies it as float32
            raise argparse.ArgumentTypeError(f"{name} must be a finite number below "
                                             f"{FLOAT32_MAX:.3g}, got {s!r}")
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        if not ok:
            a, b = "(" if lo_open else "[", ")" if hi_open else "]"
            raise argparse.ArgumentTypeError(f"{name} must be in {a}{lo}, {hi}{b}, got {v}")
        return v
    return parse


def positive_float(name: str) -> Callable[[str], float]:
    return float_in(name, 0, float("inf"))


def scale_option(s: str) -> float | str:
    """--scale: a number > 0 or "auto"."""
    return "auto" if s == "auto" else positive_float("--scale")(s)


def int_list(name: str, maximum: int, minimum: int = 1,
             allow_empty: bool = False) -> Callable[[str], list[int]]:
    def parse(s: str) -> list[int]:
        try:
            vs = [int(v) for v in s.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} takes integers like 1,2,5, got {s!r}") from None
        if not vs and allow_empty:
            return vs
        if not vs or min(vs) < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be integers >= {minimum}, got {s!r}")
        if max(vs) > maximum:
            raise argparse.ArgumentTypeError(f"{name} must be integers <= {maximum}, got {s!r}")
        return vs
    return parse


def float_list(name: str, zero: bool = False) -> Callable[[str], list[float]]:
    """Comma-separated numbers > 0 (`zero`: >= 0)."""
    def parse(s: str) -> list[float]:
        try:
            vs = [float(v) for v in s.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} takes numbers like 0.3,0.5, got {s!r}") from None
        low = min(vs, default=0.0)
        if (not vs or low < 0 or (low == 0 and not zero)
                or not all(math.isfinite(v) and v <= FLOAT32_MAX for v in vs)):
            raise argparse.ArgumentTypeError(
                f"{name} must be numbers {'>=' if zero else '>'} 0, got {s!r}")
        return vs
    return parse


# -- option groups -------------------------------------------------------------------------------


def common(p: argparse.ArgumentParser, out_default: str | None = "runs/dietsnn") -> None:
    g = p.add_argument_group("data and run")
    g.add_argument("--dataset", default=config.DATASET, choices=sorted(data.DATASETS))
    g.add_argument("--data-dir", default=None,
                   help="folder with the dataset files (default: $DIETSNN_DATA, then "
                        "/usr/share/datasets/NAME, then the download cache)")
    g.add_argument("--limit-train", type=positive_int("--limit-train", config.MAX_SAMPLES),
                   default=None,
                   metavar="N", help="use the first N training samples (smoke runs; default: all)")
    g.add_argument("--limit-test", type=positive_int("--limit-test", config.MAX_SAMPLES),
                   default=None, metavar="N",
                   help="use the first N test samples (default: all)")
    g.add_argument("--val-size", type=int_in("--val-size", 0, config.MAX_SAMPLES),
                   default=config.VAL_SIZE,
                   help="validation samples carved from the training set (checkpoints are "
                        "chosen on them; 0: no validation, the last epoch is kept)")
    g.add_argument("--seed", type=int_in("--seed", 0, MAX_SEED), default=TrainConfig.seed)
    g.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    g.add_argument("--threads", type=positive_int("--threads", MAX_THREADS), default=None,
                   help="CPU threads for torch (default: all cores)")
    g.add_argument("--quiet", action="store_true",
                   help="no progress bars, only warnings of the log (the `dietsnn` logger)")
    g.add_argument("-v", "--verbose", action="store_true",
                   help="log details too (DEBUG), e.g. the calibrated thresholds")
    engine_opt(g)
    if out_default is not None:
        g.add_argument("--out", default=out_default, help="run directory to write")
        g.add_argument("--overwrite", action="store_true",
                       help="replace the dietsnn run in --out (its files are removed once the "
                            "inputs are validated)")


def engine_opt(g) -> None:
    g.add_argument("--engine", choices=config.ENGINES, default=config.ENGINE,
                   help="how the neurons run: native (dietsnn's C kernels, float32 on the CPU), "
                        "eager (plain PyTorch ops), compile (the PyTorch loops through "
                        "torch.compile); auto: native on the CPU where a C compiler is found, "
                        "else eager (default: %(default)s)")
    g.add_argument("--no-compile", dest="engine", action="store_const", const="eager",
                   help="deprecated: the same as --engine eager (default: off)")


def snn_opts(p: argparse.ArgumentParser) -> None:
    d = ConversionConfig()
    g = p.add_argument_group("spiking network")
    g.add_argument("--timesteps", "-T", type=positive_int("--timesteps", config.MAX_TIMESTEPS),
                   default=d.timesteps)
    g.add_argument("--encoding", choices=config.ENCODINGS, default=d.encoding)
    g.add_argument("--percentile", type=float_in("--percentile", 1, 100), default=d.percentile,
                   help="in percent")
    g.add_argument("--scale", type=scale_option, default=None,
                   help="threshold scaling factor after calibration, or auto: the one of "
                        f"{', '.join(map(str, config.SCALES))} with the best converted accuracy "
                        f"on the validation split (default: {config.CLI_SCALE} where there is a "
                        f"validation split, else {d.scale})")
    g.add_argument("--units", choices=config.UNITS, default=d.units,
                   help="units of a model's biases, residual and output gains: from the "
                        "thresholds after --scale (scaled) or before (calibrated); auto: chosen "
                        "on validation with --scale auto, else scaled")
    g.add_argument("--leak", type=float_in("--leak", 0, 1), default=d.leak,
                   help="initial membrane leak of every layer (1 = IF, as converted)")
    g.add_argument("--calib-size", type=positive_int("--calib-size", config.MAX_SAMPLES),
                   default=d.calib_size)
    g.add_argument("--calib-timesteps",
                   type=positive_int("--calib-timesteps", config.MAX_TIMESTEPS),
                   default=d.calib_timesteps)
    g.add_argument("--surrogate", default=d.surrogate, choices=sorted(SURROGATES))
    g.add_argument("--gamma", type=positive_float("--gamma"), default=d.gamma,
                   help="surrogate damping factor")


def train_opts(p: argparse.ArgumentParser, d: TrainConfig, prefix: str = "",
               snn: bool = False) -> None:
    """Options of one training phase, defaults from `d` (`config.ANN_TRAIN` or `SNN_TRAIN`)."""
    g = p.add_argument_group(f"{prefix or 'training'}".strip())
    pre = f"--{prefix}-" if prefix else "--"
    dest = f"{prefix}_" if prefix else ""
    g.add_argument(f"{pre}epochs", dest=f"{dest}epochs", type=positive_int(f"{pre}epochs", config.MAX_EPOCHS),
                   default=d.epochs)
    g.add_argument(f"{pre}lr", dest=f"{dest}lr", type=positive_float(f"{pre}lr"), default=d.lr)
    g.add_argument(f"{pre}batch-size", dest=f"{dest}batch_size",
                   type=positive_int(f"{pre}batch-size", config.MAX_BATCH), default=d.batch_size)
    g.add_argument(f"{pre}optimizer", dest=f"{dest}optimizer", choices=config.OPTIMIZERS,
                   default=d.optimizer)
    g.add_argument(f"{pre}weight-decay", dest=f"{dest}weight_decay",
                   type=float_in(f"{pre}weight-decay", 0, math.inf, lo_open=False),
                   default=d.weight_decay)
    g.add_argument(f"{pre}schedule", dest=f"{dest}schedule", choices=config.SCHEDULES,
                   default=d.schedule)
    g.add_argument("--precision" if snn else f"{pre}precision", choices=config.PRECISIONS,
                   dest="precision" if snn else f"{dest}precision", default=d.precision,
                   help="auto: bf16 autocast on a CPU with native bf16 (AVX512-BF16 or AMX), "
                   "else fp32")
    if snn:
        g.add_argument(f"{pre}neuron-lr", dest=f"{dest}neuron_lr",
                       type=positive_float(f"{pre}neuron-lr"), default=d.neuron_lr,
                       help="learning rate of the leaks and thresholds (unset: the weights' lr)")
        g.add_argument("--amsgrad", action="store_true", default=d.amsgrad,
                       help="Adam's AMSGrad variant (the authors' SNN optimiser)")
        g.add_argument("--spike-penalty", type=float_in("--spike-penalty", 0, 1e6, lo_open=False),
                       default=d.spike_penalty, metavar="W",
                       help="weight of the compute-energy term of the loss (cross-entropy + W x "
                       "SNN/ANN energy; docs/METHOD.md section 8.1)")
        g.add_argument("--no-train-leak", dest="train_leak", action="store_false",
                       help="keep leaks fixed")
        g.add_argument("--no-train-threshold", dest="train_threshold", action="store_false",
                       help="keep thresholds fixed")


class _ShowDefaults(argparse.HelpFormatter):
    """Every option's default in --help, except flags ("off"), options whose help names
    their default and options whose default is None (their help says what that means)."""

    def _format_action(self, action: argparse.Action) -> str:
        flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if action.help is None and action.option_strings and not flag:
            action.help = "default: %(default)s"  # argparse shows nothing without a help text
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        h = action.help or ""
        flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if action.option_strings and not flag and action.default not in (argparse.SUPPRESS, None) \
                and "default" not in h:
            h += " (default: %(default)s)"
        return h


def log_level(args: argparse.Namespace) -> int:
    """WARNING with --quiet, DEBUG with --verbose, else INFO."""
    if getattr(args, "quiet", False):
        return logging.WARNING
    return logging.DEBUG if getattr(args, "verbose", False) else logging.INFO


class _Console(logging.StreamHandler):
    """Lines below WARNING to stdout, the others to stderr with a "warning:" prefix; the stream
    is looked up at each line (sys.stdout may be replaced after the handler is made)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property  # type: ignore[override]
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property decides
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING:
            return super().emit(record)
        print(f"warning: {self.format(record)}", file=sys.stderr, flush=True)


@contextmanager
def console_logging(args: argparse.Namespace) -> Iterator[None]:
    """The `dietsnn` logger on the console at `log_level(args)` for the block; restored after."""
    logger, handler = logs.logger, _Console()
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(log_level(args))
    logger.propagate = False  # the console handler is the one place the lines go
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


class Parser(argparse.ArgumentParser):
    """Option mistakes as one line (no usage dump), exit code 2; defaults shown in --help."""

    def __init__(self, *a, **k) -> None:
        k.setdefault("formatter_class", _ShowDefaults)
        super().__init__(*a, **k)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- from options to library objects -------------------------------------------------------------


TEST_ONLY = ("evaluate", "energy", "sweep")  # commands that read only the test split


def val_size(args: argparse.Namespace) -> int:
    """The validation split the command carves: --val-size, none for commands that only test."""
    return 0 if args.command in TEST_ONLY else args.val_size


def setup(args: argparse.Namespace) -> Context:
    """Threads, device check and the dataset's splits, as a pipeline Context."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device != "cpu" and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: no CUDA device here; use --device cpu")
    logs.logger.setLevel(log_level(args))  # a command may have turned --quiet on (--json)
    logs.info(f"loading {args.dataset}")
    drawn = args.calib_size if args.command == "convert" else 0  # reads no other train image
    splits = data.load(args.dataset, args.data_dir, val_size(args), args.seed, args.limit_train,
                       args.limit_test, drawn, train=args.command not in TEST_ONLY)
    return Context(splits, args.device, not args.quiet and sys.stderr.isatty(), logs.info)


def train_config(args: argparse.Namespace, prefix: str = "", snn: bool = False) -> TrainConfig:
    """The TrainConfig of the options with `prefix` (e.g. "ann_"); only SNN phases read the
    neuron options."""
    values = {f.name: getattr(args, f"{prefix}{f.name}") for f in fields(TrainConfig)
              if hasattr(args, f"{prefix}{f.name}")}
    values.update(seed=args.seed, **{k: getattr(args, k) for k in config.AUGMENT_KEYS if hasattr(args, k)})
    if snn:  # unprefixed options of the SNN phase (an ANN parser has none of them)
        values.update({k: getattr(args, k) for k in ("train_leak", "train_threshold", "precision",
                                                     "amsgrad", "spike_penalty")})
    return TrainConfig(**values)


def conversion_config(args: argparse.Namespace) -> ConversionConfig:
    values = {f.name: getattr(args, f.name) for f in fields(ConversionConfig)}
    if values["scale"] is None:  # not given: auto where the command has a validation split
        values["scale"] = config.CLI_SCALE if val_size(args) else ConversionConfig.scale
    return ConversionConfig(**values)


def engine_scope(args: argparse.Namespace) -> AbstractContextManager:
    """The command runs inside `runtime.use_engine(--engine)` (commands without the option: the
    default engine)."""
    return runtime.use_engine(getattr(args, "engine", None))


def run_config(args: argparse.Namespace) -> dict:
    """What config.json records: every option of the command."""
    return {k: v for k, v in vars(args).items() if k != "func"}


STEP_FILES = (ckpt.MODEL_FILE, ckpt.STATE_FILE, "history.json", "metrics.json")
REPORT_FILES = ("metrics.json", "report.md", "training.png", "sweep.png", "layers.png",
                "energy.png")
# what each command writes into its --out besides config.json and the run marker (checked
# before any work by RunDir: each must be absent or a regular file)
OUTPUTS: dict[str, tuple[str, ...]] = {
    "train-ann": STEP_FILES,
    "train-snn": STEP_FILES,
    "convert": (ckpt.MODEL_FILE, "metrics.json"),
    "run": (*(f"{d}/{f}" for d in ("ann", "snn") for f in STEP_FILES),
            f"converted/{ckpt.MODEL_FILE}", "converted/metrics.json", *REPORT_FILES),
}


def open_out(args: argparse.Namespace, inputs: tuple = (),
             outputs: Iterable[str] | None = None) -> RunDir:
    """The command's --out as a `RunDir`: refused if it would replace earlier work or if one of
    its outputs is not a regular file, locked while the command runs. The data folder counts as
    an input."""
    return RunDir(args.out, args.command, resume=getattr(args, "resume", False),
                  overwrite=args.overwrite, inputs=(*inputs, args.data_dir),
                  outputs=OUTPUTS.get(args.command, ()) if outputs is None else outputs)


def check_resumable(folder: Path, done_if: str | None = None) -> None:
    """On --resume, read the folder's training state now, so that a damaged one is refused
    before anything is written. A folder that holds a model, history or metrics but no
    usable state.pt is refused too: training would start again and replace them. `done_if`:
    a file whose presence means the step is finished and is reused (`run`'s ANN step)."""
    state = folder / ckpt.STATE_FILE
    if done_if and (folder / done_if).is_file():
        return
    if os.path.lexists(state) or any(os.path.lexists(folder / f) for f in STEP_FILES):
        ckpt.load_state(state)


def metrics_file(model_arg: str) -> Path | None:
    """The metrics.json beside a run directory or checkpoint argument, if any (whatever it is:
    a folder there is refused later as an output that is not a regular file)."""
    p = Path(model_arg)
    for cand in (p / "metrics.json", p.parent / "metrics.json"):
        if os.path.lexists(cand):
            return cand
    return None
