"""OpenCLIP's trainer with a reproducible sample shuffle: ``python -m parrotscope.openclip_main ARGV``.

open_clip_train builds its webdataset pipeline with ``wds.shuffle(bufsize, initial)`` and no random
generator, and webdataset then seeds one from the clock and the process id: two runs with the same
``--seed`` see their samples in different orders and train different models (and every table the
model scores or selects follows). Here ``wds.shuffle`` gets a generator seeded from OpenCLIP's own
worker seed (derived from ``--seed``, the rank and the dataloader worker) and the number of shuffles
this process has started (one per epoch); everything else is OpenCLIP's ``main`` unchanged. Works
under torchrun too (``-m parrotscope.openclip_main``).
"""

from __future__ import annotations

import itertools
import random
import sys

import webdataset
from webdataset import filters

_shuffles_started = itertools.count()


def _seeded_shuffle(data, bufsize=1000, initial=100, rng=None, handler=None):
    """webdataset's shuffle; without an explicit ``rng``, one seeded reproducibly."""
    if rng is None:
        from open_clip_train.data import pytorch_worker_seed

        # Both parts in the seed: outside a dataloader worker OpenCLIP's seed ignores the increment.
        rng = random.Random(f"{pytorch_worker_seed()}:{next(_shuffles_started)}")
    return filters._shuffle(data, bufsize=bufsize, initial=initial, rng=rng, handler=handler)


def seed_webdataset_shuffle() -> None:
    """Replace ``webdataset.shuffle`` (what OpenCLIP calls) by the seeded one."""
    seeded = filters.pipelinefilter(_seeded_shuffle)
    webdataset.shuffle = seeded
    filters.shuffle = seeded


def main(argv: list[str]) -> None:
    seed_webdataset_shuffle()
    from open_clip_train.main import main as openclip_main

    openclip_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
