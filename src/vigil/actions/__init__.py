"""Action kinds: what a task does inside its attempt. One module per kind.

``base`` defines the protocol, ``select`` maps a task to its action. This package
imports nothing at import time so that plan models can use its specs.
"""
