"""nclab: a hands-on course on Neural Collapse.

The package follows the course's data flow, one module per step:
config → data/ → models, heads, etf → losses → checkpoints, train → features → stats, collapse, ufm → ood →
tables → methods/ → plots → widgets → exercises/, and the course's tools: ``student`` (student versions
of the notebooks) and ``grade`` (the grader), both run as ``nclab student`` / ``nclab grade``.
``methods/`` opens with the contract every method follows (``Method``, ``Hook``), which ``train`` reads.
"""

__version__ = "0.2.0"
