"""Reporting: the pictures and tables a run or a sweep leaves, drawn from plain data; no MLflow,
no torch. Tracking is handed `pictures.draw` (a run's Task) and `sweep.draw` (a sweep's report)
by its callers, calls them and logs the files they write; it never imports this package.
"""
