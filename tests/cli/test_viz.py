"""``cnncc viz``: DOT, SVG and HTML pictures of a model's graph (cnncc/viz.py)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cnncc.api import optimize
from cnncc.cli import main
from cnncc.loader import load_model
from cnncc.viz import _clusters, build_view, pipeline_names, to_dot, to_html

HAVE_DOT = shutil.which("dot") is not None
NODE_DECL = re.compile(r"^\s*(\w+) \[", re.M)
EDGE = re.compile(r"^\s*(\w+) -> (\w+)", re.M)

USER_MODEL = '''
import cnncc.frontend as nn

def model():
    return nn.Sequential([nn.Conv2d(3, 3, name="block.c1"), nn.ReLU(name="block.act"), nn.Flatten(),
                          nn.Linear(4, name="fc")], input_shape=(1, 5, 5), name="user_net")
'''


def parse_dot(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Check the digraph's shape and return its declared nodes and edges."""
    assert text.startswith("digraph ") and text.rstrip().endswith("}")
    depth = 0
    for ch in text:
        depth += ch == "{"
        depth -= ch == "}"
        assert depth >= 0
    assert depth == 0
    nodes = [n for n in NODE_DECL.findall(text) if n not in ("graph", "node", "edge")]
    assert len(nodes) == len(set(nodes)), "a node is declared twice"
    edges = EDGE.findall(text)
    declared = set(nodes)
    for a, b in edges:
        assert a in declared and b in declared, (a, b)
    return nodes, edges


@pytest.fixture(scope="module")
def views() -> dict[tuple[str, str], tuple[object, object]]:
    """(model, after) -> (view, graph drawn), built once."""
    out = {}
    for name in ("lenet5", "resnet18"):
        model = load_model(name)
        graph, _, _ = optimize(model.graph(1), model.params)
        out[(name, "all")] = (build_view(model, "all"), graph)
    model = load_model("resnet18")
    out[("resnet18", "none")] = (build_view(model, "none"), model.graph(1))
    return out


@pytest.mark.parametrize("name", ["lenet5", "resnet18"])
def test_dot_is_a_digraph_with_every_node(name: str, views: dict) -> None:
    view, graph = views[(name, "all")]
    text = to_dot(view)
    nodes, edges = parse_dot(text)
    assert len(nodes) == len(graph.nodes) + len(graph.inputs) + len(graph.outputs)
    operands = sum(1 for n in graph.nodes for v in n.inputs if v.kind.value != "param")
    assert len(edges) == operands + len(graph.outputs)
    assert re.search(r"NCHW\d+c", text) and "direct" in text and re.search(r"arena [\d.]+ (B|KiB|MiB) @ [\d,]+", text)
    if HAVE_DOT:  # Graphviz's own parser accepts it
        done = subprocess.run(["dot", "-Tcanon"], input=text, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr


def test_resnet18_shows_fusion_clusters_and_memory(views: dict) -> None:
    view, graph = views[("resnet18", "all")]
    text = to_dot(view)
    assert len(graph.nodes) == 24
    assert "fused_conv2d + add + relu" in text and "fused_conv2d + relu" in text
    assert 'label="layer1"' in text and 'label="layer1.0"' in text and 'label="layer4.1"' in text
    assert text.count("subgraph cluster_") == 4 + 8  # layerN and layerN.k
    assert "style=dashed" in text  # residual operands of the epilogue adds
    assert view.arena_bytes and f"{view.arena_bytes:,} B" in text
    conv = next(n for n in view.nodes if n.layer == "layer1.0.conv2")  # a 3x3 64->64 layer: Winograd is chosen
    assert conv.algorithm.startswith("winograd") and conv.layout.startswith("NCHW") and conv.place == "arena"
    stem = next(n for n in view.nodes if n.layer == "conv1")  # 7x7 stride 2 on 3 channels: direct
    assert stem.algorithm == "direct"
    assert conv.offset >= 0 and conv.nbytes == 64 * 56 * 56 * 4


def test_after_none_differs_from_the_optimized_graph(views: dict) -> None:
    raw, graph = views[("resnet18", "none")]
    opt, _ = views[("resnet18", "all")]
    raw_text, opt_text = to_dot(raw), to_dot(opt)
    nodes, _ = parse_dot(raw_text)
    assert len(graph.nodes) == 69 and len(nodes) == 69 + 2
    assert "fused_conv2d" not in raw_text and "batch_norm" in raw_text and "the DSL graph" in raw_text
    assert "fused_conv2d" in opt_text and "batch_norm" not in opt_text
    assert raw.graph_nodes > opt.graph_nodes


def test_after_a_named_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g.dot"
    assert main(["viz", "resnet18", "--after", "fold-batchnorm", "-o", str(out)]) == 0
    text = out.read_text()
    assert "after fold-batchnorm" in text and "batch_norm" not in text
    assert " + add" not in text  # the epilogues come with fuse-epilogue, the next pass
    assert "wrote" in capsys.readouterr().out


def test_cli_prints_dot_without_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["viz", "lenet5", "--batch", "2"]) == 0
    text = capsys.readouterr().out
    parse_dot(text)
    assert "2×1×32×32" in text and "batch 2" in text


