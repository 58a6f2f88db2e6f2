"""The ``worldstate`` command: ``inspect`` (operators) and ``simulate`` (a demo mesh)."""
