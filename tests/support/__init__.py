"""What the tests and the bench share, in one place, so that a fix to one reaches both.

- `ports`: a free loopback port (the servers and the cluster bind one each);
- `processes`: a job that only waits for an outside event, lowered to a background priority;
- `servers`: a real `mlflow server` and a throw-away PostgreSQL cluster;
- `slurm`: a throw-away single-node SLURM cluster with accounting;
- `store`: reading runs and metrics back from a store (MlflowClient, or the SQLite file itself
  where an MlflowClient would create or migrate a store that is still being made).

Nothing here imports pytest: `benchmarks/` uses it too.
"""
