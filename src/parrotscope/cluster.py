"""Stage ``cluster``: image clusters, as the paper built them (Sec. 3, Fig. 3; supplement Sec. 11).

The authors reduced CLIP ViT-B-32 image embeddings from 512 to 256 dimensions with scikit-learn's
``IncrementalPCA`` and ran faiss K-means (4,000 clusters, 300 iterations, 10 restarts keeping the
best, seed 42) on the reduced features; every image then belongs to its nearest centroid (squared
Euclidean distance in the PCA space). Their ``kmeans.py`` saves the PCA with joblib
(``pca.joblib``) and the centroids as ``centroids.npy``.

Two ways to get a model:

* **fit** (:func:`fit_model`) on a seeded uniform sample of at most ``fit_max_samples`` of this
  dataset's image embeddings (the ``embed`` stage), as the authors fitted on a LAION-400M subset:
  the fit holds its sample in memory, so the bound, not the dataset, sets its memory;
* **released** (:func:`load_released`): someone's PCA and centroids from local files, so a dataset
  can be assigned to the same clusters as theirs. Accepted files:

  - PCA: a fitted scikit-learn ``PCA``/``IncrementalPCA`` saved with joblib (``.joblib``/``.pkl``,
    the authors' format; unpickling runs code, so load only files you trust), or an ``.npz`` with
    ``mean`` (D,), ``components`` (k, D) and optionally ``explained_variance`` (k,) and ``whiten``;
    or none (``pca: null``): the centroids live in the embedding space itself.
  - centroids: ``.npy`` (K, k) (the authors' format) or an ``.npz`` with ``centroids``.

**PCA dimension.** ``pca_dim`` (256, as the authors) cannot exceed the embedding dimension nor the
number of fitted samples; it is clamped to ``min(pca_dim, dim, n_samples)`` and the dimension used
is recorded in the model and the fit summary. The demo's tiny CLIP embeds in 64 dimensions, so
there the PCA is a rotation that keeps every dimension.

The model file (``model.npz``) holds ``mean`` (D,), ``components`` (k, D), ``explained_variance``
(k,), ``whiten`` (bool), ``centroids`` (K, k), ``source`` ("fit" or "released") and
``pca_dim_requested``. Assignments per part: ``__key__``, ``cluster`` (int32) and ``distance``
(float32, squared Euclidean distance to the centroid in the PCA space, faiss's convention).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import pandas as pd
from tqdm import tqdm

from .io import KEY, atomic_path, write_json, write_parquet
from .vectors import embedding_rows, read_embeddings

log = logging.getLogger(__name__)

ASSIGN_COLUMNS = (KEY, "cluster", "distance")


class ClusterError(ValueError):
    """A clustering input or setting that cannot work, with what to change."""


@dataclass
class ClusterModel:
    """A PCA projection followed by nearest-centroid assignment."""

    mean: np.ndarray                # (D,) embedding mean removed before projecting
    components: np.ndarray          # (k, D) principal axes, rows
    centroids: np.ndarray           # (K, k) K-means centroids in the PCA space
    explained_variance: np.ndarray  # (k,) variance along each axis (empty if unknown)
    whiten: bool = False            # divide by sqrt(explained_variance) after projecting
    source: str = "fit"
    pca_dim_requested: int = -1

    def __post_init__(self):
        self.mean = np.asarray(self.mean, np.float32).reshape(-1)
        self.components = np.atleast_2d(np.asarray(self.components, np.float32))
        self.centroids = np.ascontiguousarray(np.atleast_2d(np.asarray(self.centroids, np.float32)))
        self.explained_variance = np.asarray(self.explained_variance, np.float32).reshape(-1)
        k, d = self.components.shape
        if self.mean.shape != (d,):
            raise ClusterError(f"PCA mean has {self.mean.size} dimensions but the components {d}")
        if self.centroids.shape[1] != k:
            raise ClusterError(f"centroids have {self.centroids.shape[1]} dimensions but the PCA projects "
                               f"to {k}: they were not built on this PCA")
        if self.whiten and self.explained_variance.shape != (k,):
            raise ClusterError("a whitening PCA needs its explained_variance (one value per component)")

    @property
    def input_dim(self) -> int:
        return self.components.shape[1]

    @property
    def n_clusters(self) -> int:
        return self.centroids.shape[0]

    def project(self, x: np.ndarray) -> np.ndarray:
        """Embeddings (n, D) -> PCA features (n, k), float32."""
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ClusterError(f"the cluster model takes {self.input_dim}-dimensional embeddings, got shape "
                               f"{x.shape}: the PCA and centroids come from another embedding model than "
                               f"the configured cluster.scorer")
        z = (x - self.mean) @ self.components.T
        if self.whiten:
            z /= np.sqrt(np.maximum(self.explained_variance, np.finfo(np.float32).tiny))
        return np.ascontiguousarray(z, dtype=np.float32)

    def assign(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid of each embedding: ``(cluster int32, squared distance float32)``."""
        return nearest_centroid(self.centroids, self.project(x))


