"""Dependencies point down (shared/DESIGN.md): entry -> pipeline -> stages -> training -> the
packages -> their building blocks -> cache. Every import, also those inside functions, is checked;
a module no layer names fails the test, so a new module must be placed deliberately."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lower number = lower layer. A module may import from its own layer or below. The most specific
# prefix wins (``plad.models.logprobs`` before ``plad.models``).
LAYERS = {
    "plad.cache": 0,
    "plad.locks": 0,
    "plad.heap": 0,
    "plad.jsonable": 0,
    "plad.saved_config": 0,
    "plad.resolvers": 0,
    "plad.distributed": 0,
    "plad.checks": 0,
    "plad.losses": 1,
    "plad.models.logprobs": 1,
    "plad.models.likelihood": 1,
    "plad.models.encoding": 1,
    "plad.training.optimizer": 1,
    "plad.training.compat": 1,
    "plad.models": 2,
    "plad.models.lora": 2,
    "plad.tasks": 2,
    "plad.backends": 2,
    "plad.training.resume": 2,
    "plad.pairs": 3,
    "plad.evaluation": 3,
    "plad.training.modules": 3,
    "plad.training.on_policy": 3,  # samples the in-memory student (backends, 2) for modules (3)
    "plad.training.teacher_topk": 3,  # the cached top-k teacher: read by modules (3), data (4), trainer (5)
    "plad.training.weights": 3,
    "plad.training.callbacks": 3,
    "plad.data": 4,  # serves the pair store (plad.pairs.store) to Lightning; pairs never imports data
    "plad.training": 5,  # trainer.py: Trainer set-up of both training stages
    "plad.training.heal": 5,  # healing a cut student: a Trainer set-up like trainer.py's
    "plad.stages": 6,
    "plad.training.loggers": 6,
    "plad.run_summary": 6,
    "plad.report": 6,
    "plad.pipeline": 7,
    "plad.cli": 8,
    "plad": 8,
}


def layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise AssertionError(f"{module}: no layer in tests/test_layering.py LAYERS")


def modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "plad").rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = path
    return out


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("plad")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("plad"):
            found |= {
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names
            }
    return found


MODULES = modules()


def test_no_import_runs_up_a_layer():
    upward = [
        f"{m} (layer {layer(m)}) imports {i} (layer {layer(i)})"
        for m, path in MODULES.items()
        for i in imports(path)
        if m != "plad" and layer(i) > layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = {m: {i for i in imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n) :] + [n]))
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
