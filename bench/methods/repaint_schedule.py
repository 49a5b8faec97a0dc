"""RePaint's resampling ("jump") time list (Lugmayr et al., CVPR 2022, §4.2): a minimal stand-in.

The lead keeps the full version of this module from the RePaint branch (nested jump levels, ``n_sample``,
``start_resampling``); this one has the single jump level that ``method=sd_inpaint``'s blend path uses, with the
same keyword arguments and the same list as official andreas128/RePaint ``guided_diffusion/scheduler.py::
get_schedule_jump(t_T, n_sample=1, jump_length, jump_n_sample)`` (nested levels off).

Entries are indices into a schedule of ``t_T`` steps, from t_T-1 down to -1 (clean data); consecutive entries
differ by one: a decrease is one reverse step (one network call), an increase one forward re-noising step.
Walking down, at every multiple j of ``jump_length`` with 0 <= j < t_T - jump_length the walk goes back up
``jump_length`` steps, ``jump_n_sample - 1`` times per point (``jump_n_sample = 1``: no jumps).
"""

from __future__ import annotations


def jump_schedule(t_T: int = 250, jump_length: int = 10, jump_n_sample: int = 10) -> list[int]:
    """The RePaint time list (module docstring)."""
    for key, value in (("t_T", t_T), ("jump_length", jump_length), ("jump_n_sample", jump_n_sample)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"jump_schedule: {key}={value!r} must be an integer >= 1")
    left = {j: jump_n_sample - 1 for j in range(0, t_T - jump_length, jump_length)}
    t, times = t_T, []
    while t >= 1:
        t -= 1
        times.append(t)
        if left.get(t, 0) > 0:
            left[t] -= 1
            times += list(range(t + 1, t + jump_length + 1))
            t += jump_length
    times.append(-1)
    return times
