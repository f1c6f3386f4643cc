"""The checks the op, backend and autodiff tests share: compiled vs the reference interpreter, and VJPs vs PyTorch
autograd and finite differences.

One copy of each mechanism, so that every test file asks the same question the same way:

* :func:`covers` marks a compiled-backend test as covering ops; :func:`compile_for_test` (and
  :func:`compile_model_for_test`) records the ops of every graph a test compiles, so a test that claims an op but
  never compiles it fails; :func:`ops_named_by_covers` reads the decorators of every test file, so the registry
  check (every op has a compiled test) sees all of them, wherever they live.
* :func:`check_graph` / :func:`check_op`: compiled result vs the interpreter, either in float32 with the
  interpreter's non-finite values reproduced exactly (the forward ops, fed NaN/inf on purpose), or against the
  float64 interpreter as the oracle (the backward ops), optionally at smaller run-time batches than compiled.
* :func:`check_vjp`: reverse-mode ``grad()`` of a graph vs PyTorch autograd in float32 and vs central finite
  differences of the forward graph in float64 (two oracles that share no code with cnncc).

Tolerances are arguments: the named constants and their reasons stay with the tests (or in :mod:`cnncc.testing`).
torch is imported only inside the functions that need it, so importing this module needs neither torch nor llvmlite.
"""

from __future__ import annotations

import ast
import functools
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnncc.ir import Graph

if TYPE_CHECKING:
    from cnncc.frontend.model import Model

# --- which ops a test compiled -------------------------------------------------------------------------------------

# The ops of every graph compiled (through compile_for_test / compile_model_for_test) by the running test.
COMPILED_OPS: set[str] = set()
# The ops named by the @covers decorators of the test modules imported so far (the registry check adds the ones
# it reads from the files, for modules this run did not import).
COVERED_OPS: set[str] = set()


def record_compiled(ops: Iterable[str]) -> None:
    """Count ``ops`` as compiled by the running test (for a test that compiles by another route)."""
    COMPILED_OPS.update(ops)


def covers(*ops: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Mark a test as covering ``ops``; the test then fails unless it compiled a graph holding one of them (so a
    test cannot claim an op whose kernel it never ran)."""
    COVERED_OPS.update(ops)

    def deco(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> None:
            COMPILED_OPS.clear()
            fn(*args, **kwargs)
            assert COMPILED_OPS & set(ops), f"{fn.__name__} covers {ops} but compiled only {sorted(COMPILED_OPS)}"

        return run

    return deco


def ops_named_by_covers(tests: Path) -> set[str]:
    """The op names written as string literals in the ``@covers(...)`` decorators of every test file under
    ``tests`` (read with ast, not imported: a registry check must see the tests a ``-k`` or single-file run did not
    import). Decorators that unpack a computed list (``@covers(*OPS)``) are counted by :data:`COVERED_OPS` when
    their module is imported."""
    named: set[str] = set()
    for path in sorted(tests.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and isinstance(deco.func, ast.Name) and deco.func.id == "covers":
                    named.update(a.value for a in deco.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return named


def compile_for_test(graph: Graph, params: Mapping[str, np.ndarray], **kw: Any) -> Any:
    """``cnncc.compile`` without the graph passes unless ``optimize_graph=True`` is asked for (each op is then
    tested through its own kernel, not fused away), recording the graph's ops for :func:`covers`."""
    import cnncc

    record_compiled(n.op for n in graph.nodes)
    kw.setdefault("optimize_graph", False)
    return assert_ran_as_chosen(cnncc.compile(graph, params=params, **kw))


def compile_model_for_test(model: Model, batch: int, **kw: Any) -> Any:
    """:func:`compile_for_test` for a DSL model compiled at ``batch``."""
    import cnncc

    record_compiled(n.op for n in model.graph(batch).nodes)
    kw.setdefault("optimize_graph", False)
    return assert_ran_as_chosen(cnncc.compile(model, batch=batch, **kw))


def assert_ran_as_chosen(compiled: Any) -> Any:
    """Every convolution of a compiled model ran the kernel its selection chose (``layer_algorithms``, what the
    lowering emitted, against ``choices``, what the select-algorithms pass wrote into the IR): no test of a compiled
    convolution passes on another algorithm's code."""
    chosen = {layer: c.impl.algorithm for layer, c in compiled.choices.items()}
    assert compiled.layer_algorithms == chosen, f"ran {compiled.layer_algorithms}, chosen {chosen}"
    return compiled


# --- compiled vs the reference interpreter -----------------------------------------------------------------------


def assert_matches(got: np.ndarray, want: np.ndarray, tol: float, what: str) -> None:
    """Same dtype, shape and non-finite values (NaN, +-inf) as the reference; finite values within ``tol`` of the
    output scale (``rel_error``). For float32 results against the float32 interpreter, fed special values."""
    from cnncc.testing import rel_error

    assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, got.shape, want.dtype, want.shape)
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN positions differ"
    finite = np.isfinite(want)
    assert np.array_equal(got[~finite], want[~finite], equal_nan=True), f"{what}: non-finite values differ"
    err = rel_error(np.where(finite, got, 0), np.where(finite, want, 0))
    assert err <= tol, f"{what}: rel error {err:.3g} > {tol:.1g}"


