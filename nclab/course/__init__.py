"""The course's tools, in a wing of their own beside the science: what an instructor runs, never what a
student's notebook imports.

- ``cli``: the command line, ``nclab student``, ``sync``, ``site``, ``train``, ``grade``;
- ``repository``: the course's repository named once in ``_config.yml``, the Colab badges and install cells;
- ``prepare``: a profile's runs trained outside the book (``nclab train``), a notebook executed headless;
- ``student``: the student versions of the notebooks (solutions removed);
- ``site``, ``site_assets``: the student site staged and checked for leaks, its JavaScript served offline;
- ``grading``: the grader (``nclab grade``), with its sandbox and the wire its checks call the kernel through.
"""
