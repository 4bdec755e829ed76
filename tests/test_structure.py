"""The layout of the package, as STYLE draws it: the course's data flow in order, arrows one way.

``config → data/ → models, heads, etf → losses → train/ → features → collapse, ufm → ood → methods/ →
tables/ → plots/ → widgets → exercises/``, and the instructor's tools in ``course/``: a module imports only
from its own step or the steps before it, never back up the list (so there is no import cycle), the method
contract lives under the loop (``train.contract``), and no module hides an import of the package's own
``train``, ``tables`` or ``methods`` inside a function to dodge a cycle.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nclab"

# Each top-level module or package of nclab → its step in the data flow (a module may import from its own
# step and the steps before it). stats, checkpoints and distributed are plumbing under everything.
STEPS = {
    "__init__": 0,
    "__main__": 13,
    "config": 0,
    "stats": 0,
    "checkpoints": 0,
    "distributed": 0,
    "data": 1,
    "models": 2,
    "heads": 2,
    "etf": 2,
    "losses": 3,
    "train": 4,
    "features": 5,
    "collapse": 6,
    "ufm": 6,
    "probe": 6,
    "ood": 7,
    "pitfalls": 7,
    "methods": 8,
    "tables": 9,
    "plots": 10,
    "widgets": 11,
    "exercises": 12,
    "course": 13,
}
MAX_LINES = 450  # STYLE: a module past ~400 lines is two ideas
LONG_ON_PURPOSE = {"course/grading/sandbox.py"}  # one threat model, kept in one file


def _modules() -> dict[str, Path]:
    """{dotted name below nclab: file} of every module, a package as its __init__."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)
        found[name] = path
    return found


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[str]:
    """The nclab modules an import statement in ``module`` names (dotted below nclab)."""
    if isinstance(node, ast.Import):
        return [alias.name.removeprefix("nclab.") for alias in node.names if alias.name.startswith("nclab.")]
    if node.level == 0:
        if not (node.module or "").startswith("nclab"):
            return []
        base = (node.module or "").removeprefix("nclab").lstrip(".")
    else:
        here = module.split(".") if is_package else module.split(".")[:-1]
        here = here[: len(here) - (node.level - 1)] if node.level > 1 else here
        base = ".".join([p for p in here if p] + ([node.module] if node.module else []))
    targets = [base] if base in MODULES else []
    for alias in node.names:  # `from . import x` or `from .pkg import submodule`
        candidate = f"{base}.{alias.name}" if base else alias.name
        if candidate in MODULES:
            targets.append(candidate)
    return targets or ([base] if base else [])


def _imports() -> dict[str, list[tuple[str, int, bool]]]:
    """{module: [(imported module, line, inside a function)]} over the whole package."""
    found = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nested = {id(node) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                  for node in ast.walk(f)}  # fmt: skip
        found[name] = [
            (target, node.lineno, id(node) in nested)
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for target in _resolve(name, node, path.name == "__init__.py")
        ]
    return found


IMPORTS = _imports()


def _step(module: str) -> int:
    return STEPS[module.split(".")[0] if module else "__init__"]


def test_every_top_level_module_has_a_step_in_the_data_flow():
    assert {name.split(".")[0] for name in MODULES} == set(STEPS)


def test_nothing_imports_back_up_the_data_flow():
    back = [
        f"{module} (step {_step(module)}) imports {target} (step {_step(target)}), line {line}"
        for module, imports in IMPORTS.items()
        for target, line, _ in imports
        if _step(target) > _step(module)
    ]
    assert not back, "\n".join(back)


def test_no_import_cycle_between_modules():
    graph = {module: {target for target, _, inside in imports if not inside and target != module}
             for module, imports in IMPORTS.items()}  # fmt: skip
    for module in graph:  # a package's __init__ imports its submodules, which import the package: not a cycle
        graph[module] = {t for t in graph[module] if not module.startswith(t + ".")}
    state: dict[str, int] = {}

    def visit(module, path):
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                pytest.fail("import cycle: " + " → ".join([*path[path.index(target) :], target]))
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_function_level_import_of_the_packages_own_train_tables_or_methods():
    hidden = [
        f"{module}, line {line}: imports {target} inside a function"
        for module, imports in IMPORTS.items()
        for target, line, inside in imports
        if inside and target.split(".")[0] in ("train", "tables", "methods") and module != "course.cli"
    ]
    assert not hidden, "\n".join(hidden)


