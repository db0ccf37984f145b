"""Side-by-side benchmark of mintsoft-bridge against what a user would write instead.

Run ``python -m bench`` (or ``make bench``). See docs/performance.md.
"""
