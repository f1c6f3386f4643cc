"""The ``cnncc`` command line, called in-process through ``cnncc.cli.main`` and once as the installed script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnncc.cli import main

USER_MODEL = '''
import cnncc.frontend as nn

def model():
    return nn.Sequential([nn.Conv2d(3, 3, name="c"), nn.Flatten(), nn.Linear(4, name="fc")],
                         input_shape=(1, 5, 5), name="user_net")
'''


def test_show_zoo_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "61,706" in out and "graph lenet5(%input: 1x1x32x32:f32,NCHW)" in out


def test_run_compiles_and_writes_the_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cnncc.frontend.models import lenet
    from cnncc.testing import TOL_F32_MODEL, rel_error

    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", "lenet", "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]) == 0
    assert rel_error(np.load(tmp_path / "y.npy"), lenet()(x)) <= TOL_F32_MODEL
    out = capsys.readouterr().out
    assert "top classes" in out and "compiled for" in out
    assert main(["run", "lenet", "--interpret", "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "z.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "z.npy"), lenet()(x))
    assert "reference interpreter" in capsys.readouterr().out


def test_user_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "net.py"
    path.write_text(USER_MODEL)
    assert main(["run", str(path), "--batch", "2"]) == 0
    assert "user_net: input (2, 1, 5, 5)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["show", "resnet19"], "cnncc: error: unknown zoo model 'resnet19'; the zoo has lenet5, lenet, keras_mnist, "
                           "keras_sequential, alexnet, vgg11, vgg16, googlenet, resnet18, resnet50, mobilenet_v2; "
                           "did you mean 'resnet18'?"),
    (["show", "missing/net.py"], "cnncc: error: model file 'missing/net.py' does not exist"),
])
def test_errors_are_clear_and_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == message


def test_model_file_without_model_function(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.py").write_text("x = 1\n")
    assert main(["show", str(tmp_path / "empty.py")]) == 2
    want = f"cnncc: error: model file '{tmp_path / 'empty.py'}' has no model() function"
    assert capsys.readouterr().err.strip() == want


def test_wrong_input_shape_and_nan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 30, 30), np.float32))
    assert main(["run", "lenet", "--input", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"cnncc: error: input file '{tmp_path / 'x.npy'}' holds shape (2, 1, 30, 30); model 'lenet' "
                   "expects (batch, 1, 28, 28)")
    bad = np.zeros((1, 1, 28, 28), np.float32)
    bad[0, 0, 3, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    assert main(["run", "lenet", "--input", str(tmp_path / "nan.npy")]) == 2
    assert capsys.readouterr().err.strip() == "cnncc: error: input holds 1 NaN/Inf values"


def test_installed_console_script() -> None:
    beside = Path(sys.executable).parent / "cnncc"
    exe = str(beside) if beside.exists() else shutil.which("cnncc")
    if exe is None:
        pytest.fail("the cnncc console script is not installed (pip install -e '.[test]')")
    done = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "compiler for convolutional neural networks" in done.stdout


def test_opt_prints_passes_and_ir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["opt", "resnet18", "--dump-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "// fold-batchnorm: folded 20 batch norms" in out and "fused_conv2d" in out
    assert "// 69 nodes -> 24 nodes" in out
    dumps = sorted(p.name for p in tmp_path.iterdir())
    assert dumps[0] == "00-input.txt" and any(n.endswith("fuse-epilogue.txt") for n in dumps)
    assert main(["opt", "lenet5", "-p", "fuse-epilogue", "--print-after", "fuse-epilogue"]) == 0
    out = capsys.readouterr().out
    assert out.count("// ----- IR after fuse-epilogue -----") == 1 and "fused_linear[epilogue=(relu)]" in out


def test_opt_unknown_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["opt", "lenet5", "-p", "nope"]) == 2
    assert capsys.readouterr().err.strip() == ("cnncc: error: unknown pass(es) ['nope']; passes are dce, "
                                               "remove-identities, fold-reshapes, cse, constant-folding, "
                                               "fold-batchnorm, fuse-epilogue")


def test_one_table_of_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """Every command of ``cnncc.cli.COMMANDS`` is a module with ``add_parser`` and ``run``, ``cnncc --help`` lists
    them in the table's order, and building the parser loads no compiler module (the modules import inside run)."""
    import subprocess

    from cnncc.cli import COMMANDS, command

    for name in COMMANDS:
        assert callable(command(name).add_parser) and callable(command(name).run), name
    with pytest.raises(SystemExit):
        main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    listed = [line.split()[0] for line in lines if line.startswith("    ") and not line.startswith("     ")]
    assert listed == list(COMMANDS)
    code = ("import sys, cnncc.cli; cnncc.cli._parser(); "
            "print([m for m in sys.modules if m.startswith(('llvmlite', 'rich', 'matplotlib', 'cnncc.codegen'))])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
