"""nclab: a hands-on course on Neural Collapse.

The package follows the course's data flow, one module per step, and nothing imports back up the list:
config → data/ → models, heads, etf → losses → train/ (contract → loop → runs) → features → collapse, ufm,
probe → ood/, pitfalls → methods/ → tables/ → plots/ → widgets → exercises/. The method contract
(``Method``, ``Hook``, ``TrainConfig``) lives in ``train.contract``, under the loop, so a method imports it
at the top of its file. The tools an instructor needs sit in a wing of their own, ``course/`` (the CLI,
repository and badges, student versions, the site, and ``grading/`` with the sandbox and the wire), run
as ``nclab student`` / ``nclab grade`` / ``nclab train``.
"""

__version__ = "0.2.0"
