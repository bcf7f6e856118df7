"The HViTGAN networks: build-time validation (one test per bad size), interfaces, the GP double backward, 32 and 96 px."
import json

import pytest
import torch

from hvitgan.attention import Attention, Transformer
from hvitgan.core import ConfigError
from hvitgan.discriminator import DISCRIMINATOR_SIZES, Discriminator, build_discriminator
from hvitgan.generator import GENERATOR_SIZES, Generator, build_generator


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- bad input: each names the argument ----

def test_g_window_not_dividing_map():
    with pytest.raises(ConfigError, match=r'windows\[2\]=32 .*stage-3 map side 48'):
        build_generator('paper', windows=[None, None, 32, 16])

def test_g_heads_not_dividing_width():
    with pytest.raises(ConfigError, match=r'heads\[1\]=3'): build_generator('tiny', heads=[2, 3, 2, 1])

def test_g_resolution_not_matching_stages():
    with pytest.raises(ConfigError, match='img_resolution=40'): build_generator('tiny', img_resolution=40)

def test_g_resolution_not_matching_bottom_width():
    with pytest.raises(ConfigError, match='img_resolution=48'): build_generator('tiny', img_resolution=48, bottom_width=2)

def test_g_z_dim_not_splitting_into_chunks():
    with pytest.raises(ConfigError, match='z_dim=30'): build_generator('tiny', z_dim=30)

def test_g_dim_not_divisible_by_pixel_shuffles():
    with pytest.raises(ConfigError, match='dim=96'): build_generator('tiny', dim=96)

def test_g_list_lengths_differ():
    with pytest.raises(ConfigError, match='heads='): build_generator('tiny', heads=[2, 2, 2])

def test_g_bad_stage_norm():
    with pytest.raises(ConfigError, match="stage_norm='bn'"): build_generator('tiny', cond_proj=False, stage_norm='bn')

def test_g_bad_attention_impl():
    with pytest.raises(ConfigError, match="impl='flash'"): build_generator('tiny', attention='flash')

def test_unknown_size():
    with pytest.raises(ConfigError, match="size='huge'"): build_generator('huge')
    with pytest.raises(ConfigError, match="size='huge'"): build_discriminator('huge')

def test_d_resolution_not_matching_patches():
    with pytest.raises(ConfigError, match='img_resolution=48'): build_discriminator('tiny', img_resolution=48)

def test_d_heads_not_dividing_width():
    with pytest.raises(ConfigError, match=r'heads\[1\]=5'): build_discriminator('tiny', heads=[2, 5, 2, 2])

def test_d_window_not_dividing_grid():
    with pytest.raises(ConfigError, match=r'windows\[0\]=3'): build_discriminator('tiny', windows=[3, None, None])

def test_d_embed_dims_length():
    with pytest.raises(ConfigError, match='embed_dims='): build_discriminator('tiny', embed_dims=[32, 16])

def test_attention_heads_not_dividing():
    with pytest.raises(ConfigError, match='heads=3'): Attention(8, heads=3)

def test_transformer_window_not_dividing():
    with pytest.raises(ConfigError, match='window=4'): Transformer(8, 1, 2, map_size=6, window=4)

def test_g_wrong_latent_shape():
    G = build_generator('tiny')
    with pytest.raises(AssertionError, match='expected'): G(torch.zeros(2, 31), torch.zeros(2, dtype=torch.long))

def test_d_wrong_image_shape():
    D = build_discriminator('tiny')
    with pytest.raises(AssertionError, match='expected'): D(torch.zeros(2, 3, 16, 16))


# ---- interfaces ----

@pytest.mark.parametrize('size', ['tiny', 'small'])
@pytest.mark.parametrize('res', [32, 96])
def test_shapes_at_32_and_96(size, res):
    torch.manual_seed(0)
    G, D = build_generator(size, img_resolution=res), build_discriminator(size, img_resolution=res)
    img = G(torch.randn(2, G.z_dim), torch.tensor([0, 1]))
    assert img.shape == (2, 3, res, res)
    scores, logits = D(img.clamp(-1, 1))
    assert scores.shape == (2,) and logits.shape == (2, 2)

def test_init_kwargs_json_round_trip():
    torch.manual_seed(0)
    for net in (build_generator('tiny'), build_discriminator('tiny')):
        kw = json.loads(json.dumps(net.init_kwargs))
        assert kw == net.init_kwargs
        copy = type(net)(**kw)
        copy.load_state_dict(net.state_dict())

def test_network_sizes_table():
    assert sorted(GENERATOR_SIZES) == sorted(DISCRIMINATOR_SIZES) == ['cpu', 'paper', 'small', 'tiny']
    for size in DISCRIMINATOR_SIZES:
        with torch.device('meta'):
            G, D = Generator(**GENERATOR_SIZES[size]), Discriminator(**DISCRIMINATOR_SIZES[size])
        assert G.img_resolution == D.img_resolution == (32 if size in ('tiny', 'cpu') else 96)

def test_gradient_penalty_double_backward():
    torch.manual_seed(0)
    D = build_discriminator('tiny')
    x = (torch.rand(3, 3, 32, 32) * 2 - 1).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x)[0].sum(), x, create_graph=True)
    ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean().backward()
    assert D.levels[0].blocks[0].attn.to_qkv.weight.grad.abs().sum() > 0

def test_predict_proba_is_clean():
    torch.manual_seed(0)
    D = build_discriminator('tiny').train()
    x = torch.randn(4, 3, 32, 32) * 3
    p = D.predict_proba(x)
    assert D.training and not p.requires_grad
    torch.testing.assert_close(p.sum(1), torch.ones(4))
    torch.testing.assert_close(p, D.predict_proba(x.clamp(-1, 1)))

@pytest.mark.parametrize('cond_proj', [True, False])
def test_label_changes_image(cond_proj):
    torch.manual_seed(0)
    G = build_generator('tiny', cond_proj=cond_proj)
    img = G(torch.randn(1, G.z_dim).expand(2, -1), torch.tensor([0, 1]))
    assert (img[0] - img[1]).abs().max() > 1e-4