def assert_close_to_float64(got: np.ndarray, want: np.ndarray, tol: float, what: str) -> None:
    """A float32 result of the reference's shape within ``tol`` of the float64 reference (``rel_error``)."""
    from cnncc.testing import rel_error

    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert got.dtype == np.float32, (what, got.dtype)
    err = rel_error(got, want)
    assert err <= tol, f"{what}: rel error {err:.3g} > {tol:.1g}"


def check_graph(graph: Graph, inputs: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray], tol: float, *,
                reference_dtype: str = "float32", smaller_batches: Sequence[int] = (),
                rebuild: Callable[[int], Graph] | None = None, compiler: Callable[..., Any] = compile_for_test,
                **compile_kw: Any) -> tuple[dict[str, np.ndarray], Any]:
    """Compile ``graph`` (``compiler``, by default :func:`compile_for_test`), run it on ``inputs`` and compare every
    output with the interpreter; return the outputs at the compiled batch and the compiled model.

    ``reference_dtype="float32"``: the interpreter in float32, compared with :func:`assert_matches` (NaN and inf
    where the reference has them). ``"float64"``: the interpreter in float64 as the oracle, compared with
    :func:`assert_close_to_float64`. ``smaller_batches``: the same compiled module also runs on the inputs cut to
    their first ``n`` images (dynamic batch), against the reference of ``rebuild(n)`` (the graph built at batch
    ``n``; needed where an output or attribute depends on the batch) fed the same cut inputs.
    """
    from cnncc.runtime import interpret

    if smaller_batches and rebuild is None:
        raise ValueError("smaller_batches needs rebuild (the graph at a smaller batch, for the reference)")
    compare = assert_matches if reference_dtype == "float32" else assert_close_to_float64
    cm = compiler(graph, params, **compile_kw)
    first: dict[str, np.ndarray] = {}
    for n in (None, *smaller_batches):
        feeds = {k: (v if n is None else np.ascontiguousarray(v[:n])) for k, v in inputs.items()}
        got = cm.run(feeds)
        if n is None:
            reference = graph
        else:
            assert rebuild is not None
            reference = rebuild(n)
        want = interpret(reference, feeds, params, dtype=reference_dtype)
        assert list(got) == list(want)
        where = "" if n is None else f" at batch {n}"
        for name in want:
            compare(got[name], want[name], tol, f"{graph.name} output {name}{where}")
        if n is None:
            first = got
    return first, cm


def check_op(op: str, arrays: Sequence[np.ndarray], attrs: Any = None, params: Sequence[int] = (),
             tol: float | None = None, *, sub_batch: Callable[[Sequence[np.ndarray]], Any] | None = None,
             reference_dtype: str = "float32", compiler: Callable[..., Any] = compile_for_test) -> Any:
    """One ``op`` node compiled vs the interpreter (:func:`check_graph`); ``params``: the operand positions that
    are parameters; returns the compiled model. ``tol`` defaults to cnncc.testing.TOL_F32_ELEMENTWISE.

    ``sub_batch(arrays)`` (optional) gives the attributes of the same op at batch 1: the module compiled for the
    full batch then also runs on the first image only (dynamic batch) and must match the batch-1 reference.
    """
    from cnncc.testing import TOL_F32_ELEMENTWISE, single_op_graph

    g, inputs, prm = single_op_graph(op, arrays, attrs, param_operands=params)

    def rebuild(n: int) -> Graph:
        assert sub_batch is not None
        small = [a if i in params else a[:n] for i, a in enumerate(arrays)]
        return single_op_graph(op, small, sub_batch(small), param_operands=params)[0]

    _, cm = check_graph(g, inputs, prm, TOL_F32_ELEMENTWISE if tol is None else tol, reference_dtype=reference_dtype,
                        compiler=compiler, smaller_batches=(1,) if sub_batch is not None else (),
                        rebuild=rebuild if sub_batch is not None else None)
    return cm


