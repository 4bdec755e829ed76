"""The keys: what in nclab computes each exercise's answer (its ``references`` and its own ``reference``),
and what a dotted name written in a submission stands for, so that two paths to one object are one key
(``nclab.ood.detectors.Energy`` is ``nclab.ood.Energy``)."""

from __future__ import annotations

import functools
import importlib
import sys

from ... import exercises

__all__ = ["keys", "MISSING", "object_at", "key_label"]


def _import(dotted: str):
    """The object named ``dotted`` (a name of the exercise tables, never a student's), imported."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            found = getattr(found, part)
        return found
    raise ImportError(dotted)


@functools.cache
def keys(question: str) -> tuple[tuple[object, str], ...]:
    """((object, its name), …) that compute exercise ``question``'s answer: its ``references`` and its own
    ``reference``; ValueError naming the exercise when a reference names nothing in nclab."""
    exercise = exercises.EXERCISES[question]
    if not isinstance(exercise.references, tuple) or not all(isinstance(n, str) for n in exercise.references):
        raise ValueError(
            f"exercise {question}: `references` must be a tuple of dotted names, got {exercise.references!r}"
        )
    found = []
    for name in exercise.references:
        try:
            found.append((_import(name), name))
        except (ImportError, AttributeError):
            raise ValueError(f"exercise {question} names the reference {name}, which nclab does not have") from None
    if exercise.reference is not None:
        reference = exercise.reference
        found.append((reference, f"{reference.__module__}.{reference.__qualname__} (the exercise's stand-in)"))
    return tuple(found)


MISSING = object()


def object_at(dotted: str):
    """What ``dotted`` (written in a submission) stands for among the nclab modules already imported, or
    MISSING; no module is imported and no dunder attribute read for a name a student wrote."""
    parts = dotted.split(".")
    if parts[0] != "nclab" or any(part.startswith("__") for part in parts):
        return MISSING
    found = sys.modules.get("nclab", MISSING)
    for index, part in enumerate(parts[1:], 2):
        try:
            found = getattr(found, part)
        except Exception:
            found = sys.modules.get(".".join(parts[:index]), MISSING)
        if found is MISSING:
            return MISSING
    return found


def key_label(found, path: str, question: str) -> str | None:
    """The name of ``question``'s key that ``found`` (at ``path``) is, holds or subclasses; None if none."""
    for key, name in keys(question):
        if found is key:
            return name
        if isinstance(found, type) and isinstance(key, type) and issubclass(found, key):
            return f"{path} (a subclass of {name})"
        if isinstance(found, (dict, list, tuple, set, frozenset)) and len(found) < 10_000:
            values = found.values() if isinstance(found, dict) else found
            if any(value is key for value in values):
                return f"{path} (holds {name})"
    return None
