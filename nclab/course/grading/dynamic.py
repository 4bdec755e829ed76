"""What the walk of :mod:`.walker` cannot follow: the ways to nclab that name no key in the submission's text,
each a hit for every exercise ("dynamic access to nclab: …"), since what they reach is computed when the code
runs. Flagged in the student's own lines:

- a string that names nclab's code: ``nclab.`` or ``nclab/`` followed by a name, ``nclab import``, ``import
  nclab`` (an f-string read with ``_`` for each ``{…}``, bytes, and ``"a" + "b"`` as one string); not a bare
  string (a docstring), nor a message passed straight to ``print``, nor ``"my nclab answer"``;
- a dunder attribute (``__dict__``, ``__getattribute__``, ``__class__``, ``__base__``, ``__code__``,
  ``__module__``…) of anything taken from nclab, and ``__subclasses__``, ``__globals__`` or a frame's
  ``f_back``/``f_globals``… of anything (they reach every class or namespace of the kernel);
- a getattr-family callable (``getattr``, ``vars``, ``operator.attrgetter``/``methodcaller``,
  ``__import__``, ``importlib.import_module``, ``exec``/``eval``/``compile``) passed as a value, not called;
- any use of ``sys.modules`` but a constant key (``sys.modules["nclab.ood"]`` is followed), ``gc``'s
  object lists, ``importlib.util``/``machinery``/``reload``, ``runpy``, ``pkgutil``, ``sys._getframe`` and
  ``inspect``'s frames;
- a process (``subprocess``, ``os.system``/``popen``/``exec*``/``spawn*``, IPython's ``!`` and ``%%bash``…)
  that runs Python or a command the check cannot read (computed, or with ``$x``/``{x}``); one ``pip``
  command is an install and is not flagged;
- ``%run``/``%load``… of a file of nclab; the text of any other magic that is not code is a string
  (``%cd nclab/ood``).

``__builtins__`` is read as the builtins module, so ``__builtins__.getattr`` is ``getattr``.
"""

from __future__ import annotations

import ast
import re

__all__ = ["Unfollowed", "literal", "EVERY", "DYNAMIC", "GETTERS", "IMPORTERS", "PARSE_ERRORS"]

PARSE_ERRORS = (SyntaxError, RecursionError, MemoryError, ValueError)
EVERY = "*"  # a hit for every exercise
DYNAMIC = "dynamic access to nclab"
NCLAB_TEXT = re.compile(r"\bnclab(?:[./\\]\w|\s+import\b)|\bimport\s+nclab\b")
PIP = re.compile(r"\s*(?:\S*python[\d.]*\s+-m\s+)?pip[\d.]*\s")  # pip install …: a package, not nclab's code
SHELL = re.compile(r"[;&|`\n]|\$\(")  # a second command after the first
PYTHON = re.compile(r"(?:^|[\s;&|(/'\"])(?:python[\d.]*|ipython[\d.]*|jupyter|pytest)(?=$|[\s;&|)'\"])")
GETTERS = {"builtins.getattr", "inspect.getattr_static", "builtins.object.__getattribute__",
           "builtins.type.__getattribute__"}  # fmt: skip
EXECUTE = {"builtins.exec", "builtins.eval", "builtins.compile"}
IMPORTERS = {"importlib.import_module", "builtins.__import__", "importlib.__import__"}
AS_VALUES = GETTERS | EXECUTE | IMPORTERS | {"builtins.vars", "operator.attrgetter", "operator.methodcaller"}
UNFOLLOWED = ("sys.modules", "sys._getframe", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
              "importlib.util", "importlib.machinery", "importlib.reload", "runpy", "pkgutil",
              "inspect.currentframe", "inspect.stack", "inspect.trace")  # fmt: skip
ANYWHERE = {"__subclasses__", "__globals__", "f_back", "f_globals", "f_locals", "f_builtins", "tb_frame",
            "gi_frame", "cr_frame", "ag_frame"}  # fmt: skip
PROCESSES = {"subprocess.run", "subprocess.call", "subprocess.check_call", "subprocess.check_output",
             "subprocess.Popen", "subprocess.getoutput", "subprocess.getstatusoutput", "os.system", "os.popen",
             "pty.spawn", "asyncio.create_subprocess_exec", "asyncio.create_subprocess_shell"}  # fmt: skip
