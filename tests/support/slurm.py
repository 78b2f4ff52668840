"""A throw-away single-node SLURM cluster with accounting, for the slow tests.

`slurm_cluster()` starts, in a fresh temp dir and on free loopback ports: MariaDB (a new datadir)
-> the `slurm_acct_db` database and its user -> munged (its own key and socket) -> slurmdbd ->
`sacctmgr add cluster` -> slurmctld + slurmd, and waits until the node is idle. With slurmdbd,
`sacct` works, so submitit sees CANCELLED, TIMEOUT and COMPLETED. Every daemon runs in its own
process group (start_new_session) and is stopped in reverse order on exit; job steps, which
slurmd starts in sessions of their own, are found by the cluster's SLURM_CONF in their
environment and killed too; then the temp dir goes.

It runs as root (slurmd must, to start jobs) with Debian 12's packages: slurmctld slurmd
slurm-client munge slurmdbd mariadb-server (`make system-deps`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port
from tests.support.servers import stop_group

SBIN, BIN = Path("/usr/sbin"), Path("/usr/bin")
DAEMONS = [SBIN / name for name in ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd")]
COMMANDS = [
    BIN / name for name in ("sbatch", "squeue", "sinfo", "sacct", "scancel", "sacctmgr", "mariadb")
] + [BIN / "mariadb-install-db"]

CLUSTER_NAME = "linreg"
PARTITION = "debug"
# Seconds between the SIGTERM and the SIGKILL that end a cancelled or timed-out job: SLURM's
# default, so that a job on a loaded test machine stops itself well before the SIGKILL.
KILL_WAIT = 30
# Seconds a finished job stays in slurmctld's memory (squeue, scontrol) before only sacct knows
# it (default 300).
MIN_JOB_AGE = 5
# Environment variables that would point SLURM commands (or submitit) at another cluster or job.
_FOREIGN = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SACCT_", "SCANCEL_")
# A smaller InnoDB than the defaults (128 MiB pool, 96 MiB redo log), no fsync per commit.
_INNODB = ["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M"]


@dataclass(frozen=True)
class SlurmCluster:
    root: Path
    env: dict[str, str]  # the whole environment for sbatch, sacct, ... and submitit
    partition: str
    kill_wait: int
    cluster_name: str
    node: str

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A SLURM command (`sbatch`, `sacct`, ...) against this cluster; raises if it fails."""
        return subprocess.run(
            args, env=self.env, capture_output=True, text=True, timeout=timeout, check=True
        )


def slurm_available() -> bool:
    """The Debian packages are installed and we are root (slurmd starts jobs as their user)."""
    return os.geteuid() == 0 and all(path.exists() for path in DAEMONS + COMMANDS)


def _tail(*paths: Path, chars: int = 3000) -> str:
    parts = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")[-chars:]
        except OSError:
            text = "(no log)"
        parts.append(f"--- {path.name}:\n{text}")
    return "\n".join(parts)


def _wait(
    what: str,
    ready: Callable[[], bool],
    procs: list[subprocess.Popen[bytes]],
    logs: list[Path],
    timeout: float,
) -> None:
    """Poll `ready` until it is true; raise with the logs if a process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{what}: {proc.args[0]} exited with {proc.returncode}:\n{_tail(*logs)}"
                )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:.0f} s:\n{_tail(*logs)}")
        time.sleep(0.1)


def _listening(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    return ready


def _succeeds(cmd: list[str], env: dict[str, str], timeout: float = 15) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            result = subprocess.run(cmd, env=env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    return ready


def _kill_leftovers(marker: bytes) -> None:
    """SIGKILL every process with `marker` in its environment, and the sessions they lead.

    slurmd starts each job's slurmstepd in a new session, out of reach of os.killpg(slurmd); the
    steps and the job's processes inherit SLURM_CONF, which names this cluster's temp dir.
    """
    own = {os.getpid(), os.getsid(0)}
    pids, sessions = set(), set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in own:
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.add(int(entry.name))
                sessions.add(os.getsid(int(entry.name)))
        except (OSError, ProcessLookupError):
            continue
    sessions -= own | {0, 1}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in own:
            with suppress(OSError):
                if os.getsid(int(entry.name)) in sessions:
                    pids.add(int(entry.name))
    for pid in pids:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    # orphans are reaped by init: wait until they are gone, not just dead (zombies)
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _popen(cmd: list[str], out: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as log:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1024


def _setup_step(args: list[str], cwd: Path, timeout: float) -> None:
    """Run one set-up command; if it fails, say what it printed (CalledProcessError does not)."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"{Path(args[0]).name} exited {done.returncode}:\n{output}")


