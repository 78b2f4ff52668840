"""linreg_exp's Optuna sweeper (`hydra/sweeper=optuna`, conf/hparams_search/*.yaml), where Hydra
looks for plugins: config.py registers its configs, optuna_sweeper.py is the plugin, and _study.py
does the work with Optuna, imported only when a search runs."""
