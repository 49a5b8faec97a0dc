"""The verdict the official-code comparisons print (tools/equivalence/*.py): each checked max difference, the
documented differences that are printed but not checked, and OK / FAIL against the tolerance (exit status 0 / 1)."""

from __future__ import annotations


def verdict(diffs: dict[str, float], info: dict[str, float], tol: float) -> int:
    """Print ``diffs`` (checked against ``tol``) and ``info`` (documented, not checked); 0 when all are <= tol."""
    width = max(map(len, [*diffs, *info]), default=0)
    for key, value in diffs.items():
        print(f"{key:<{width}}  {value:.3e}")
    if info:
        print("documented difference (not checked):")
        for key, value in info.items():
            print(f"{key:<{width}}  {value:.3e}")
    bad = [key for key, value in diffs.items() if not value <= tol]
    if bad:
        print(f"FAIL: {len(bad)} difference(s) > {tol}: {', '.join(bad)}")
        return 1
    print(f"OK: every difference <= {tol}")
    return 0
