"""The chaos suite: real servers and real worker processes under faults, ending in a tally read from the store.

``python -m chaos`` (``make chaos``) runs every scenario at full size and prints the tally as a table;
``tests/test_chaos.py`` runs each scenario small, so one of every fault kind is part of ``make test``.
Modules: ``house`` (servers, workers, the driver's reaper), ``tally`` (the Jepsen-style count),
``netns`` (the virtual house of network namespaces), ``scenarios`` (one function per fault) and
``chaos_job`` (the script every chaos Job runs: it records each execution in the store).
"""
