"""The package's shape: imports point one way, modules stay small, `import dietsnn` does not load
the command line, and the Python API and the CLI share every default."""

import ast
import dataclasses
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import dietsnn
from dietsnn import analysis, config, conversion, pipeline
from dietsnn.analysis.ablation import AblationConfig
from dietsnn.cli import build_parser
from dietsnn.cli.options import conversion_config, train_config
from dietsnn.models import build_ann

ROOT = Path(dietsnn.__file__).parent
MODULES = {m.name: Path(m.module_finder.path) / (m.name.rpartition(".")[2])
           for m in pkgutil.walk_packages([str(ROOT)], "dietsnn.")}


def _source(name: str) -> Path:
    p = MODULES[name] if name != "dietsnn" else ROOT
    return p / "__init__.py" if p.is_dir() else p.with_suffix(".py")


def _is_package(name: str) -> bool:
    return _source(name).name == "__init__.py"


def import_graph() -> dict[str, set[str]]:
    """Module -> the dietsnn modules it imports (module level and inside functions)."""
    names = set(MODULES) | {"dietsnn"}
    graph: dict[str, set[str]] = {}
    for name in names:
        base = name if _is_package(name) else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(_source(name).read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = base.split(".")
                    pkg = ".".join(parts[: len(parts) - node.level + 1])
                    pkg = f"{pkg}.{node.module}" if node.module else pkg
                else:
                    pkg = node.module or ""
                if pkg not in names:
                    continue
                for a in node.names:  # `from pkg import submodule` depends on the submodule
                    deps.add(f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in names else pkg)
        graph[name] = deps - {name}
    return graph


def test_import_graph_has_no_cycles():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(n, path):
        state[n] = 1
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cycles.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, cycles


def test_the_graph_sees_real_imports():  # the checker itself must find edges to judge them
    graph = import_graph()
    assert "dietsnn.functional.ops" in graph["dietsnn.layers"]
    assert "dietsnn.data.catalog" in graph["dietsnn.data.cifar"]
    assert "dietsnn.evaluation" in graph["dietsnn.analysis.spikes"]


def test_library_never_imports_the_cli():
    graph = import_graph()
    offenders = {n for n, deps in graph.items()
                 if not n.startswith(("dietsnn.cli", "dietsnn.__main__"))
                 and any(d.startswith("dietsnn.cli") for d in deps)}
    assert not offenders


def test_no_module_is_over_400_lines():
    long = {n: len(_source(n).read_text().splitlines()) for n in MODULES}
    kernels = sorted(_source("dietsnn").parent.rglob("*.[ch]"))  # the C kernels' sources too
    assert kernels
    long |= {p.name: len(p.read_text().splitlines()) for p in kernels}
    assert {n: k for n, k in long.items() if k > 400} == {}


@pytest.mark.subprocess
@pytest.mark.parametrize("prefix", ["dietsnn.cli", "torch._dynamo"])
def test_import_dietsnn_does_not_load(prefix):
    """Neither the CLI nor torch's compiler (a second and 140 MB more) load with the library's
    API."""
    code = ("import sys, dietsnn; [getattr(dietsnn, n) for n in dietsnn.__all__]; "
            f"print(sorted(m for m in sys.modules if m.startswith('{prefix}')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.subprocess
def test_import_dietsnn_alone_loads_no_torch():
    """The API loads on first use, so the command line can set up its process first."""
    code = ("import sys, dietsnn; print('torch' in sys.modules, dietsnn.__version__); "
            "dietsnn.LIF; print('torch' in sys.modules, set(dir(dietsnn)) >= "
            "set(dietsnn.__all__), dietsnn.ann_to_snn is dietsnn.convert)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == [f"False {dietsnn.__version__}", "True True True"]
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        dietsnn.no_such_name  # noqa: B018


def test_the_lazy_api_and_the_type_checkers_names_agree():
    """`dietsnn._API` (what `__getattr__` imports), the TYPE_CHECKING imports and `__all__` (the
    literal that linters read) name the same things, from the same modules."""
    tree = ast.parse(_source("dietsnn").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If)
                 and getattr(n.test, "id", None) == "TYPE_CHECKING")
    typed = {a.name: node.module for node in block.body if isinstance(node, ast.ImportFrom)
             for a in node.names}
    assert typed == dietsnn._API
    assert {t.id for node in block.body if isinstance(node, ast.Assign)
            for t in node.targets} == set(dietsnn._ALIASES)
    assert set(dietsnn.__all__) == {*dietsnn._API, *dietsnn._ALIASES, "__version__"}


def _default(fn, name):
    return inspect.signature(fn).parameters[name].default


def test_cli_and_api_share_every_default():
    parser = build_parser()
    run = parser.parse_args(["run"])
    assert train_config(run, "ann_") == dataclasses.replace(config.ANN_TRAIN)
    assert train_config(run, "snn_", snn=True) == dataclasses.replace(config.SNN_TRAIN)
    assert conversion_config(run) == config.ConversionConfig(scale=config.CLI_SCALE)
    no_val = parser.parse_args(["run", "--val-size", "0"])
    assert conversion_config(no_val) == config.ConversionConfig()
    assert run.dropout == config.DROPOUT == _default(build_ann, "dropout")
    assert _default(pipeline.train_ann, "dropout") == config.DROPOUT
    assert run.arch == config.ARCH and run.dataset == config.DATASET
    assert run.val_size == config.VAL_SIZE
    d = config.ConversionConfig()
    for fn_arg, field in (("percentile", "percentile"), ("scale", "scale"),
                          ("timesteps", "calib_timesteps")):
        assert _default(conversion.calibrate_thresholds, fn_arg) == getattr(d, field)
    for arg in ("gamma", "surrogate", "leak"):
        assert _default(conversion.convert, arg) == getattr(d, arg)
    for cmd in ("train-snn", "train-ann", "convert"):
        extra = {"train-snn": ["x"], "convert": ["x"]}.get(cmd, [])
        a = parser.parse_args([cmd, *extra])
        if cmd == "train-snn":
            assert train_config(a, snn=True) == config.SNN_TRAIN
        elif cmd == "train-ann":
            assert train_config(a) == config.ANN_TRAIN
        else:
            assert conversion_config(a) == dataclasses.replace(d, scale=config.CLI_SCALE)
    abl = parser.parse_args(["ablation", "x"])
    ad = AblationConfig()
    assert (abl.timesteps, abl.rate_timesteps, abl.seeds) == (
        list(ad.timesteps), list(ad.rate_timesteps), list(ad.seeds))
    assert (abl.snn_epochs, abl.snn_lr, abl.neuron_lr, abl.batch_size, abl.train_subset) == (
        ad.epochs, ad.lr, ad.neuron_lr, ad.batch_size, ad.train_subset)
    ev = parser.parse_args(["evaluate", "x"])
    assert ev.batch_size == config.EVAL_BATCH == _default(analysis.spike_rates, "batch_size")


def test_library_prints_nothing_itself():
    """Outside the command line, messages go through the "dietsnn" logger (dietsnn.logs)."""
    prints = []
    for name in MODULES:
        if name.startswith("dietsnn.cli"):
            continue
        for node in ast.walk(ast.parse(_source(name).read_text())):
            if isinstance(node, ast.Name) and node.id == "print":
                prints.append(f"{name}:{node.lineno}")
    assert not prints, prints


def test_export_cli_and_api_share_defaults():
    from dietsnn.export import export_nir, to_nir

    args = build_parser().parse_args(["export", "run", "out.nir"])
    for fn in (to_nir, export_nir):
        assert (_default(fn, "dt"), _default(fn, "nonleaky"), _default(fn, "pooling")) == (
            args.dt, args.nonleaky, args.pooling) == (config.NIR_DT, config.NIR_NONLEAKY,
                                                      config.NIR_POOLING)
        assert _default(fn, "integrator") is args.integrator is False


def test_readme_links_are_absolute():
    """README.md is the package's page on PyPI, where relative links lead nowhere."""
    import re

    readme = (ROOT.parents[1] / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme) + re.findall(r'src="([^"]+)"', readme)
    assert links and all(re.match(r"https?://|#", u) for u in links), [
        u for u in links if not re.match(r"https?://|#", u)]


@pytest.mark.slow
@pytest.mark.subprocess
def test_wheel_ships_py_typed_and_license_and_no_tests(tmp_path):
    """Built offline with the environment's setuptools, from a copy of the tracked tree."""
    import shutil
    import zipfile
    from importlib.metadata import version

    from dietsnn.functional import native

    pytest.importorskip("setuptools")
    if int(version("setuptools").split(".")[0]) < 77:  # the `license = "MIT"` form
        pytest.skip("setuptools >= 77 needed (the test extra installs it)")
    root = ROOT.parents[1]
    src = tmp_path / "src-tree"
    shutil.copytree(root, src, ignore=shutil.ignore_patterns(".git", ".venv*", "runs", "build",
                                                             "*.egg-info", "__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", str(src), "-w", str(tmp_path / "whl")],
                       capture_output=True, text=True, timeout=300)
    if r.returncode and "No module named pip" in r.stderr:
        pytest.skip("no pip in this environment")
    assert r.returncode == 0, r.stderr[-2000:]
    names = zipfile.ZipFile(next((tmp_path / "whl").glob("dietsnn-*.whl"))).namelist()
    assert "dietsnn/py.typed" in names
    # every file of the package, the native kernels' C sources included (they build from them)
    shipped = {"dietsnn/" + f.relative_to(src / "src" / "dietsnn").as_posix()
               for f in (src / "src" / "dietsnn").rglob("*")
               if f.is_file() and "__pycache__" not in f.parts}
    assert {f"dietsnn/functional/{f.name}" for f in (*native.SOURCES, *native.HEADERS)} <= shipped
    assert shipped - set(names) == set()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [n for n in names if n.split("/")[0] in ("tests", "docs", "benchmarks")]
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(next((tmp_path / "whl").glob("dietsnn-*.whl"))).read(meta).decode()
    assert "License-Expression: MIT" in text and "Project-URL: Repository, https://github.com/" in text
