"Tests of hvitgan.losses: bad scenario and weight configurations, and the scenario step on the tiny networks."
import pytest
import torch

from hvitgan.core import ConfigError, make_generator
from hvitgan.discriminator import build_discriminator
from hvitgan.generator import build_generator
from hvitgan.losses import (SCENARIOS, HViTGANLoss, LossWeights, Scenario, get_scenario, gradient_penalty,
                            make_loss_weights)

torch.set_num_threads(1)


def test_unknown_scenario_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown loss scenario 'h'.*ours_cp_sa"): get_scenario('h')


def test_scenario_with_unknown_weighting():
    with pytest.raises(ConfigError, match="weighting 'sum'"): Scenario('x', 'x', 'x', 'sum', False, False, 'x')


def test_scenario_with_bad_sigma_clamp():
    with pytest.raises(ConfigError, match='sigma_clamp'): Scenario('x', 'x', 'x', 'ours', False, False, 'x', sigma_clamp=(5., -5.))


def test_scenario_with_unknown_kendall_param():
    with pytest.raises(ConfigError, match="kendall_param 'log'"): Scenario('x', 'x', 'x', 'kendall', False, False, 'x', kendall_param='log')


def test_loss_weights_with_unknown_kind():
    with pytest.raises(ConfigError, match="kind 'tau'"): LossWeights(('Gcls',), kind='tau')


def test_weights_that_do_not_match_the_scenario():
    wG, wD = make_loss_weights('b')
    with pytest.raises(ConfigError, match=r"weights_G: holds \('Gadv', 'Gcls'\)"):
        HViTGANLoss(build_discriminator('tiny'), 'd', wG, wD)


def test_gradient_penalty_of_a_linear_critic():
    w = torch.randn(3, 4, 4, generator=make_generator(0))
    real, gen = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    gp = gradient_penalty(lambda x: (x * w).flatten(1).sum(1), real, gen)
    assert torch.isclose(gp, (w.norm() - 1) ** 2, rtol=1e-5)


@pytest.mark.parametrize('name', list(SCENARIOS))
def test_scenario_steps_on_tiny_networks(name):
    s, g = get_scenario(name), make_generator(0)
    torch.manual_seed(0)
    G, D = build_generator('tiny', cond_proj=s.cond_proj), build_discriminator('tiny')
    wG, wD = make_loss_weights(s)
    loss = HViTGANLoss(D, s, wG, wD, augment=lambda x: x.flip(3), generator=g)
    real, c = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.tensor([0, 1])
    z = torch.randn(2, G.z_dim, generator=g)
    with torch.no_grad(): fake = G(z, c)
    total, terms = loss.d_loss(real, c, fake, c)
    total.backward()
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in terms.values())
    assert all(p.grad is not None for p in wD.parameters()) and all(p.grad is None for p in wG.parameters())
    for p in wD.parameters(): p.grad = None
    D.requires_grad_(False)
    total, terms = loss.g_loss(G(z, c), c)
    total.backward()
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in terms.values())
    assert all(p.grad is not None for p in wG.parameters()) and all(p.grad is None for p in wD.parameters())


def test_kendall_log_var_option_is_half_the_papers_term():
    "Scenario (c)'s alternative parametrisation (LibMTL's log-variance), the knob of the panel (c) discussion in 05_losses."
    from hvitgan.losses import make_loss_weights, uncertainty_term
    from hvitgan.sample import SampleConfig
    s = Scenario('x', 'x', 'x', 'kendall', False, SampleConfig(selective=False), 'x', kendall_param='log_var')
    w_g, w_d = make_loss_weights(s)
    assert (w_g.kind, w_d.kind, w_d.tasks) == ('log_var', 'log_var', ('Dreal', 'Dgen'))
    with torch.no_grad(): w_d.params['Dreal'].fill_(0.4)
    loss, s_ = torch.tensor(3.), torch.tensor(0.4)
    assert torch.allclose(w_d('Dreal', loss), 0.5 * uncertainty_term(loss, s_))
    assert torch.allclose(w_d.weight('Dreal'), 0.5 * torch.exp(-s_)) and 'Sigma/logvar_Dreal' in w_d.report()
