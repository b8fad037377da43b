"""Image clusters: PCA + faiss K-means recover synthetic blobs; released PCA and centroids assign."""

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA, IncrementalPCA
from sklearn.metrics import adjusted_rand_score

from parrotscope.cluster import (ClusterError, ClusterModel, check_cluster, cluster_scorer, effective_pca_dim,
                                 fit_incremental_pca, fit_model, load_model, load_released, run_cluster_assign,
                                 run_cluster_fit, sample_rows, save_model)
from parrotscope.config import ConfigError
from parrotscope.vectors import write_embeddings
from parrotscope.io import KEY


def blobs(n_per: int, k: int, dim: int, seed: int, spread: float = 0.05):
    """``k`` well-separated Gaussian blobs on the unit sphere (like normalised CLIP embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(k), n_per)
    x = centres[labels] + spread * rng.normal(size=(len(labels), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def fit_blobs(x, n_clusters, pca_dim=8, **kw):
    batches = lambda: iter(np.array_split(x, 7))  # noqa: E731  (parts of uneven sizes)
    return fit_model(batches, len(x), x.shape[1], pca_dim, kw.get("pca_batch_size", 64), n_clusters,
                     niter=25, nredo=3, seed=1, max_points_per_centroid=256)


def test_pca_and_kmeans_recover_the_blobs():
    x, labels = blobs(60, 6, 32, seed=0)
    model, stats = fit_blobs(x, 6)
    assigned, dist = model.assign(x)
    assert assigned.dtype == np.int32 and dist.dtype == np.float32 and np.all(dist >= 0)
    assert adjusted_rand_score(labels, assigned) == pytest.approx(1.0)
    assert stats["pca_dim"] == 8 and stats["n_fit"] == 360 and stats["n_empty_clusters"] == 0
    # New points from the same blobs land in their blob's cluster.
    fresh, fresh_labels = blobs(10, 6, 32, seed=0)
    assert adjusted_rand_score(fresh_labels, model.assign(fresh)[0]) == pytest.approx(1.0)


def test_the_squared_distance_is_to_the_assigned_centroid_in_pca_space():
    x, _ = blobs(30, 4, 16, seed=3)
    model, _ = fit_blobs(x, 4, pca_dim=5)
    labels, dist = model.assign(x)
    z = (x - model.mean) @ model.components.T
    manual = ((z[:, None, :] - model.centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, manual.argmin(1))
    np.testing.assert_allclose(dist, manual.min(1), rtol=1e-4, atol=1e-5)


def test_incremental_pca_over_tiny_batches_matches_pca():
    x, _ = blobs(40, 5, 24, seed=2, spread=0.2)
    # 5 blobs span 4 dominant directions; 5-row batches are smaller than n_components.
    pca = fit_incremental_pca(np.array_split(x, 40), n_components=4, batch_size=16)
    reference = PCA(n_components=4).fit(x)
    np.testing.assert_allclose(pca.mean_, reference.mean_, atol=1e-5)
    # Same subspace: projecting one basis onto the other keeps (almost) its norm; incremental PCA
    # over 16-row chunks approximates (a random 4-dim subspace of 24 dims would give ~0.41).
    overlap = np.linalg.norm(pca.components_ @ reference.components_.T, axis=1)
    np.testing.assert_allclose(overlap, 1, atol=0.03)


def test_pca_dim_is_clamped_to_the_embedding_dim_and_samples():
    assert effective_pca_dim(256, 512, 10**6) == 256
    assert effective_pca_dim(256, 64, 4000) == 64      # the demo's tiny CLIP
    assert effective_pca_dim(256, 64, 24) == 24         # the tiny test config
    x, _ = blobs(10, 3, 12, seed=4)
    model, stats = fit_blobs(x, 3, pca_dim=256)
    assert stats["pca_dim_requested"] == 256 and stats["pca_dim"] == 12 and model.components.shape == (12, 12)
    with pytest.raises(ClusterError, match="pca_dim"):
        effective_pca_dim(0, 64, 10)


def test_more_clusters_than_samples_is_a_clear_error():
    x, _ = blobs(3, 2, 8, seed=5)
    with pytest.raises(ClusterError, match="n_clusters = 10 but only 6 samples"):
        fit_blobs(x, 10)


def test_released_files_assign_like_the_authors_kmeans(tmp_path):
    """The authors' format (a joblib'd IncrementalPCA + centroids.npy) and the .npz alternative."""
    import joblib

    x, labels = blobs(50, 4, 20, seed=6)
    pca = IncrementalPCA(n_components=6, batch_size=100).fit(x)
    z = pca.transform(x).astype(np.float32)
    centroids = np.stack([z[labels == c].mean(0) for c in range(4)]).astype(np.float32)
    joblib.dump(pca, tmp_path / "pca.joblib")
    np.save(tmp_path / "centroids.npy", centroids)
    np.savez(tmp_path / "pca.npz", mean=pca.mean_, components=pca.components_)
    np.savez(tmp_path / "centroids.npz", centroids=centroids)

    expected = ((z[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    for pca_file, cent_file in (("pca.joblib", "centroids.npy"), ("pca.npz", "centroids.npz")):
        model = load_released(str(tmp_path / pca_file), str(tmp_path / cent_file))
        assert model.source == "released"
        np.testing.assert_array_equal(model.assign(x)[0], expected)
        np.testing.assert_array_equal(model.assign(x)[0], labels)
    # Centroids in the embedding space itself (no PCA).
    raw = np.stack([x[labels == c].mean(0) for c in range(4)])
    np.save(tmp_path / "raw.npy", raw)
    np.testing.assert_array_equal(load_released(None, str(tmp_path / "raw.npy")).assign(x)[0], labels)
    # Embeddings of another model: refused with the reason.
    with pytest.raises(ClusterError, match="20-dimensional embeddings"):
        load_released(str(tmp_path / "pca.joblib"), str(tmp_path / "centroids.npy")).assign(x[:, :16])
    np.save(tmp_path / "bad.npy", np.zeros((4, 7), np.float32))
    with pytest.raises(ClusterError, match="not built on this PCA"):
        load_released(str(tmp_path / "pca.npz"), str(tmp_path / "bad.npy"))


def write_parts(tmp_path, x, n_parts=3):
    paths = []
    for i, rows in enumerate(np.array_split(np.arange(len(x)), n_parts)):
        path = tmp_path / f"embed/p{i:05d}.parquet"
        write_embeddings([f"k{j:04d}" for j in rows], x[rows], x[rows], path)
        paths.append(str(path))
    return paths


CFG = dict(pca_dim=256, pca_batch_size=50, n_clusters=5, niter=20, nredo=2, seed=42, max_points_per_centroid=256,
           fit_max_samples=None, released=None)


def test_stage_drivers_fit_save_and_assign_every_part(tmp_path):
    x, labels = blobs(30, 5, 16, seed=7)
    paths = write_parts(tmp_path, x)
    run_cluster_fit(paths, CFG, str(tmp_path / "model.npz"), str(tmp_path / "fit.json"))
    model = load_model(tmp_path / "model.npz")
    assert model.source == "fit" and model.pca_dim_requested == 256 and model.centroids.shape == (5, 16)
    tables = []
    for i, path in enumerate(paths):
        out = tmp_path / f"assign/p{i:05d}.parquet"
        run_cluster_assign(path, str(tmp_path / "model.npz"), str(out))
        tables.append(pd.read_parquet(out))
    assign = pd.concat(tables, ignore_index=True)
    assert list(assign.columns) == [KEY, "cluster", "distance"]
    assert str(assign["cluster"].dtype) == "int32" and str(assign["distance"].dtype) == "float32"
    assert assign[KEY].tolist() == [f"k{j:04d}" for j in range(len(x))]
    assert adjusted_rand_score(labels, assign["cluster"]) == pytest.approx(1.0)


def test_saved_model_round_trips(tmp_path):
    model = ClusterModel(mean=np.ones(3), components=np.eye(3)[:2], centroids=np.zeros((4, 2)),
                         explained_variance=[2.0, 1.0], whiten=True, source="released", pca_dim_requested=2)
    save_model(model, tmp_path / "m.npz")
    back = load_model(tmp_path / "m.npz")
    assert back.whiten and back.source == "released" and back.n_clusters == 4
    np.testing.assert_allclose(back.project(np.ones((1, 3)) * 3), [[2 / np.sqrt(2), 2.0]])


def test_fit_sample_is_seeded_uniform_and_per_part():
    rows = sample_rows([10, 0, 5], 6, seed=0)
    assert sum(len(r) for r in rows) == 6 and all(r.max(initial=-1) < n for r, n in zip(rows, [10, 0, 5]))
    assert [r.tolist() for r in rows] == [r.tolist() for r in sample_rows([10, 0, 5], 6, seed=0)]
    assert [len(r) for r in sample_rows([10, 0, 5], None, 0)] == [10, 0, 5]
    assert [len(r) for r in sample_rows([10, 0, 5], 15, 0)] == [10, 0, 5]


def test_fit_sample_is_the_same_numpy_draw_split_by_parts():
    """The rows are numpy's seeded draw over all rows, cut at the part boundaries: the sample a
    config fitted on before the split was a binary search is the sample it fits on now."""
    sizes = [0, 7, 300, 0, 1, 12000, 45]
    chosen = np.sort(np.random.default_rng(5).choice(sum(sizes), size=900, replace=False))
    bounds = np.cumsum([0, *sizes])
    want = [chosen[(chosen >= lo) & (chosen < hi)] - lo for lo, hi in zip(bounds[:-1], bounds[1:])]
    got = sample_rows(sizes, 900, seed=5)
    assert [r.tolist() for r in got] == [r.tolist() for r in want]


def test_fit_sample_memory_does_not_grow_with_the_dataset():
    """A fit sample of 10^5 from LAION-2B's 2e9 rows in 460 parts: numpy's Floyd draw and the
    split stay in a few MB (a permutation of every row would take 16 GB)."""
    import tracemalloc

    sizes = [2_000_000_000 // 460] * 460
    tracemalloc.start()
    try:
        rows = sample_rows(sizes, 100_000, seed=42)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sum(len(r) for r in rows) == 100_000 and peak < 20 * 2**20


def test_config_checks(tmp_path):
    config = {"score": {"scorers": {"ref": {}, "big": {}}}, "datasets": {"demo": {}}, "cluster": {"scorer": None}}
    assert cluster_scorer(config) == "ref"
    check_cluster(config)
    with pytest.raises(ConfigError, match="cluster.scorer: 'nope' is not one of score.scorers"):
        check_cluster({**config, "cluster": {"scorer": "nope"}})
    with pytest.raises(ConfigError, match="cluster.released.centroids"):
        check_cluster({**config, "cluster": {"released": {"pca": None, "centroids": str(tmp_path / "c.npy")}}})


def test_kmeans_settings_default_to_the_authors_and_reach_faiss(monkeypatch):
    """kmeans.py of the authors: max_points_per_centroid=200000, min_points_per_centroid=10000."""
    from pathlib import Path

    import faiss
    import yaml

    from parrotscope.cluster import fit_kmeans

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"]["cluster"]["properties"]
    assert props["max_points_per_centroid"]["default"] == 200000
    assert props["min_points_per_centroid"]["default"] == 10000
    seen = {}
    real = faiss.Kmeans

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(faiss, "Kmeans", spy)
    x = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    fit_kmeans(x, 3, niter=2, nredo=1, seed=0, max_points_per_centroid=200000, min_points_per_centroid=10000)
    assert seen["max_points_per_centroid"] == 200000 and seen["min_points_per_centroid"] == 10000
