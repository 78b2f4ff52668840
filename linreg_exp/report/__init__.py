"""Reporting: the pictures and tables a run or a sweep leaves, drawn from plain data; no MLflow,
no torch. Tracking runs `pictures.draw` and `sweep.draw` as Tasks and logs the files they write.
"""