@contextmanager
def slurm_cluster(timeout: float = 60) -> Iterator[SlurmCluster]:
    """Start the cluster (see the module docstring), yield it, stop it and remove its temp dir."""
    root = Path(tempfile.mkdtemp(prefix="linreg-slurm-"))
    root.chmod(0o755)  # munged wants its socket's directories searchable by all
    conf = root / "slurm.conf"
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
    env["SLURM_CONF"] = str(conf)
    procs: list[subprocess.Popen[bytes]] = []
    ctld: subprocess.Popen[bytes] | None = None
    try:
        # MariaDB: a fresh datadir, root logs in over the Unix socket (as the OS user root).
        db_port, db_sock, db_log = free_port(), root / "mysqld.sock", root / "mysqld.log"
        _setup_step([
            str(BIN / "mariadb-install-db"), "--no-defaults", f"--datadir={root / 'db'}",
            "--user=root", "--auth-root-authentication-method=socket", "--skip-test-db",
            "--skip-name-resolve", *_INNODB,
        ], root, timeout)  # fmt: skip
        mariadbd = [
            str(SBIN / "mariadbd"), "--no-defaults", f"--datadir={root / 'db'}",
            f"--socket={db_sock}", f"--pid-file={root / 'mysqld.pid'}", f"--log-error={db_log}",
            f"--tmpdir={root}", "--user=root", "--bind-address=127.0.0.1", f"--port={db_port}",
            "--skip-name-resolve", "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
            *_INNODB,
        ]  # fmt: skip
        procs.append(_popen(mariadbd, root / "mysqld.out", env, root))
        db_pass = secrets.token_hex(12)
        sql = (
            "CREATE DATABASE slurm_acct_db;"
            f" CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{db_pass}';"
            " GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
        )
        mariadb = [str(BIN / "mariadb"), "--no-defaults", "-S", str(db_sock), "-u", "root"]
        _wait(
            "mariadb",
            lambda: db_sock.exists() and _succeeds([*mariadb, "-e", "SELECT 1"], env)(),
            procs, [db_log, root / "mysqld.out"], timeout,
        )  # fmt: skip
        _setup_step([*mariadb, "-e", sql], root, timeout)

        # munged with its own key and socket; slurm.conf and slurmdbd.conf name the socket.
        munge_dir = root / "munge"
        munge_dir.mkdir(mode=0o755)
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        munge_sock, munge_out = munge_dir / "munge.socket", root / "munged.out"
        munged = [
            str(SBIN / "munged"), "--foreground", f"--socket={munge_sock}", f"--key-file={key}",
            f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
            f"--seed-file={munge_dir / 'munged.seed'}",
        ]  # fmt: skip
        procs.append(_popen(munged, munge_out, env, root))
        _wait("munged", munge_sock.exists, procs, [munge_out], timeout)

        dbd_port, ctld_port, slurmd_port = free_port(), free_port(), free_port()
        dbd_conf = root / "slurmdbd.conf"
        dbd_conf.write_text(
            f"AuthType=auth/munge\nAuthInfo=socket={munge_sock}\n"
            f"DbdHost=localhost\nDbdAddr=127.0.0.1\nDbdPort={dbd_port}\nSlurmUser=root\n"
            f"PidFile={root / 'slurmdbd.pid'}\nLogFile={root / 'slurmdbd.log'}\n"
            "StorageType=accounting_storage/mysql\n"
            f"StorageHost=127.0.0.1\nStoragePort={db_port}\nStorageLoc=slurm_acct_db\n"
            f"StorageUser=slurm\nStoragePass={db_pass}\n"
        )
        dbd_conf.chmod(0o600)  # slurmdbd refuses a readable one
        node = socket.gethostname().split(".")[0]
        cpus, memory = os.cpu_count() or 1, _memory_mb() * 9 // 10  # MB; --mem asks for some
        (root / "plugstack.conf").touch()  # not /etc/slurm's
        conf.write_text(
            f"""\
ClusterName={CLUSTER_NAME}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_sock}
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "slurmctld.log"}
SlurmdLogFile={root / "slurmd.log"}
PlugStackConfig={root / "plugstack.conf"}
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd_port}
# the munge socket of connections to slurmdbd (sacct, sacctmgr, slurmctld): not AuthInfo's
AccountingStoragePass={munge_sock}
SchedulerType=sched/backfill
# start a submitted batch job at the next scheduler pass (about 1 s), not up to 3 s later
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# trust the NodeName line below rather than draining the node for a topology mismatch
SlurmdParameters=config_overrides
ReturnToService=2
KillWait={KILL_WAIT}
MinJobAge={MIN_JOB_AGE}
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""
        )
        for sub in ("state", "spool"):
            (root / sub).mkdir()

        dbd_out = root / "slurmdbd.out"
        procs.append(_popen([str(SBIN / "slurmdbd"), "-D"], dbd_out, env, root))
        dbd_logs = [root / "slurmdbd.log", dbd_out, db_log]
        _wait("slurmdbd", _listening(dbd_port), procs, dbd_logs, timeout)
        # sacctmgr reaches slurmdbd through the munge socket in AccountingStoragePass
        add_cluster = [str(BIN / "sacctmgr"), "-i", "add", "cluster", CLUSTER_NAME]
        _wait("sacctmgr add cluster", _succeeds(add_cluster, env), procs, dbd_logs, timeout)

        ctld = _popen([str(SBIN / "slurmctld"), "-D"], root / "slurmctld.out", env, root)
        procs.append(ctld)
        slurmd_out = root / "slurmd.out"
        procs.append(_popen([str(SBIN / "slurmd"), "-D", "-N", node], slurmd_out, env, root))
        ctld_logs = [root / "slurmctld.log", root / "slurmd.log", slurmd_out, root / "slurmdbd.log"]
        _wait("slurmctld", _listening(ctld_port), procs, ctld_logs, timeout)

        def idle() -> bool:
            sinfo = [str(BIN / "sinfo"), "-h", "-o", "%T"]
            try:
                result = subprocess.run(sinfo, env=env, capture_output=True, text=True, timeout=15)
            except subprocess.TimeoutExpired:  # a busy machine: ask again
                return False
            return result.stdout.strip() == "idle"

        _wait("slurmd", idle, procs, ctld_logs, timeout)
        yield SlurmCluster(root, env, PARTITION, KILL_WAIT, CLUSTER_NAME, node)
    finally:
        if ctld is not None and ctld.poll() is None:
            # let running jobs end on SIGTERM rather than on the SIGKILL below
            with suppress(subprocess.SubprocessError, OSError):
                subprocess.run(
                    [str(BIN / "scancel"), "-p", PARTITION],
                    env=env,
                    capture_output=True,
                    timeout=10,
                )
        for proc in reversed(procs):
            stop_group(proc, grace=10)
        _kill_leftovers(f"SLURM_CONF={conf}".encode())
        shutil.rmtree(root, ignore_errors=True)