PROCESS_PREFIXES = ("os.exec", "os.spawn", "os.posix_spawn")
COMMAND_KEYWORDS = {"args", "cmd", "command", "path", "file", "executable", "argv"}
KERNEL_EXECUTE = {"run_cell", "ex", "ev"}  # get_ipython().run_cell(code): code the walk reads if it can
KERNEL_SHELL = {"system", "getoutput", "system_raw", "system_piped"}  # get_ipython().system(cmd): a `!`
MAGICS = {"run_line_magic": 1, "run_cell_magic": 2}  # which argument carries a magic's text
RISKY_MAGICS = {"run", "load", "loadpy", "pycat", "psource", "pfile", "edit", "macro"}  # run or show a file
CODE_MAGICS = {"time", "timeit", "prun", "debug", "capture", "pinfo", "pinfo2", "writefile", "file", "python",
               "python2", "python3", "pypy"}  # fmt: skip
SHELL_MAGICS = {"system", "sx", "sh", "bash", "script", "python", "python2", "python3", "pypy", "perl", "ruby"}


def literal(node) -> tuple[str, list] | None:
    """(the text, the expressions inside it) of a string written in the code: a str or bytes constant, an
    f-string with ``_`` for each ``{…}``, or a sum of those; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
        return (node.value if isinstance(node.value, str) else node.value.decode("latin-1")), []
    if isinstance(node, ast.JoinedStr):
        text, inner = "", []
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                text += "_"
                inner += [part.value] + ([part.format_spec] if part.format_spec else [])
            else:
                text += str(part.value)
        return text, inner
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = literal(node.left), literal(node.right)
        if left is not None and right is not None:
            return left[0] + right[0], left[1] + right[1]
    return None


def _constant(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _texts(node) -> list[str | None]:
    """The constant parts of a command (a string or a list of them); None for each part that is computed,
    "python" for ``sys.executable``."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return [text for element in node.elts for text in _texts(element)]
    if isinstance(node, ast.Attribute) and node.attr == "executable":
        return ["python"]
    found = literal(node)
    return [found[0] if found is not None and not found[1] else None]


def _why(texts: list[str | None]) -> str | None:
    """Why a command is flagged: it runs Python, or the check cannot read it (computed, or expanded by the
    shell or IPython: ``$x``, ``{x}``); None when it is neither, or is one ``pip`` command (an install)."""
    words = " ".join("_" if text is None else text for text in texts)
    if texts and texts[0] is not None and PIP.match(words + " ") and not SHELL.search(words):
        return None
    if None in texts or not texts or "$" in words or "{" in words:
        return "a command the check cannot read"
    return "Python" if PYTHON.search(words) else None