def nearest_centroid(centroids: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest centroid (faiss flat L2 index): ``(label int32, squared distance float32)``."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    distances, labels = index.search(np.ascontiguousarray(z, np.float32), 1)
    return labels[:, 0].astype(np.int32), distances[:, 0].astype(np.float32)


def save_model(model: ClusterModel, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, mean=model.mean, components=model.components, centroids=model.centroids,
                     explained_variance=model.explained_variance, whiten=np.bool_(model.whiten),
                     source=np.str_(model.source), pca_dim_requested=np.int64(model.pca_dim_requested))


def load_model(path: str | os.PathLike) -> ClusterModel:
    with np.load(path, allow_pickle=False) as z:
        return ClusterModel(mean=z["mean"], components=z["components"], centroids=z["centroids"],
                            explained_variance=z["explained_variance"], whiten=bool(z["whiten"]),
                            source=str(z["source"]), pca_dim_requested=int(z["pca_dim_requested"]))


# ----------------------------------------------------------------------------------------------
# Fitting


def effective_pca_dim(requested: int, dim: int, n_samples: int) -> int:
    """The PCA dimension used: ``requested`` clamped to the embedding dim and the sample count."""
    if requested < 1:
        raise ClusterError(f"cluster.pca_dim must be >= 1, got {requested}")
    return int(min(requested, dim, n_samples))


def fit_incremental_pca(batches: Iterable[np.ndarray], n_components: int, batch_size: int):
    """scikit-learn ``IncrementalPCA`` fitted on a stream of embedding batches of any sizes.

    ``partial_fit`` needs at least ``n_components`` rows per call, while parts may be tiny; rows
    are regrouped into chunks of ``batch_size`` and a chunk is fitted only while at least
    ``n_components`` rows remain behind it, so the last call is never too small.
    """
    from sklearn.decomposition import IncrementalPCA

    batch_size = max(batch_size, n_components)
    pca = IncrementalPCA(n_components=n_components, batch_size=batch_size)
    pending: list[np.ndarray] = []
    n_pending = 0
    for x in batches:
        pending.append(np.asarray(x, np.float32))
        n_pending += len(x)
        if n_pending >= batch_size + n_components:
            rows = np.concatenate(pending)
            while len(rows) >= batch_size + n_components:
                pca.partial_fit(rows[:batch_size])
                rows = rows[batch_size:]
            pending, n_pending = [rows], len(rows)
    if n_pending:
        rows = np.concatenate(pending)
        if len(rows) < n_components:  # only when the whole stream is smaller than n_components
            raise ClusterError(f"PCA to {n_components} dimensions needs at least that many samples, got {len(rows)}")
        pca.partial_fit(rows)
    if not hasattr(pca, "components_"):
        raise ClusterError("no embeddings to fit the PCA on")
    return pca


def fit_kmeans(x: np.ndarray, n_clusters: int, niter: int, nredo: int, seed: int,
               max_points_per_centroid: int, threads: int = 1, min_points_per_centroid: int = 39) -> np.ndarray:
    """faiss K-means centroids (K, k) of ``x``; ``nredo`` restarts, the best objective kept."""
    import faiss

    x = np.ascontiguousarray(x, np.float32)
    if len(x) < n_clusters:
        raise ClusterError(f"cluster.n_clusters = {n_clusters} but only {len(x)} samples to fit on: "
                           f"lower cluster.n_clusters (or raise cluster.fit_max_samples)")
    faiss.omp_set_num_threads(max(1, int(threads)))
    kmeans = faiss.Kmeans(x.shape[1], n_clusters, niter=niter, nredo=nredo, seed=seed, verbose=False,
                          max_points_per_centroid=max_points_per_centroid,
                          min_points_per_centroid=min_points_per_centroid)
    kmeans.train(x)
    return np.asarray(kmeans.centroids, np.float32).reshape(n_clusters, x.shape[1])


def pca_model(pca, centroids: np.ndarray, source: str, requested: int) -> ClusterModel:
    """A :class:`ClusterModel` from a fitted scikit-learn PCA (or IncrementalPCA) and centroids."""
    return ClusterModel(mean=pca.mean_, components=pca.components_, centroids=centroids,
                        explained_variance=getattr(pca, "explained_variance_", np.empty(0)),
                        whiten=bool(getattr(pca, "whiten", False)), source=source, pca_dim_requested=requested)


def fit_model(x_batches, n_samples: int, dim: int, pca_dim: int, pca_batch_size: int, n_clusters: int,
              niter: int, nredo: int, seed: int, max_points_per_centroid: int, threads: int = 1,
              min_points_per_centroid: int = 39
              ) -> tuple[ClusterModel, dict]:
    """PCA then K-means, as the authors. ``x_batches()`` returns a fresh iterator over the fit
    embeddings each call (two passes: fit the PCA, then project for K-means)."""
    k = effective_pca_dim(pca_dim, dim, n_samples)
    if k < pca_dim:
        log.warning("cluster.pca_dim = %d clamped to %d (embedding dim %d, %d samples)", pca_dim, k, dim, n_samples)
    pca = fit_incremental_pca(x_batches(), k, pca_batch_size)
    z = np.concatenate([pca.transform(x).astype(np.float32) for x in x_batches() if len(x)])
    log.info("PCA %d -> %d dims keeps %.1f%% of the variance; K-means K=%d on %d samples (niter %d, nredo %d)",
             dim, k, 100 * float(np.sum(pca.explained_variance_ratio_)), n_clusters, len(z), niter, nredo)
    centroids = fit_kmeans(z, n_clusters, niter, nredo, seed, max_points_per_centroid, threads,
                           min_points_per_centroid)
    model = pca_model(pca, centroids, "fit", pca_dim)
    labels, dist = nearest_centroid(centroids, z)
    sizes = np.bincount(labels, minlength=n_clusters)
    stats = {"source": "fit", "n_fit": int(len(z)), "embedding_dim": int(dim), "pca_dim_requested": int(pca_dim),
             "pca_dim": int(k), "explained_variance_ratio": float(np.sum(pca.explained_variance_ratio_)),
             "n_clusters": int(n_clusters), "niter": int(niter), "nredo": int(nredo), "seed": int(seed),
             "objective": float(dist.astype(np.float64).sum()), "n_empty_clusters": int((sizes == 0).sum()),
             "fit_cluster_sizes": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max())}}
    return model, stats


