"Tests of hvitgan.diffaug: bad policies and inputs, identity, reproducibility."
import pytest
import torch

from hvitgan.core import ConfigError, make_generator
from hvitgan.diffaug import AUGMENT_OPS, DEFAULT_POLICY, LABEL_SAFE_POLICY, diff_augment, make_augment, parse_policy

torch.set_num_threads(1)


def test_unknown_op_is_named():
    with pytest.raises(ConfigError, match="unknown op 'zoom'"): parse_policy('color,zoom')


def test_unknown_op_is_refused_when_the_callable_is_built():
    with pytest.raises(ConfigError, match="unknown op 'colour'"): make_augment('colour,translation')


def test_rotate_refuses_non_square_images():
    with pytest.raises(ConfigError, match='8x6'): diff_augment(torch.zeros(1, 3, 8, 6), 'rotate')


def test_empty_policy_is_identity():
    x = torch.randn(2, 3, 8, 8)
    assert diff_augment(x, '') is x and diff_augment(x, []) is x


@pytest.mark.parametrize('policy', [DEFAULT_POLICY, LABEL_SAFE_POLICY, *AUGMENT_OPS])
def test_same_seed_same_output_and_shape(policy):
    x = torch.randn(4, 3, 16, 16, generator=make_generator(0))
    a, b = diff_augment(x, policy, make_generator(1)), diff_augment(x, policy, make_generator(1))
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == x.dtype


def test_flip_rotate_keeps_the_centre_of_uint8_patches_and_seeds():
    "The label-safe policy of the classifiers works on uint8 patches: same seed, same result; centre sums invariant."
    x = torch.randint(0, 256, (16, 3, 96, 96), dtype=torch.uint8, generator=make_generator(0))
    a, b = diff_augment(x, 'flip,rotate', make_generator(1)), diff_augment(x, 'flip,rotate', make_generator(1))
    assert torch.equal(a, b) and a.dtype == torch.uint8 and not torch.equal(a, x)
    centre = lambda t: t[:, :, 32:64, 32:64].float().sum((1, 2, 3))   # sums over the centre region are invariant
    assert torch.equal(centre(a), centre(x))
