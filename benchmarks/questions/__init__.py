"""One module per question the bench answers; bench.py's QUESTIONS names them, their sections
in results.md and their running order.

Each module has its FULL and QUICK sizes and `run(ctx) -> list[Row]`; a measurement that two
questions read (the whole-process runs, the long runs) is taken once through `ctx.once`.
"""
