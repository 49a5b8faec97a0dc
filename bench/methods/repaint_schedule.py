"""RePaint's resampling ("jump") schedule: the time list its sampler walks (Lugmayr et al., CVPR 2022, §4.2).

:func:`jump_schedule` returns the same list as official andreas128/RePaint ``guided_diffusion/scheduler.py::
get_schedule_jump`` for the same arguments (tested against the official code by ``tools/equivalence/repaint.py``).
Entries are indices into the respaced schedule (0 .. t_T-1), starting at t_T-1 and ending at -1 (clean data).
Consecutive entries differ by one: a decrease t -> t-1 is one reverse step (one network call), an increase
t -> t+1 one forward re-noising step q(x_{t+1} | x_t) (no network call).

The walk goes down from t_T. Whenever it reaches a multiple j of ``jump_length`` with 0 <= j < t_T - jump_length
that still has jumps left (``jump_n_sample - 1`` per point), it goes back up ``jump_length`` steps. ``jump2_*`` /
``jump3_*`` nest finer jump levels (their counters are refilled whenever the coarser level jumps), ``n_sample > 1``
adds an up-down pair after every step below t_T - 2, and no jump (or resampling) starts above ``start_resampling``.
Official defaults (``confs/*.yml``): t_T = 250, n_sample = 1, jump_length = 10, jump_n_sample = 10, the nested
levels off (length 1, n_sample 1), ``start_resampling`` unset (100000000): 2,410 network calls, 2,160 forward steps.
"""

from __future__ import annotations

#: official ``get_schedule_jump``'s default for ``start_resampling`` (no limit)
NO_LIMIT = 100_000_000


def _positive_int(key: str, value, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"repaint: {key}={value!r} is invalid: it must be an integer >= 1. Fix: {fix}")
    return value


def _refill(t_T: int, length: int, n_sample: int) -> dict[int, int]:
    """Jumps left per jump point: ``n_sample - 1`` at 0, length, 2 length, ... below t_T - length."""
    return {j: n_sample - 1 for j in range(0, t_T - length, length)}


def jump_schedule(t_T: int = 250, jump_length: int = 10, jump_n_sample: int = 10, n_sample: int = 1,
                  jump2_length: int = 1, jump2_n_sample: int = 1, jump3_length: int = 1, jump3_n_sample: int = 1,
                  start_resampling: int = NO_LIMIT) -> list[int]:
    """The RePaint time list (module docstring): indices t_T-1, ..., -1 with jumps back up."""
    _positive_int("t_T", t_T, "steps=250 (official t_T)")
    _positive_int("jump_length", jump_length, "method.jump_length=10 (official)")
    _positive_int("jump_n_sample", jump_n_sample, "method.jump_n_sample=10 (official; 1 = no resampling)")
    _positive_int("n_sample", n_sample, "method.n_sample=1 (official)")
    for key, value in (("jump2_length", jump2_length), ("jump2_n_sample", jump2_n_sample),
                       ("jump3_length", jump3_length), ("jump3_n_sample", jump3_n_sample)):
        _positive_int(key, value, f"method.{key}=1 (official: the nested jump levels off)")
    if isinstance(start_resampling, bool) or not isinstance(start_resampling, int):
        raise ValueError(f"repaint: start_resampling={start_resampling!r} is invalid: it must be an integer (the "
                         f"highest t where jumps start). Fix: method.start_resampling={NO_LIMIT} (official: no limit)")

    # (length, n_sample, jumps left per point) from the coarsest level to the finest
    levels = [[jump_length, jump_n_sample, None], [jump2_length, jump2_n_sample, None],
              [jump3_length, jump3_n_sample, None]]
    for level in levels:
        level[2] = _refill(t_T, level[0], level[1])

    t, times = t_T, []
    while t >= 1:
        t -= 1
        times.append(t)
        if t + 1 < t_T - 1 and t <= start_resampling:  # n_sample - 1 extra up-down pairs
            for _ in range(n_sample - 1):
                times += [t + 1, t]
        # the finest level is checked first; a jump at one level refills the counters of every finer level
        for depth in (2, 1, 0):
            length, _, left = levels[depth]
            if left.get(t, 0) > 0 and t <= start_resampling - length:
                left[t] -= 1
                times += list(range(t + 1, t + length + 1))
                t += length
                for finer in levels[depth + 1:]:
                    finer[2] = _refill(t_T, finer[0], finer[1])
    times.append(-1)
    return times


def count_network_calls(times: list[int]) -> int:
    """Reverse steps (t -> t-1) of a time list: the network evaluations per image."""
    return sum(1 for a, b in zip(times[:-1], times[1:]) if b < a)


def count_forward_steps(times: list[int]) -> int:
    """Forward re-noising steps (t -> t+1) of a time list (the one-step undo; no network call)."""
    return sum(1 for a, b in zip(times[:-1], times[1:]) if b > a)
