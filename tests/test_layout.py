"""The package's architecture, checked on its source (AST), so a change that breaks it fails here.

- The library never imports the orchestration: no module outside ``pipeline.stages``,
  ``pipeline.experiment``, ``pipeline.commands`` and ``pipeline.cli`` imports any of them, and
  commands never import stages or the experiment layer.
- Only stages (and the experiment layer itself) read an experiment config.
- No import cycles between modules, counting function-level imports (imports under
  ``if TYPE_CHECKING:`` never run and do not count).
- No private name (``_x``) is imported from another module.
- Every make target that runs a stage has a stage module of its name, and every module has a
  docstring; modules stay near the ~400-line guide.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipeline"
ORCHESTRATION = ("pipeline.stages", "pipeline.experiment", "pipeline.commands", "pipeline.cli",
                 "pipeline.__main__")
MAX_LINES = 450  # the style guide's ~400, with room for a docstring or two


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _runtime_imports(tree: ast.AST):
    """(node, imported module, names) of every import that can run, at any depth."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node, node.module, [a.name for a in node.names]


def _resolved(module: str, names: list[str]) -> list[str]:
    """The pipeline modules an import statement loads (``from pkg import submodule`` included)."""
    if not module.startswith("pipeline"):
        return []
    out = [module] if module in MODULES else []
    out += [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    return out


GRAPH = {name: set() for name in MODULES}
IMPORTS = []  # (importer, imported module, names, line)
for _name, _path in MODULES.items():
    for _node, _module, _names in _runtime_imports(ast.parse(_path.read_text(encoding="utf-8"))):
        IMPORTS.append((_name, _module, _names, _node.lineno))
        GRAPH[_name].update(m for m in _resolved(_module, _names) if m != _name)


def test_the_library_never_imports_the_orchestration_layer():
    bad = [f"{a} (line {line}) imports {m}" for a, m, _, line in IMPORTS
           if not _under(a, ORCHESTRATION) and _under(m, ORCHESTRATION)]
    bad += [f"{a} (line {line}) imports {m}" for a, m, _, line in IMPORTS
            if _under(a, ("pipeline.commands",))
            and _under(m, ("pipeline.stages", "pipeline.experiment"))]
    bad += [f"{a} (line {line}) imports {m}" for a, m, _, line in IMPORTS
            if _under(a, ("pipeline.experiment",)) and _under(m, ("pipeline.stages",))]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_only_stages_and_the_experiment_layer_read_a_config():
    readers = {a for a, m, names, _ in IMPORTS
               if m == "pipeline.experiment.config" or "config" in names and m == "pipeline.experiment"}
    assert readers, "nothing reads the config?"
    assert all(_under(a, ("pipeline.stages", "pipeline.experiment")) for a in readers), readers


def test_no_import_cycles_counting_function_level_imports():
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for child in sorted(GRAPH[node]):
            if state.get(child) == 1:
                cycles.append(stack[stack.index(child):] + [child] if child in stack
                              else [node, child])
            elif child not in state:
                visit(child, stack + [child])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_name_is_imported_from_another_module():
    bad = [f"{a} (line {line}) imports {n} from {m}" for a, m, names, line in IMPORTS
           if m.startswith("pipeline") for n in names
           if n.startswith("_") and not n.startswith("__")]
    assert not bad, "private names used outside their module:\n" + "\n".join(bad)


def test_every_stage_target_has_a_stage_module_of_its_name():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    commands = set(re.findall(r"\$\(RUN\) ([a-z-]+) \$\(CFG\)", makefile)) - {"stamps"}
    assert {"data", "folds", "pretrain", "finetune", "features", "svm", "report",
            "compare"} <= commands, commands
    for command in commands:
        assert f"pipeline.stages.{command.replace('-', '_')}" in MODULES, command
        assert re.search(rf"^{command}:", makefile, re.M), f"no make target named {command}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_has_a_docstring_and_stays_near_the_size_guide(name):
    text = MODULES[name].read_text(encoding="utf-8")
    assert ast.get_docstring(ast.parse(text)), f"{name} has no module docstring"
    lines = text.count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it (guide: ~400)"