def test_user_model_file(tmp_path: Path) -> None:
    path = tmp_path / "net.py"
    path.write_text(USER_MODEL)
    out = tmp_path / "net.dot"
    assert main(["viz", str(path), "-o", str(out)]) == 0
    text = out.read_text()
    parse_dot(text)
    assert "conv2d + relu" in text and 'label="block"' not in text  # fused into one node: no cluster of one


def test_html_is_self_contained(tmp_path: Path, views: dict) -> None:
    out = tmp_path / "g.html"
    assert main(["viz", "resnet18", "-o", str(out)]) == 0
    page = out.read_text()
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    assert "<h1>resnet18</h1>" in page and "24 nodes" in page and "--after all" in page
    assert f"{views[('resnet18', 'all')][0].arena_bytes:,} bytes" in page
    assert ("<svg" in page) == HAVE_DOT
    assert "<table>" in page and "layer1.0.conv2" in page


def test_html_without_graphviz_is_a_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    out = tmp_path / "g.html"
    assert main(["viz", "lenet5", "-o", str(out)]) == 0
    page = out.read_text()
    assert "<svg" not in page and "Graphviz" in page and "<td><b>conv1</b></td>" in page
    assert "http://" not in page and "https://" not in page


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz `dot` is not installed")
def test_svg(tmp_path: Path) -> None:
    out = tmp_path / "r.svg"
    assert main(["viz", "resnet18", "-o", str(out)]) == 0
    svg = out.read_text()
    assert "<svg" in svg and "layer1.0.conv2" in svg and "fused_conv2d + add + relu" in svg


def test_svg_without_graphviz_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    out = tmp_path / "r.svg"
    assert main(["viz", "lenet5", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnncc: error:") and "Graphviz" in err and "`graphviz`" in err
    assert ".dot" in err and ".html" in err and not out.exists()


def test_unknown_pass_lists_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["viz", "lenet5", "--after", "fuse-everything"]) == 2
    err = capsys.readouterr().err
    assert "unknown pass 'fuse-everything'" in err
    for name in ("none", *pipeline_names(), "all"):
        assert name in err


def test_unknown_extension(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g.png"
    assert main(["viz", "lenet5", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "g.png" in err and ".dot" in err and ".svg" in err and ".html" in err and not out.exists()


def test_clusters_nest_at_most_two_levels() -> None:
    layers = {"a": "features.1.conv.0.0", "b": "features.1.conv.0.1", "c": "features.1.conv.1",
              "d": "features.2.conv.0", "e": "features.2.conv.1", "f": "stem", "g": "head.fc"}
    roots = _clusters(layers)
    assert [c.prefix for c in roots] == ["features"]
    assert [c.prefix for c in roots[0].children] == ["features.1", "features.2"]
    assert roots[0].children[0].nodes == ["a", "b", "c"] and not roots[0].children[0].children


def test_html_escapes_names(views: dict) -> None:
    view = copy.deepcopy(views[("lenet5", "all")][0])
    view.nodes[1].layer = "<b>&evil"
    page = to_html(view)
    assert "&lt;b&gt;&amp;evil" in page and "<b>&evil" not in page
    assert "&lt;b&gt;&amp;evil" in to_dot(view)


def test_core_import_loads_no_backend() -> None:
    code = "import sys, cnncc.viz; print([m for m in sys.modules if m.startswith(('cnncc.codegen', 'llvmlite'))])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_a_graph_without_cpu_lowering_still_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    import cnncc.viz as viz
    from cnncc.errors import CnnccError

    def no_lowering(graph: object, params: object) -> None:
        raise CnnccError("layer 'x': op 'y' has no CPU lowering yet")

    monkeypatch.setattr(viz, "physical", no_lowering)
    view = build_view(load_model("lenet5"), "none")
    text = to_dot(view)
    parse_dot(text)
    assert view.arena_bytes is None and "no CPU lowering" in text
    assert not re.search(r"arena [\d.]+ (B|KiB|MiB) @", text) and not re.search(r"NCHW\d+c", text)
    assert "no CPU lowering" in to_html(view)
