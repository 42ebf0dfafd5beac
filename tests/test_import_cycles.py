"""No import circles inside ``classifier`` and ``training``.

The module import graph is read from the source with :mod:`ast`, so it also sees the
imports a running test never triggers: imports inside functions, under
``if TYPE_CHECKING:`` and ``importlib.import_module("a.literal.name")``. An edge goes from
a module to every module of the two packages it names (``from pkg import mod`` names the
submodule ``pkg.mod``; ``from pkg.mod import name`` names ``pkg.mod``). Each strongly
connected component of more than one module is a circle: the test fails naming it and the
edges inside it.

The same graph checks the layers: capture, flows, names and features import nothing from
``classifier.model`` (and names nothing from ``classifier.features``), see ``FORBIDDEN``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("classifier", "training")

#: package -> the packages it must not import: the layers below the model never reach up
#: to it, and the name parsers do not reach up to the feature groups that use them
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "classifier.capture": ("classifier.model",),
    "classifier.flows": ("classifier.model",),
    "classifier.names": ("classifier.model", "classifier.features"),
    "classifier.features": ("classifier.model",),
}

#: circles known and not yet broken: frozenset of modules -> the reason (one line each)
ALLOWED: dict[frozenset[str], str] = {}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``)."""
    found: dict[str, tuple[Path, bool]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            found[".".join(parts)] = (path, is_package)
    return found


def _known(name: str, modules: dict[str, tuple[Path, bool]]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules (None: not ours)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _is_import_module(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return (
        name == "import_module"
        and len(call.args) >= 1
        and isinstance(call.args[0], ast.Constant)
        and isinstance(call.args[0].value, str)
    )


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ``classifier``/``training`` it imports (anywhere in it)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        targets: list[str] = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.append(sub if sub in modules else source)
            elif isinstance(node, ast.Call) and _is_import_module(node):
                arg = node.args[0]
                assert isinstance(arg, ast.Constant)
                targets.append(str(arg.value))
        for target in targets:
            known = _known(target, modules)
            if known is not None and known != name:
                graph[name].add(known)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _describe(component: list[str], graph: dict[str, set[str]]) -> str:
    inside = set(component)
    edges = [f"{m} -> {t}" for m in component for t in sorted(graph[m] & inside)]
    return f"import circle of {len(component)} modules: " + "; ".join(edges)


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = import_graph()
    # top level, inside a function, and a submodule named by `from package import module`
    assert "classifier.capture.stats" in graph["classifier.capture.reader"]
    assert "classifier.features.report" in graph["classifier.model.cli"]
    assert "training.report" in graph["training.evaluate"]
    # and the finder finds a circle when there is one
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    graph = import_graph()
    found = cycles(graph)
    unexpected = [c for c in found if frozenset(c) not in ALLOWED]
    assert not unexpected, "\n".join(_describe(c, graph) for c in unexpected)


def test_allowed_circles_still_exist() -> None:
    """A circle broken since it was allowed leaves the list, so the list only shrinks."""
    found = cycles(import_graph())
    broken = [sorted(c) for c in ALLOWED if sorted(c) not in found]
    assert not broken, f"no longer circles, remove them from ALLOWED: {broken}"


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_lower_layers_do_not_import_upper_ones() -> None:
    graph = import_graph()
    wrong = [
        f"{module} -> {target}"
        for module, targets in sorted(graph.items())
        for package, forbidden in FORBIDDEN.items()
        if _inside(module, package)
        for target in sorted(targets)
        if any(_inside(target, f) for f in forbidden)
    ]
    assert not wrong, "imports against the layers: " + "; ".join(wrong)


_NAMES_THE_MODEL = re.compile(r"classifier[./]model\b|from classifier import .*\bmodel\b")


def test_features_and_capture_do_not_name_the_model() -> None:
    """Not even in a string (``importlib``, a docstring): ``classifier.model`` is above them."""
    named = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in ("capture", "flows", "names", "features")
        for path in sorted((ROOT / "classifier" / package).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _NAMES_THE_MODEL.search(line)
    ]
    assert not named, "classifier.model named in: " + ", ".join(named)


def test_the_layer_check_sees_an_import_against_the_layers() -> None:
    graph = import_graph()
    # the model sits above the names: it does import them, the other way round is forbidden
    assert "classifier.names.services" in graph["classifier.model.name_prior"]
    assert any(_inside("classifier.model.predict", f) for f in FORBIDDEN["classifier.names"])
