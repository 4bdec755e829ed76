"""The walk of a submission's code behind :mod:`.reach`: every statement in notebook order, with a table of
what each name stands for, recording which exercises' keys (:mod:`.keys`) each line reaches.

A value is (kind, detail): ("path", "nclab.ood") a module or object by its dotted name (also
"builtins.getattr", "importlib"…), ("instance", "nclab.ufm.UFM") an object built by an nclab class,
("lent", question) ``stand_in``'s result, ("derived", "") something taken out of nclab that the walk does not
follow, ("namespace", "") ``globals()``, ("getter", "a.b") ``operator.attrgetter("a.b")``. Names are scoped
as Python scopes them (a function's own names are its own); in the notebook's globals a module alias is
never forgotten (a later rebinding may never run), other values are replaced. What the walk cannot follow
(computed names, strings naming nclab's code, dunders, ``sys.modules``, processes) is :mod:`.dynamic`'s.
"""

from __future__ import annotations

import ast
import builtins
import re

from ... import exercises
from .dynamic import DYNAMIC, EVERY, GETTERS, IMPORTERS, PARSE_ERRORS, Unfollowed, literal
from .keys import MISSING, key_label, object_at

__all__ = ["Walker", "PARSE_ERRORS", "EVERY"]


def _nclab(values, instances: bool = True) -> bool:
    """Whether ``values`` come from nclab: a module or object of it, something taken out of one, or (unless
    not ``instances``) an object built by one of its classes."""
    kinds = ("derived", "instance") if instances else ("derived",)
    return any(kind in kinds or (kind == "path" and detail.startswith("nclab")) for kind, detail in values)


def _derived(values) -> set:
    return {("derived", "")} if _nclab(values) else set()


