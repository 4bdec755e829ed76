"""nclab: a hands-on course on Neural Collapse.

The package follows the course's data flow, one module per step:
config → data → models → train → features → collapse → ood → plots.
"""

__version__ = "0.1.0"
