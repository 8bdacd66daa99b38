"""score_sde: score-based generative modeling through stochastic differential equations, in PyTorch."""