def _constant(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _locals(node) -> set[str]:
    """The names a function, lambda, class or comprehension binds in its own scope (an overestimate: those of
    the functions nested in it too), less those it declares global or nonlocal."""
    names, declared = set(), set()
    for inner in ast.walk(node):
        if isinstance(inner, ast.arg):
            names.add(inner.arg)
        elif isinstance(inner, ast.Name) and isinstance(inner.ctx, ast.Store):
            names.add(inner.id)
        elif isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and inner is not node:
            names.add(inner.name)
        elif isinstance(inner, ast.alias):
            names.add((inner.asname or inner.name).split(".")[0])
        elif isinstance(inner, ast.ExceptHandler) and inner.name:
            names.add(inner.name)
        elif isinstance(inner, (ast.Global, ast.Nonlocal)):
            declared.update(inner.names)
    return names - declared


class Walker(Unfollowed):
    """Walks the cells in order; ``hits``: {exercise: {"what (cell N, line L)": None}}."""

    def __init__(self, questions: list[str], template_lines: set[str]):
        self.questions, self.template_lines = questions, template_lines
        self.key_names: dict[str, list[str]] = {}  # the last part of each key's name → its exercises
        for q in questions:
            for name in exercises.EXERCISES[q].references:
                self.key_names.setdefault(name.rsplit(".", 1)[-1], []).append(q)
        self.scopes: list[tuple[set[str] | None, dict[str, set]]] = [(None, {})]  # (locals or None: global, table)
        self.stars: list[str] = []  # modules of `from nclab.x import *`
        self.hits: dict[str, dict[str, None]] = {q: {} for q in questions}
        self.cell, self.given, self.lines, self.place = 0, False, [], None
        self.later: list[tuple] = []  # the notebook's own functions, walked again at the end (:meth:`finish`)
        self.finishing = False
        self.read: set = set()  # nodes a call or subscript reads itself (:class:`.dynamic.Unfollowed`)

    def walk(self, statement) -> None:
        """Walk one statement (or lambda) of the cell in ``self.cell``; code the walk cannot follow (nested
        past its stack) reaches every key: the kernel may still run it."""
        depth, place = len(self.scopes), self.place
        self.read.clear()
        try:
            if isinstance(statement, ast.stmt):
                self.statement(statement)
            else:
                self.value(statement)
        except Exception as error:  # nested past the walk's stack (RecursionError), or beyond what it knows
            del self.scopes[depth:]
            self.place = place
            self.hit(EVERY, f"code the check could not follow ({type(error).__name__})", statement)

    def finish(self) -> None:
        """Walk the notebook's functions again with the names as they stand after the last cell: the grader
        calls a function after every cell ran, so a global it reads may be bound by a later cell."""
        self.finishing = True
        for node, cell, given, lines, place in self.later:
            self.cell, self.given, self.lines, self.place = cell, given, lines, place
            self.walk(node)

    # --- where a hit is, and whether the student received it --------------------------------------------

    def line_of(self, node) -> int:
        if self.place is None:
            return getattr(node, "lineno", 1)
        mode, number = self.place  # code read from a string: at the call's line, or a cell magic's body
        return number if mode == "fixed" else number + getattr(node, "lineno", 1)

    def hit(self, question: str, what: str, node) -> None:
        line = self.line_of(node)
        if self.given or (0 < line <= len(self.lines) and self.lines[line - 1] in self.template_lines):
            return
        for q in self.questions if question == EVERY else [question] if question in self.hits else []:
            self.hits[q].setdefault(f"{what} (cell {self.cell}, line {line})")

    # --- names ------------------------------------------------------------------------------------------

    def lookup(self, name: str) -> set:
        for local, table in reversed(self.scopes):
            if local is None or name in local:
                if name in table or local is not None:
                    return table.get(name, set())
        for module in self.stars:
            if not name.startswith("_") and object_at(f"{module}.{name}") is not MISSING:
                return {("path", f"{module}.{name}")}
        if name == "__builtins__":  # the builtins module in a notebook (its dict in a module)
            return {("path", "builtins")}
        return {("path", f"builtins.{name}")} if hasattr(builtins, name) else set()

    def bind(self, name: str, values: set) -> None:
        local, table = next(
            ((lo, t) for lo, t in reversed(self.scopes) if lo is not None and name in lo), self.scopes[0]
        )
        if local is None:  # the notebook's globals: a module alias stays (a later rebinding may never run)
            table[name] = {v for v in table.get(name, set()) if v[0] == "path"} | set(values)
        else:
            table[name] = table.get(name, set()) | set(values)

    def bind_target(self, target, value_node, values: set) -> None:
        if isinstance(target, ast.Name):
            self.bind(target.id, values)
        elif isinstance(target, ast.Starred):
            self.bind_target(target.value, None, _derived(values))
        elif isinstance(target, (ast.Tuple, ast.List)):
            paired = isinstance(value_node, (ast.Tuple, ast.List)) and len(value_node.elts) == len(target.elts)
            for index, element in enumerate(target.elts):
                inner = value_node.elts[index] if paired else None
                self.bind_target(element, inner, self.value(inner) if paired else _derived(values))
        else:
            self.value(target)  # a.b = … or a[i] = …: the parts read

    # --- statements -------------------------------------------------------------------------------------

    def block(self, body) -> None:
        for statement in body:
            self.statement(statement)

    def statement(self, node) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                self.reach(alias.name, node, called=True)
                bound = alias.name if alias.asname else alias.name.split(".")[0]  # import a.b binds a
                self.bind(alias.asname or bound, {("path", bound)})
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                for alias in node.names:
                    if alias.name == "*":
                        self.reach(node.module, node, called=True)
                        self.stars.append(node.module)
                    else:
                        self.unfollowed(f"{node.module}.{alias.name}", node, True)
                        self.reach(f"{node.module}.{alias.name}", node, called=True)
                        self.bind(alias.asname or alias.name, {("path", f"{node.module}.{alias.name}")})
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for part in (
                node.decorator_list + getattr(node, "bases", []) + [k.value for k in getattr(node, "keywords", [])]
            ):
                self.value(part)
            if not isinstance(node, ast.ClassDef):
                for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                    self.value(default)
            self.bind(node.name, set())
            self.body(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            values = self.value(node.value) if node.value is not None else set()
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(node, ast.AugAssign):
                    self.value(target)
                self.bind_target(target, node.value, values)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.bind_target(node.target, None, _derived(self.value(node.iter)))
            self.block(node.body + node.orelse)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                values = self.value(item.context_expr)
                if item.optional_vars is not None:
                    self.bind_target(item.optional_vars, None, _derived(values))
            self.block(node.body)
        else:
            if isinstance(node, ast.Expr) and literal(node.value) is not None:
                self.read.add(node.value)  # a bare string, a docstring: a comment
            self.generic(node)

    def body(self, node) -> None:
        """Walk the body of a function, lambda or class in a scope of its own; one defined in the notebook's
        globals is walked again by :meth:`finish`."""
        if len(self.scopes) == 1 and not self.finishing:
            self.later.append((node, self.cell, self.given, self.lines, self.place))
        self.scopes.append((_locals(node), {}))
        try:
            if isinstance(node, ast.Lambda):
                self.value(node.body)
            else:
                self.block(node.body)
        finally:
            self.scopes.pop()

    def generic(self, node) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                self.statement(child)
            elif isinstance(child, ast.expr):
                self.value(child)
            else:
                self.generic(child)

    # --- expressions: their value, and what they reach ----------------------------------------------

    def value(self, node, called: bool = False) -> set:
        if node is None:
            return set()
        if isinstance(node, ast.Name):
            values = self.lookup(node.id) if isinstance(node.ctx, ast.Load) else set()
            self.touch(values, node, called, node.id)
            return values
        if isinstance(node, ast.Attribute):
            return self.attribute(node, called)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.Compare) and all(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            self.read.update(node.comparators)  # "google.colab" in sys.modules: a test, no access
        if (text := literal(node)) is not None:
            self.string(node, text[0])
            for inner in text[1]:
                self.value(inner)
            return set()
        if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
            return _derived(
                set().union(*(self.value(e) for e in ast.iter_child_nodes(node) if isinstance(e, ast.expr)))
            )
        if isinstance(node, (ast.IfExp, ast.BoolOp)):
            parts = [node.body, node.orelse] if isinstance(node, ast.IfExp) else node.values
            self.value(getattr(node, "test", None))
            return set().union(*(self.value(part) for part in parts))
        if isinstance(node, ast.NamedExpr):
            values = self.value(node.value)
            self.bind_target(node.target, node.value, values)
            return values
        if isinstance(node, ast.Starred):
            return self.value(node.value)
        if isinstance(node, ast.Lambda):
            for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                self.value(default)
            self.body(node)
            return set()
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            self.scopes.append((_locals(node), {}))
            try:
                for generator in node.generators:
                    self.bind_target(generator.target, None, _derived(self.value(generator.iter)))
                    for condition in generator.ifs:
                        self.value(condition)
                for part in ("elt", "key", "value"):
                    self.value(getattr(node, part, None))
            finally:
                self.scopes.pop()
            return set()
        self.generic(node)
        return set()

    def touch(self, values: set, node, called: bool, name: str | None = None) -> None:
        """Record what ``values`` (of ``node``, the name ``name``) reach."""
        for kind, detail in values:
            if kind == "path":
                self.unfollowed(detail, node, called)
                self.reach(detail, node, called)
            elif kind == "instance" and name is not None:
                found = object_at(detail)
                for q in self.questions:
                    label = key_label(found, detail, q)
                    if label:
                        self.hit(q, f"{label} (through `{name}`)", node)
            elif kind == "lent" and name is not None:
                self.hit(detail, f"nclab.exercises.stand_in('{detail}') (through `{name}`)", node)

    def reach(self, path: str, node, called: bool) -> None:
        """Record the exercises whose key the dotted ``path`` is (``called``: stand_in is called, or imported)."""
        found = object_at(path)
        if found is MISSING:
            return
        parts = path.split(".")
        if found is exercises.stand_in:
            if not called:
                self.hit(EVERY, "nclab.exercises.stand_in", node)
            return
        if parts[:2] == ["nclab", "exercises"] and len(parts) > 2:
            if parts[2] in ("EXERCISES", "_NOTEBOOKS"):
                self.hit(EVERY, f"nclab.exercises.{parts[2]}", node)
            if number := re.fullmatch(r"notebook(\d\d)", parts[2]):
                for q in self.questions:
                    if q.startswith(number[1] + "_"):
                        self.hit(q, f"nclab.exercises.{parts[2]}", node)
        for q in self.questions:
            label = key_label(found, path, q)
            if label:
                self.hit(q, label, node)

    def untraced(self, name: str, node) -> None:
        """``x.name`` or ``getattr(x, "name")`` on an ``x`` the check cannot trace: a hit when ``name`` is the
        last part of a key's name (``.Energy``) or an internal of nclab.exercises."""
        if name in ("EXERCISES", "stand_in"):
            self.hit(EVERY, f"`.{name}` of an object the check cannot trace", node)
        for q in self.key_names.get(name, []):
            self.hit(q, f"`.{name}` of an object the check cannot trace", node)

    def attribute(self, node: ast.Attribute, called: bool) -> set:
        base = self.value(node.value)
        values = set()
        for kind, detail in base:
            if kind == "path":
                values.add(("path", f"{detail}.{node.attr}"))
            elif kind in ("derived", "instance"):  # an instance's method: ood.NECO().fit
                values.add((kind, detail))
        self.dunder(node.attr, _nclab(base), node)
        if isinstance(node.ctx, ast.Load):
            if not any(kind == "path" for kind, _ in base):
                self.untraced(node.attr, node)
            self.touch({v for v in values if v[0] == "path"}, node, called)
        return values

    def subscript(self, node: ast.Subscript) -> set:
        key = _constant(node.slice)
        if key is not None:
            self.read.update((node.value, node.slice))  # sys.modules["nclab.ood"]: followed
        base = self.value(node.value)
        self.value(node.slice)
        values = _derived(base)
        if ("namespace", "") in base:  # globals()["name"]
            if key is None:
                self.hit(EVERY, f"{DYNAMIC}: a computed name looked up in globals()", node)
            else:
                values |= self.lookup(key)
                self.touch(self.lookup(key), node, False, key)
        if ("path", "sys.modules") in base and key is not None and key.startswith("nclab"):
            values.add(("path", key))
            self.reach(key, node, False)
        if base & {("path", "builtins"), ("path", "builtins.__dict__")}:  # __builtins__["getattr"]
            if key is None:
                self.hit(EVERY, f"{DYNAMIC}: a computed name looked up in __builtins__", node)
            else:
                values.add(("path", f"builtins.{key}"))
                self.touch({("path", f"builtins.{key}")}, node, False)
        return values

    def call(self, node: ast.Call) -> set:
        if isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args and _constant(node.args[0]):
            self.read.update((node.func, node.func.value))  # sys.modules.get("nclab.ood"): followed
        function = self.value(node.func, called=True)
        self.read.update(self.quoted(node, function))
        arguments = [self.value(argument) for argument in node.args]
        for keyword in node.keywords:
            self.value(keyword.value)
        first = _constant(node.args[0]) if node.args else None
        values = set()
        for kind, detail in function:
            if kind == "getter" and arguments:
                values |= self.get(arguments[0], detail, node)
            if kind == "instance" and isinstance(node.func, ast.Attribute) and node.func.attr == "fit":
                values.add((kind, detail))  # a detector's fit returns it: neco = ood.NECO().fit(h)
            if kind != "path":
                continue
            if detail in GETTERS and len(arguments) >= 2:
                name = _constant(node.args[1])
                if name is not None:
                    values |= self.get(arguments[0], name, node)
                elif _nclab(arguments[0], instances=False):
                    self.hit(EVERY, f"{DYNAMIC}: getattr with a computed name", node)
            elif detail in ("builtins.vars", "builtins.globals", "builtins.locals"):
                if arguments and _nclab(arguments[0], instances=False):
                    self.hit(EVERY, f"{DYNAMIC}: vars()", node)
                elif not arguments:
                    values.add(("namespace", ""))
            elif detail in IMPORTERS:
                if first is None or first.startswith("nclab"):
                    self.hit(EVERY, f"{DYNAMIC}: {detail.removeprefix('builtins.')}({first or '…'!r})", node)
                if first is not None:
                    whole = detail == "importlib.import_module" or len(node.args) > 3 or node.keywords
                    values.add(("path", first if whole else first.split(".")[0]))
            elif detail == "operator.attrgetter":
                names = [_constant(argument) for argument in node.args]
                if None in names or len(names) != 1:
                    self.hit(EVERY, f"{DYNAMIC}: operator.attrgetter with a computed name", node)
                else:
                    values.add(("getter", names[0]))
            elif detail == "sys.modules.get" and first is not None and first.startswith("nclab"):
                values.add(("path", first))
                self.reach(first, node, False)
            elif detail.startswith("inspect.") and any(_nclab(argument) for argument in arguments):
                self.hit(EVERY, f"{DYNAMIC}: {detail}", node)
                values.add(("derived", ""))
            elif object_at(detail) is exercises.stand_in:
                if first is None:
                    self.hit(EVERY, "nclab.exercises.stand_in", node)
                else:
                    self.hit(first, f"nclab.exercises.stand_in('{first}')", node)
                    values.add(("lent", first))
            elif detail.startswith("nclab") and isinstance(object_at(detail), type):
                values.add(("instance", detail))
        self.started(node, {detail for kind, detail in function if kind == "path"})
        return values

    def get(self, base: set, names: str, node) -> set:
        """The value of ``getattr(base, names)`` for a constant dotted ``names``."""
        values = base
        for name in names.split("."):
            values = {("path", f"{d}.{name}") if k == "path" else (k, d) for k, d in values if k in ("path", "derived")}
            if not any(kind == "path" for kind, _ in values):
                self.untraced(name, node)
        self.touch({v for v in values if v[0] == "path"}, node, False)
        return values
