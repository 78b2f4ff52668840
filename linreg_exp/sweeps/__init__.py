"""The launch: Hydra's side of a run or a sweep, in the process that `python -m linreg_exp` is.

    callback.py  Hydra's hooks: a launch opens before any job and closes after the last
    launch.py    what a launch holds open: its tracker (the sweep's parent run), a sweep dir lock
    jobs.py      each job's description, from Hydra's config of the job
    trackers.py  which tracker each job records through
    naming.py    run names, from what a sweep varies

A single run is a sweep of one, without a parent run.
"""
