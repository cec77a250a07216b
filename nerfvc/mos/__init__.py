"""Subjective tests in the browser (ITU-T P.910 habits): ``build`` a test from ``nerfvc eval --keep-videos``
reports, ``serve`` its rating pages (votes in SQLite), compute ``results``. See docs/mos.md.

Modules: ``manifest`` (``test.json``, the rater orders), ``build``, ``store`` (``votes.sqlite``), ``pages``
and ``server`` (aiohttp), ``stats`` (Wilson and t intervals), ``results`` (screening, JSON, plot, report
section), ``commands`` (the CLI).
"""
