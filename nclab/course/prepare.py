"""The runs of a profile prepared outside the book (``nclab train``).

:func:`prepare` runs the notebooks of a profile headless, without the book's per-cell time limit, so that
every checkpoint they need exists before ``NCLAB_PROFILE=full make book``, which then only loads them. It
resumes: the checkpoints are saved after every epoch. :func:`execute_notebook` is also how the student site
executes each notebook.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat

from .. import distributed
from ..train.loop import PROGRESS

__all__ = ["METHOD_NOTEBOOKS", "select_notebooks", "execute_notebook", "prepare"]


METHOD_NOTEBOOKS = {  # `nclab train --method NAME`: the notebook that trains that method's models
    "control": "05",  # layer-wise NC control (entropy regularisation, fixed ETF projector)
    "ncfal": "06",  # NCFAL and the invariance baselines on Colored-MNIST
    "spa": "07",  # long-tailed learning with classifier/feature alignment
    "design": "08",  # NC by design: NTCE, NONL, prototypes
}


def select_notebooks(source_dir: str | Path = "notebooks", numbers: list[str] | None = None) -> list[Path]:
    """The notebooks of ``source_dir`` in course order, or only those whose number is in ``numbers``
    ("01", "5", …); an unknown number is an error that lists the known ones."""
    paths = sorted(Path(source_dir).glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"No notebooks (*.ipynb) in {source_dir}.")
    if not numbers:
        return paths
    by_number = {path.name.split("_")[0]: path for path in paths}
    wanted = [str(number).zfill(2) for number in numbers]
    unknown = [number for number in wanted if number not in by_number]
    if unknown:
        raise ValueError(f"no notebook numbered {', '.join(unknown)} in {source_dir}; there are {', '.join(by_number)}")
    return [by_number[number] for number in dict.fromkeys(wanted)]


KERNEL_STARTS = 3  # a kernel that dies before it answers (two kernels racing for one port) is started again


def execute_notebook(path: Path, timeout: float | None = 1800, on_cell=None) -> nbformat.NotebookNode:
    """``path`` executed in a fresh kernel (working directory: its folder; ``timeout`` seconds per cell, the
    book build's limit, None for none; ``on_cell()`` after each code cell). A failing cell raises
    RuntimeError naming the notebook and the error; the checkpoints written so far are kept. A kernel that
    fails to start (before any cell ran: under torchrun two kernels can pick the same free port) is
    started again, up to ``KERNEL_STARTS`` times in all, and then the error says so."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    started = []  # filled once a kernel answers: from then on an error is the notebook's, not the start's
    for start in range(1, KERNEL_STARTS + 1):
        client = NotebookClient(
            notebook,
            kernel_name="python3",
            timeout=timeout,
            startup_timeout=180,
            record_timing=False,
            on_notebook_start=lambda notebook: started.append(True),
            on_cell_executed=(lambda cell, cell_index, execute_reply: on_cell()) if on_cell else None,
            resources={"metadata": {"path": str(path.parent)}},
        )
        try:  # a static page: one line per training run, no live bars (nclab.train.loop.PROGRESS)
            client.execute(env={**os.environ, PROGRESS: os.environ.get(PROGRESS, "final")})
            return notebook
        except CellExecutionError as error:
            raise RuntimeError(
                f"{path.name}: a cell raised {error.ename}: {error.evalue}. Fix it and rerun: training resumes "
                f"from the last saved epoch."
            ) from None
        except Exception as error:
            if started:
                raise
            if start == KERNEL_STARTS:
                raise RuntimeError(
                    f"{path.name}: the Python kernel failed to start {KERNEL_STARTS} times (last: "
                    f"{type(error).__name__}: {error}). Check that `python -m ipykernel` runs in this environment "
                    f"(make installs it) and rerun."
                ) from error


def prepare(paths: list[Path], profile: str, progress: bool = True) -> list[tuple[str, float]]:
    """Execute ``paths`` in order, each in a fresh kernel under ``NCLAB_PROFILE=profile`` and with no time
    limit per cell, discarding the outputs: whatever the notebooks train lands in the cache
    (``NCLAB_CACHE``), where the book build later finds it. A progress bar counts the code cells of all
    the notebooks and estimates the time left. Returns (notebook, seconds) per notebook; a failing cell
    raises RuntimeError naming the notebook and the error (the checkpoints written so far are kept).

    Under ``torchrun`` each process executes every notebook in its own kernel; the kernels of one notebook
    join a process group of their own (``distributed.notebook_rendezvous``) when they first train, and
    train together with DistributedDataParallel."""
    from tqdm.auto import tqdm

    total = sum(cell.cell_type == "code" for path in paths for cell in nbformat.read(path, as_version=4).cells)
    os.environ["NCLAB_PROFILE"] = profile  # inherited by every kernel started below
    times = []
    with tqdm(total=total, unit="cell", desc=f"nclab train ({profile})", disable=not progress) as bar:
        for index, path in enumerate(paths):
            if distributed.launched():  # inherited by this notebook's kernel
                os.environ[distributed.INIT_VARIABLE] = distributed.notebook_rendezvous(index)
                os.environ["TORCHELASTIC_USE_AGENT_STORE"] = "False"  # rank 0's kernel serves the rendezvous
            bar.set_postfix_str(path.name)
            start = time.perf_counter()
            execute_notebook(path, timeout=None, on_cell=lambda: bar.update(1))
            times.append((path.name, time.perf_counter() - start))
    return times