def run_op_outputs(op: str, arrays: Sequence[np.ndarray], attrs: Any, dtype: str) -> tuple[np.ndarray, ...]:
    """All results of one op node, through the builder (its shape rule) and the reference interpreter in
    ``dtype``; each must have the inferred shape and the asked dtype."""
    from cnncc.runtime import interpret
    from cnncc.testing import single_op_graph

    g, inputs, params = single_op_graph(op, arrays, attrs)
    outs = interpret(g, inputs, params, dtype=dtype)
    results = tuple(outs[f"y{k}"] for k in range(len(g.outputs)))
    for r, v in zip(results, g.outputs, strict=True):
        assert r.shape == v.shape and r.dtype == np.dtype(dtype), (op, r.shape, v.shape, r.dtype)
    return results


# --- VJPs -------------------------------------------------------------------------------------------------------


def rng_for(name: str) -> np.random.Generator:
    """A generator seeded by ``name``: a case draws the same numbers whatever else runs."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def finite_differences(graph: Graph, arrays: Mapping[str, np.ndarray], name: str, eps: float,
                       loss: str = "loss") -> np.ndarray:
    """d loss / d ``name`` by central differences with step ``eps``, the graph run by the float64 interpreter
    (truncation ~eps^2 |f'''|, rounding ~1e-16 / eps of the loss). Inputs must stay away from kinks by more than
    ``eps``, or a difference straddles one."""
    from cnncc.runtime import interpret

    x = arrays[name].astype(np.float64)
    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        vals = []
        for step in (eps, -eps):
            shifted = x.copy()
            shifted[idx] += step
            vals.append(float(interpret(graph, {**arrays, name: shifted}, dtype="float64")[loss]))
        out[idx] = (vals[0] - vals[1]) / (2 * eps)
    return out


def torch_gradients(fn: Callable[..., Any], arrays: Mapping[str, np.ndarray], operands: Sequence[str],
                    wrt: Sequence[str], cotangent: str | None = None) -> dict[str, np.ndarray]:
    """PyTorch autograd in float32 of ``fn(*operands)`` (integer arrays become integer tensors, the rest float32
    leaves), reduced to ``Σ y * arrays[cotangent]`` when a cotangent is given; the gradients of ``wrt``. An operand
    the result does not read (training batch_norm's running statistics) has no torch gradient: zeros, as cnncc's
    ``grad()`` gives it."""
    import torch

    ts = {}
    for n in operands:
        a = arrays[n]
        ts[n] = (torch.tensor(a) if np.issubdtype(a.dtype, np.integer)
                 else torch.tensor(a, dtype=torch.float32, requires_grad=True))
    y = fn(*ts.values())
    loss = (y * torch.tensor(arrays[cotangent], dtype=torch.float32)).sum() if cotangent is not None else y
    loss.backward()
    grads = {n: ts[n].grad for n in wrt}
    return {n: g.numpy() if g is not None else np.zeros(arrays[n].shape, np.float32) for n, g in grads.items()}


def check_vjp(graph: Graph, arrays: Mapping[str, np.ndarray], wrt: Sequence[str], torch_fn: Callable[..., Any], *,
              tol_torch: float, tol_fd: float, eps: float, what: str, cotangent: str = "R") -> None:
    """``grad(graph, wrt)`` (verified, outputs ``loss`` then ``grad:<name>``) run by the interpreter, against two
    independent oracles: PyTorch autograd of ``torch_fn`` in float32 (within ``tol_torch``) and central finite
    differences of ``graph`` in float64 (within ``tol_fd``).

    ``graph``'s output ``loss`` is a scalar; when its input ``cotangent`` exists, the loss is ``Σ y * cotangent``
    of ``torch_fn``'s result ``y`` (so the gradient checked is the VJP with that cotangent). ``torch_fn`` takes the
    graph's other inputs, in order.
    """
    from cnncc.autodiff import grad
    from cnncc.runtime import interpret
    from cnncc.testing import rel_error

    g = grad(graph, wrt=list(wrt))
    g.verify()
    assert g.output_names == ("loss", *(f"grad:{n}" for n in wrt))
    operands = [v.name for v in graph.inputs if v.name != cotangent]
    got32 = interpret(g, arrays, dtype="float32")
    want32 = torch_gradients(torch_fn, arrays, operands, wrt, cotangent if cotangent in arrays else None)
    got64 = interpret(g, arrays, dtype="float64")
    for n in wrt:
        assert got32[f"grad:{n}"].dtype == np.float32
        err = rel_error(got32[f"grad:{n}"], want32[n])
        assert err <= tol_torch, f"{what} d/d{n} vs torch: rel error {err:.3g}"
        err = rel_error(got64[f"grad:{n}"], finite_differences(graph, arrays, n, eps))
        assert err <= tol_fd, f"{what} d/d{n} vs finite differences: rel error {err:.3g}"