class Unfollowed:
    """The rules for what the walk cannot follow, mixed into :class:`.walker.Walker`: they use its ``hit``,
    ``value``, ``block``, ``line_of``, ``place`` and ``read`` (the nodes that a call or subscript reads
    itself, so that their strings and ``sys.modules`` are not flagged twice)."""

    def unfollowed(self, path: str, node, called: bool) -> None:
        """A dotted ``path`` used at ``node``: a getattr-family callable passed as a value, or a door to every
        module or object of the kernel (``sys.modules``, ``gc.get_objects``, ``runpy``…)."""
        if path in AS_VALUES and not called:
            self.hit(EVERY, f"{DYNAMIC}: {path.removeprefix('builtins.')} passed as a value", node)
        for door in UNFOLLOWED:
            if (path == door or path.startswith(door + ".")) and node not in self.read:
                self.hit(EVERY, f"{DYNAMIC}: {door}", node)

    def dunder(self, name: str, from_nclab: bool, node) -> None:
        """``x.name``: a dunder of anything from nclab, or what reaches every class or namespace."""
        if name in ANYWHERE or (from_nclab and name.startswith("__") and name.endswith("__")):
            self.hit(EVERY, f"{DYNAMIC}: `.{name}`", node)

    def string(self, node, text: str) -> None:
        """A string written at ``node`` that names nclab's code (not one a call reads itself)."""
        match = NCLAB_TEXT.search(text)
        if match and node not in self.read:
            start = max(0, match.start() - 20)
            excerpt = (
                ("…" if start else "") + text[start : match.end() + 30] + ("…" if match.end() + 30 < len(text) else "")
            )
            self.hit(EVERY, f"{DYNAMIC}: a string naming nclab's code ({excerpt!r})", node)

    def quoted(self, node: ast.Call, function: set) -> list:
        """The nodes of call ``node`` (of ``function``) that the call reads itself: a getattr's name, the
        module an importer imports, code run by exec or IPython, a message ``print``ed, a module's name."""
        paths = {detail for kind, detail in function if kind == "path"}
        method = node.func.attr if isinstance(node.func, ast.Attribute) else None
        read = []
        if paths & GETTERS:
            read += node.args[1:2]
        if paths & (IMPORTERS | EXECUTE) or method in KERNEL_EXECUTE or method in MAGICS:
            read += node.args
        if paths & {"operator.attrgetter", "operator.methodcaller"}:
            read += node.args[:1]
        if "builtins.print" in paths:
            read += [argument for argument in node.args if literal(argument) is not None]
        if "sys.modules.get" in paths and node.args and _constant(node.args[0]) is not None:
            read += node.args[:1]
        return read

    def started(self, node: ast.Call, paths: set) -> None:
        """What call ``node`` (of ``paths``) runs: code of exec or the kernel (walked when constant), a
        process, an IPython magic."""
        method = node.func.attr if isinstance(node.func, ast.Attribute) else None
        first = _constant(node.args[0]) if node.args else None
        for detail in paths & EXECUTE:
            self.code(first, node, "fixed", f"{detail.removeprefix('builtins.')} of computed code")
        if method in KERNEL_EXECUTE:
            self.code(first, node, "fixed", f"get_ipython().{method} of computed code")
        for detail in paths:
            if detail in PROCESSES or detail.startswith(PROCESS_PREFIXES):
                command = node.args + [k.value for k in node.keywords if k.arg in COMMAND_KEYWORDS]
                self.process(detail, [text for part in command for text in _texts(part)], node)
        if method in KERNEL_SHELL and not paths:
            self.process(f"get_ipython().{method} (a `!`)", [first], node)
        if method in MAGICS and len(node.args) > MAGICS[method]:
            self.magic(method, node)

    def process(self, what: str, texts: list[str | None], node) -> None:
        if why := _why(texts):
            self.hit(EVERY, f"{DYNAMIC}: {what} running {why}", node)

    def magic(self, method: str, node) -> None:
        """``get_ipython().run_line_magic(name, text)`` or ``run_cell_magic(name, line, body)``."""
        name, text_node = _constant(node.args[0]), node.args[MAGICS[method]]
        text, mode = _constant(text_node), "offset" if method == "run_cell_magic" else "fixed"
        line = _constant(node.args[1]) if method == "run_cell_magic" else ""
        if name is None or name in RISKY_MAGICS:
            if text is None or "nclab" in text or "$" in text or "{" in text:
                self.hit(EVERY, f"{DYNAMIC}: the IPython magic %{name or '…'}", node)
            return
        if name in SHELL_MAGICS:
            self.process(f"the IPython magic %{name}", [line, text], node)
        walked = self.code(text, node, mode, "an IPython magic of computed text")
        if text is not None and not (walked and name in CODE_MAGICS):  # %cd nclab/ood, %%bash: a string
            self.read.discard(text_node)
            self.string(text_node, " ".join(filter(None, [line, text])))

    def code(self, text: str | None, node, mode: str, computed: str) -> bool:
        """Walk ``text``, code run by ``node`` (exec, a magic), its hits placed at ``node``'s line ("fixed") or
        past it ("offset": a cell magic's body); a hit for every exercise when the code is computed.
        Whether it was read."""
        if text is None:
            self.hit(EVERY, f"{DYNAMIC}: {computed}", node)
            return False
        try:
            tree = ast.parse(text)
        except PARSE_ERRORS:
            return False
        outer, self.place = self.place, (mode, self.line_of(node))
        try:
            self.block(tree.body)
        finally:
            self.place = outer
        return True
