"""parrotscope: measure and remove parrot captions from web image-text data.

The library behind the Snakemake workflow; one module per stage (``rules/<stage>.smk`` calls
``scripts/<stage>.py`` which calls ``parrotscope.<stage>``).
"""

__version__ = "0.1.0"
