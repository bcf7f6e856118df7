"Tests of hvitgan.scores: the classification metrics of Table 1, their summary over seeds, t-SNE and the silhouette."
import numpy as np
import pytest

from hvitgan import scores as S


def test_auc_perfect_reversed_constant():
    y = [0, 0, 1, 1]
    assert S.classification_metrics(y, [0.1, 0.2, 0.8, 0.9])['auc'] == 1.0
    assert S.classification_metrics(y, [0.9, 0.8, 0.2, 0.1])['auc'] == 0.0
    assert S.classification_metrics(y, [0.5] * 4)['auc'] == 0.5


def test_rates_against_sklearn():
    from sklearn.metrics import recall_score
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 200), rng.random(200)
    m = S.classification_metrics(y, p)
    assert m['sensitivity'] == pytest.approx(recall_score(y, p >= 0.5))
    assert m['specificity'] == pytest.approx(recall_score(1 - y, p < 0.5))


def test_bad_labels_raise():
    with pytest.raises(S.MetricError, match='y_true'): S.classification_metrics([0, 3], [0.2, 0.4])


def test_bad_probabilities_raise():
    with pytest.raises(S.MetricError, match='p1'): S.classification_metrics([0, 1], [0.2, np.nan])


def test_length_mismatch_raises():
    with pytest.raises(S.MetricError, match='lengths'): S.classification_metrics([0, 1, 1], [0.2, 0.4])


def test_summarize_mean_std():
    s = S.summarize([dict(auc=0.8), dict(auc=0.9), dict(auc=1.0)])
    assert s['auc'][0] == pytest.approx(0.9) and s['auc'][1] == pytest.approx(0.1)


def test_tsne_and_silhouette():
    rng = np.random.default_rng(0)
    x, lab = np.concatenate([rng.normal(0, 1, (15, 6)), rng.normal(8, 1, (15, 6))]), np.repeat([0, 1], 15)
    e = S.tsne_embed(x, seed=1)
    np.testing.assert_allclose(S.tsne_embed(x, seed=1), e)
    assert e.shape == (30, 2) and S.silhouette(x, lab) > 0.5
