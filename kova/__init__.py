"""Kova: virtual machines on bare-metal Kubernetes.

Shared code (configuration, the ``kova`` CLI, the local development stack)
lives here; the components are ``kova.operator``, ``kova.agents``,
``kova.crds`` and ``kova.placement``.
"""

__version__ = "0.1.0"
