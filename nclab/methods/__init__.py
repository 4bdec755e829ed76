"""The source methods, one small module each, plugged into the one training loop of ``nclab.train``.

A method module brings what differs from plain cross-entropy training and nothing else:

- a :class:`nclab.train.Method` (``Method(name, params, build_model=…, loss=…, hooks=…)``), whose name and
  hyperparameters enter the run key, so that two runs that differ only there never share a checkpoint;
- a head (``nclab.heads``) through its model builder, a loss ``(out, y) → scalar`` (``nclab.losses``)
  and/or hooks (:class:`nclab.train.Hook`: after backward, after the optimiser step, at the end of an
  epoch, with a checkpointed state);
- the method's own data sets go to ``nclab.data``, its tables to ``nclab.tables``.

A method that needs the loop to do something new changes the loop's contract once, for every method,
with a test; it never copies ``fit``.
"""
