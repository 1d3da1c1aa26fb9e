"""What the operator package is; importable as ``kova.operator.about``."""

COMPONENT = "operator"