def sample_rows(part_sizes: list[int], max_samples: int | None, seed: int) -> list[np.ndarray]:
    """Per part, the row numbers in a seeded uniform sample of ``max_samples`` rows over all parts
    (every row when ``max_samples`` is None or not smaller than the total).

    Memory is O(max_samples), never O(total rows): numpy's ``choice(total, size, replace=False)``
    runs Floyd's algorithm (a hash set of about twice ``size``) when ``size <= total / 50`` and
    shuffles the tail of ``arange(total)`` only otherwise, that is when ``total < 50 x size`` (or
    total <= 10,000) (numpy's ``_generator.pyx``; measured with numpy 2.3: 1e6 of 2e9 rows peak at 25 MiB, 4e7 of
    2e9 at 820 MiB, 3e6 of 1e8 at 790 MiB). The split into parts is a binary search of the sorted
    row numbers, O(size + parts).
    """
    total = int(sum(part_sizes))
    if max_samples is None or max_samples >= total:
        return [np.arange(n) for n in part_sizes]
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=max_samples, replace=False))
    bounds = np.cumsum([0, *part_sizes])
    cuts = np.searchsorted(chosen, bounds)
    return [chosen[a:b] - lo for a, b, lo in zip(cuts[:-1], cuts[1:], bounds[:-1])]


