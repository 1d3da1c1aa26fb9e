"""One Instance on this host: the reconciler and the modules it calls (build,
power, report, user data, teardown), with every decision a pure function in
:mod:`kova.agents.instance.decisions`."""
