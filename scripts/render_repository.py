#!/usr/bin/env python3
"""Render a deployment profile into a Triton model repository: `render_repository.py --profile cpu --out DIR`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stack.cli import app  # noqa: E402

if __name__ == "__main__":
    app(["render", *sys.argv[1:]])