def test_the_method_contract_lives_under_the_loop_and_methods_import_it_at_the_top():
    from nclab import methods, train
    from nclab.train import contract

    for name in ("Method", "Hook", "EpochMeans", "ERM", "TrainConfig"):
        assert getattr(methods, name, getattr(train, name)) is getattr(contract, name)
    for module in ("methods.control", "methods.design", "methods.invariance", "methods.ncfal", "methods.spa"):
        assert any(t.startswith("train") and not inside for t, _, inside in IMPORTS[module]), module


def test_no_module_holds_several_ideas_by_length_and_no_e402():
    long = []
    for path in MODULES.values():
        text = path.read_text(encoding="utf-8")
        relative = path.relative_to(PACKAGE).as_posix()
        assert "noqa: E402" not in text, f"{relative}: an import after code (noqa: E402)"
        if len(text.splitlines()) > MAX_LINES and relative not in LONG_ON_PURPOSE:
            long.append(f"{relative}: {len(text.splitlines())} lines")
    assert not long, "\n".join(long)


# --- what moved in the redesign, and what must never move silently ----------------------------------------

# Modules that moved as a whole (every public name of the old one is in the new one).
MOVED_MODULES = {
    "nclab.grade": "nclab.course.grading",
    "nclab.sandbox": "nclab.course.grading.sandbox",
    "nclab.exercises.remote": "nclab.course.grading.remote",
    "nclab.exercises.wire": "nclab.course.grading.wire",
    "nclab.site": "nclab.course.site",
    "nclab.site_assets": "nclab.course.site_assets",
    "nclab.student": "nclab.course.student",
    "nclab.__main__": "nclab.course.cli",
}
# Names that moved on their own: where each is now, or what replaced it.
MOVED_NAMES = {
    "nclab.course.Repository": "nclab.course.repository.Repository",
    "nclab.course.repository": "nclab.course.repository.repository",
    "nclab.course.install_cell": "nclab.course.repository.install_cell",
    "nclab.course.badge": "nclab.course.repository.badge",
    "nclab.course.sync_notebooks": "nclab.course.repository.sync_notebooks",
    "nclab.course.stale_notebooks": "nclab.course.repository.stale_notebooks",
    "nclab.course.select_notebooks": "nclab.course.prepare.select_notebooks",
    "nclab.course.execute_notebook": "nclab.course.prepare.execute_notebook",
    "nclab.course.prepare": "nclab.course.prepare.prepare",
    "nclab.methods.control.EPOCHS": "nclab.methods.control.SCALES",  # Scale(epochs=…) per profile
    "nclab.methods.spa.EPOCHS": "nclab.methods.spa.SCALES",
    "nclab.methods.design.PROFILE_SCALE": "nclab.methods.design.SCALES",
    "nclab.methods.ncfal.etf_distance": "nclab.tables.etf_distance",  # measurements: tables, not methods
    "nclab.methods.ncfal.environment_metrics": "nclab.tables.environment_metrics",
    # issue 28: one verdict for every claim, calibrated to noise, replaces the two rules of thumb
    "nclab.tables.versus_claim": "nclab.tables.verdict_table",
    "nclab.methods.design.claims_table": "nclab.tables.verdict_table",
    "nclab.methods.design.SEED_CLAIMS": "nclab.tables.CLAIMS",
}


def _resolve_name(dotted: str):
    import importlib

    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_every_public_name_before_the_redesign_is_still_there_or_moved_on_purpose():
    """tests/public_names.json: every public name of every module at a16a85e, before the redesign."""
    import json

    before = json.loads((Path(__file__).parent / "public_names.json").read_text(encoding="utf-8"))
    missing = []
    for module, names in before.items():
        for name in names:
            dotted = f"{module}.{name}"
            where = MOVED_NAMES.get(dotted) or f"{MOVED_MODULES.get(module, module)}.{name}"
            try:
                _resolve_name(where)
            except (ImportError, AttributeError):
                missing.append(f"{dotted} (looked for {where})")
    assert not missing, "\n".join(missing)


def test_the_run_folder_of_regime_a_in_the_smoke_profile_is_pinned():
    """A checkpoint folder's name is the hash of its config, data and nclab's version: a refactoring that
    changes it makes every cached run (a student's Drive, an instructor's full-profile runs) retrain."""
    from nclab import data, train

    train_set = data.load("cifar100", "train", standin=True).subset(256, seed=0)
    assert train.run_directory(train.regime("A", "smoke"), train_set, root="/x").name == (
        "cifar100-erm-A-w16-d2a1dac39d87"
    )
