"""The soak campaign: the real gateway under a long list of faults, watched and reported.

- ``faults``: the fault steps, each behind one interface (``FaultStep``), and the rig
  they act on;
- ``campaign``: the plans (short for the default suite, long for `make soak`) and the
  runner;
- ``sampler``: the gateway process's RSS, fds and CPU, and the store's depth and lag,
  sampled on a timer;
- ``ledger``: what was committed and what arrived, and the loss and reuse checks;
- ``trend``: the robust slope test for RSS and fds;
- ``report``: the Markdown summary and the PNG plots in ``soak-report/``.

docs/operations.md ("Soak") says how to run it and how to read the report.
"""
