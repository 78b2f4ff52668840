"""linreg_exp's batched launcher and its sweeper, where Hydra looks for plugins: the code that
does the work is linreg_exp.sweeps.batched, imported only when a sweep uses them."""