def fit_from_parts(embed_paths: list[str], cfg: Mapping, threads: int = 1) -> tuple[ClusterModel, dict]:
    """Fit on the image embeddings of the given embed tables (see :func:`fit_model`)."""
    sizes = [embedding_rows(p) for p in embed_paths]
    rows = sample_rows(sizes, cfg.get("fit_max_samples"), cfg["seed"])
    n_samples = int(sum(len(r) for r in rows))
    if n_samples == 0:
        raise ClusterError("no embedded samples to cluster")

    def batches() -> Iterator[np.ndarray]:
        for path, keep in tqdm(list(zip(embed_paths, rows)), desc="read embeddings", unit="part", file=sys.stderr):
            if len(keep):
                yield read_embeddings(path, ("image_emb",))[1]["image_emb"][keep]

    first = next(p for p, r in zip(embed_paths, rows) if len(r))
    dim = read_embeddings(first, ("image_emb",))[1]["image_emb"].shape[1]
    model, stats = fit_model(batches, n_samples, dim, cfg["pca_dim"], cfg["pca_batch_size"], cfg["n_clusters"],
                             cfg["niter"], cfg["nredo"], cfg["seed"], cfg["max_points_per_centroid"], threads,
                             cfg.get("min_points_per_centroid", 39))
    stats["n_embedded"] = int(sum(sizes))
    return model, stats


# ----------------------------------------------------------------------------------------------
# Released models


