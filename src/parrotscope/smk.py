"""Glue between Snakemake's ``script:`` directive and the library.

Scripts stay thin: they enter :func:`log_to_file` and call one library function. Nothing here
imports Snakemake, so the library stays usable (and testable) without it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from typing import Iterator


@contextlib.contextmanager
def log_to_file(snakemake) -> Iterator[None]:
    """Send stdout, stderr and the ``logging`` root logger to the rule's ``log:`` file.

    A traceback is written to the log before re-raising, so a failed job's log tells why.
    """
    if not snakemake.log:
        yield
        return
    with open(snakemake.log[0], "w", buffering=1) as fh:
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = fh
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            yield
        except BaseException:
            traceback.print_exc(file=fh)
            raise
        finally:
            root.removeHandler(handler)
            sys.stdout, sys.stderr = old_out, old_err
