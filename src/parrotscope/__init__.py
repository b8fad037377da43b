"""parrotscope: measure and remove parrot captions from web image-text data.

The library behind the Snakemake workflow; one module per stage (``rules/<stage>.smk`` calls
``scripts/<stage>.py`` which calls ``parrotscope.<stage>``).
"""

import os

# OpenMP threads spin while they wait by default; with another job on the same cores that made
# torch 10-40x slower here. Must be set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