def _load_pca(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    suffix = Path(path).suffix.lower()
    if suffix in (".joblib", ".pkl", ".pickle"):
        import joblib

        pca = joblib.load(path)
        for attr in ("mean_", "components_"):
            if not hasattr(pca, attr):
                raise ClusterError(f"cluster.released.pca {path}: not a fitted scikit-learn PCA (no {attr})")
        return pca.mean_, pca.components_, getattr(pca, "explained_variance_", np.empty(0)), bool(
            getattr(pca, "whiten", False))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            missing = {"mean", "components"} - set(z.files)
            if missing:
                raise ClusterError(f"cluster.released.pca {path}: missing array(s) {sorted(missing)}; "
                                   f"expected mean (D,), components (k, D)")
            var = z["explained_variance"] if "explained_variance" in z.files else np.empty(0)
            return z["mean"], z["components"], var, bool(z["whiten"]) if "whiten" in z.files else False
    raise ClusterError(f"cluster.released.pca {path}: expected a .joblib/.pkl scikit-learn PCA or an .npz "
                       f"with mean and components")


def _load_centroids(path: str) -> np.ndarray:
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "centroids" not in z.files:
                raise ClusterError(f"cluster.released.centroids {path}: no array named centroids (has {z.files})")
            return z["centroids"]
    raise ClusterError(f"cluster.released.centroids {path}: expected .npy (K, k) or .npz with centroids")


def load_released(pca_path: str | None, centroids_path: str) -> ClusterModel:
    """A model from released files (see the module docstring for the formats)."""
    centroids = np.asarray(_load_centroids(centroids_path), np.float32)
    if centroids.ndim != 2:
        raise ClusterError(f"cluster.released.centroids {centroids_path}: expected a (K, k) matrix, "
                           f"got shape {centroids.shape}")
    if pca_path is None:
        k = centroids.shape[1]
        mean, components, var, whiten = np.zeros(k), np.eye(k), np.empty(0), False
    else:
        mean, components, var, whiten = _load_pca(pca_path)
    return ClusterModel(mean=mean, components=components, centroids=centroids, explained_variance=var,
                        whiten=whiten, source="released", pca_dim_requested=int(np.atleast_2d(components).shape[0]))


# ----------------------------------------------------------------------------------------------
# Stage drivers


def run_cluster_fit(embed_paths: list[str], cfg: Mapping, out_model: str, out_stats: str, threads: int = 1) -> None:
    """Fit (or load the released) model and write it with a summary JSON."""
    released = cfg.get("released")
    if released:
        model = load_released(released.get("pca"), released["centroids"])
        dim = read_embeddings(embed_paths[0], ("image_emb",))[1]["image_emb"].shape[1] if embed_paths else None
        if dim is not None and dim != model.input_dim:
            raise ClusterError(f"cluster.released: the PCA takes {model.input_dim}-dimensional embeddings but "
                               f"cluster.scorer embeds in {dim}: use the scorer the released files were built "
                               f"with (the authors': OpenAI CLIP ViT-B-32, 512 dims)")
        stats = {"source": "released", "pca": released.get("pca"), "centroids": released["centroids"],
                 "embedding_dim": model.input_dim, "pca_dim": int(model.components.shape[0]),
                 "n_clusters": model.n_clusters}
    else:
        model, stats = fit_from_parts(embed_paths, cfg, threads)
    save_model(model, out_model)
    write_json(stats, out_stats)


def assign_table(model: ClusterModel, keys: np.ndarray, x: np.ndarray) -> pd.DataFrame:
    labels, distances = model.assign(x) if len(keys) else (np.empty(0, np.int32), np.empty(0, np.float32))
    return pd.DataFrame({KEY: pd.Series(list(keys), dtype=object), "cluster": labels, "distance": distances})


def run_cluster_assign(embed_path: str, model_path: str, out_path: str) -> None:
    """Assign one part's embedded samples to their nearest centroid."""
    import pyarrow as pa

    keys, emb = read_embeddings(embed_path, ("image_emb",))
    table = assign_table(load_model(model_path), keys, emb["image_emb"])
    schema = pa.schema([(KEY, pa.string()), ("cluster", pa.int32()), ("distance", pa.float32())])
    write_parquet(table, out_path, schema=schema)


# ----------------------------------------------------------------------------------------------
# Configuration


def cluster_scorer(config: Mapping) -> str:
    """The scorer whose embeddings are clustered: ``cluster.scorer``, by default the first scorer."""
    name = (config.get("cluster") or {}).get("scorer")
    return name or next(iter(config["score"]["scorers"]))


def check_cluster(config: Mapping) -> None:
    """Relations the schema cannot express, checked when the workflow is planned."""
    from .config import ConfigError

    cfg = config.get("cluster") or {}
    name = cluster_scorer(config)
    if name not in config["score"]["scorers"]:
        raise ConfigError(f"config cluster.scorer: {name!r} is not one of score.scorers "
                          f"{sorted(config['score']['scorers'])}")
    released = cfg.get("released")
    if released:
        for key in ("pca", "centroids"):
            path = released.get(key)
            if path is not None and not os.path.isfile(path):
                raise ConfigError(f"config cluster.released.{key}: file {path!r} not found")
