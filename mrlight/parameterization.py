"""Exact conversions between what a network may predict: noise, data (x0), velocity, score.

With y = x_t - mu, d = x0 - mu, beta = sqrt(1 - alpha^2) and sigma_bar = s_inf * beta,

    y = alpha d + sigma_bar eps                      (the MR marginal, DESIGN section 2)
    v = alpha s_inf eps - beta d                     (velocity, Salimans & Ho 2022, shifted by mu)
    score = -eps / sigma_bar

The map (d, eps) -> (y, v) has determinant s_inf, so each pair determines the other:

    d   = alpha y - beta v
    eps = (beta y + alpha v) / s_inf

Every sampler, loss and test converts through these functions; nothing else does this algebra.
`alpha` and `sigma_bar` may be floats or tensors broadcastable against the images.
"""

from __future__ import annotations

PREDICTIONS = ("noise", "data", "velocity")


def check_prediction(name: str) -> str:
    if name not in PREDICTIONS:
        raise ValueError(f"unknown prediction {name!r}; valid: {', '.join(PREDICTIONS)}")
    return name


def noise_from_data(x0, x_t, mu, alpha, sigma_bar):
    return (x_t - mu - alpha * (x0 - mu)) / sigma_bar


def data_from_noise(eps, x_t, mu, alpha, sigma_bar):
    return mu + (x_t - mu - sigma_bar * eps) / alpha


def velocity_from(x0, eps, mu, alpha, max_sigma):
    beta = (1 - alpha * alpha) ** 0.5
    return alpha * max_sigma * eps - beta * (x0 - mu)


def data_from_velocity(v, x_t, mu, alpha):
    beta = (1 - alpha * alpha) ** 0.5
    return mu + alpha * (x_t - mu) - beta * v


def noise_from_velocity(v, x_t, mu, alpha, max_sigma):
    beta = (1 - alpha * alpha) ** 0.5
    return (beta * (x_t - mu) + alpha * v) / max_sigma


def score_from_noise(eps, sigma_bar):
    return -eps / sigma_bar


def noise_from_score(score, sigma_bar):
    return -score * sigma_bar


def to_data(output, prediction: str, x_t, mu, alpha, sigma_bar, max_sigma):
    """x0_hat from a network output of type `prediction`."""
    if prediction == "data":
        return output
    if prediction == "noise":
        return data_from_noise(output, x_t, mu, alpha, sigma_bar)
    if prediction == "velocity":
        return data_from_velocity(output, x_t, mu, alpha)
    check_prediction(prediction)


def to_noise(output, prediction: str, x_t, mu, alpha, sigma_bar, max_sigma):
    """eps_hat from a network output of type `prediction`."""
    if prediction == "noise":
        return output
    if prediction == "data":
        return noise_from_data(output, x_t, mu, alpha, sigma_bar)
    if prediction == "velocity":
        return noise_from_velocity(output, x_t, mu, alpha, max_sigma)
    check_prediction(prediction)


def target(prediction: str, x0, eps, mu, alpha, max_sigma):
    """The regression target of a network trained to predict `prediction` (training losses)."""
    if prediction == "noise":
        return eps
    if prediction == "data":
        return x0
    if prediction == "velocity":
        return velocity_from(x0, eps, mu, alpha, max_sigma)
    check_prediction(prediction)
