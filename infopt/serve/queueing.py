"""Queueing-theory references for the serving measurement: M/D/1 (Poisson arrivals, one server, a constant
service time ``S``), the model of a batcher with max batch 1 in front of a model whose forward takes ``S``.

The waiting time ``W`` of M/D/1 has Erlang's (Crommelin's) closed-form distribution, with ``rho = rate x S``::

    P(W <= t) = (1 - rho) * sum_{k=0}^{floor(t/S)} (rate (kS - t))^k / k! * exp(-rate (kS - t))

and a request's latency is ``W + S``. :func:`md1_peak_rate` inverts it: the highest arrival rate whose
latency percentile stays within a bound. The sum alternates in sign and is exact in floating point only for
``t / S`` up to a few tens; beyond :data:`EXACT_SPAN` service times (a 1 ms model under a 100 ms bound) the
waiting time's exponential tail is used, ``P(W > t) ~ exp(-theta t)`` with ``theta`` the positive root of
``rate (exp(theta S) - 1) = theta`` (Cramer-Lundberg). It leaves out the tail's constant factor (below 1), so
it overstates P(W > t) a little (7% at rho = 0.9, where peaks under such a bound lie) and errs towards a lower rate.
"""

from __future__ import annotations

import math


#: Waits of up to this many service times use the exact sum; longer ones the exponential tail.
EXACT_SPAN = 20


def md1_tail_decay(rate: float, service_s: float) -> float:
    """``theta`` > 0 with ``rate (exp(theta S) - 1) = theta`` (rate x S < 1): the decay rate of P(W > t)."""
    def excess(theta):
        return rate * math.expm1(theta * service_s) - theta

    low, high = 0.0, 1.0 / service_s
    while excess(high) <= 0:
        low, high = high, 2 * high
    for _ in range(200):
        middle = (low + high) / 2
        if excess(middle) > 0:
            high = middle
        else:
            low = middle
    return high


def md1_wait_cdf(t: float, rate: float, service_s: float) -> float:
    """P(W <= t) for M/D/1 with arrival ``rate`` (1/s) and constant service ``service_s``."""
    rho = rate * service_s
    if rho >= 1:
        return 0.0
    if t < 0:
        return 0.0
    if rate <= 0:
        return 1.0
    if t / service_s > EXACT_SPAN:
        return 1.0 - math.exp(-md1_tail_decay(rate, service_s) * t)
    total = 0.0
    for k in range(int(math.floor(t / service_s)) + 1):
        x = rate * (k * service_s - t)
        total += x ** k / math.factorial(k) * math.exp(-x)
    return min(max((1 - rho) * total, 0.0), 1.0)


def md1_latency_percentile_met(rate: float, service_s: float, bound_s: float, percentile: float) -> bool:
    """Whether the ``percentile`` of latency (wait + service) is at most ``bound_s`` at ``rate``."""
    return md1_wait_cdf(bound_s - service_s, rate, service_s) >= percentile / 100.0


def md1_peak_rate(service_s: float, bound_s: float, percentile: float) -> float:
    """The highest Poisson arrival rate (1/s) whose latency ``percentile`` stays within ``bound_s`` (bisection to
    1e-6 of the capacity ``1 / service_s``); 0 when the bound is below the service time."""
    if bound_s < service_s:
        return 0.0
    low, high = 0.0, 1.0 / service_s
    while high - low > 1e-6 / service_s:
        middle = (low + high) / 2
        if md1_latency_percentile_met(middle, service_s, bound_s, percentile):
            low = middle
        else:
            high = middle
    return low


__all__ = ["EXACT_SPAN", "md1_latency_percentile_met", "md1_peak_rate", "md1_tail_decay", "md1_wait_cdf"]
