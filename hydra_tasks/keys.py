"""The Redis key schema, in one place.

Every key Hydra writes is built here, so ``grep keys.`` finds every reader and writer.

=============================  ======  ============================================================
key                            type    contents
=============================  ======  ============================================================
hydra:jobs                     zset    job id -> created_at (all jobs, newest last)
hydra:jobs:active              zset    job id -> dispatch order (priority, then deadline or age)
hydra:jobs:deadlines           zset    job id -> deadline (jobs that may be time-shifted)
hydra:jobs:finished            zset    job id -> finished_at (finished jobs held: pruned after HYDRA_JOB_RETENTION_S)
hydra:jobs:totals              hash    over finished jobs: how many are held per final state, and their counters summed
hydra:job:{id}                 hash    spec, kind, state, counters, result (fields below)
hydra:job:{id}:chunks          hash    chunk id -> chunk spec JSON
hydra:job:{id}:todo            list    chunk ids waiting for dispatch (LPUSH = retry first)
hydra:job:{id}:tiles           zset    adaptive Mandelbrot tiles waiting, by estimated cost
hydra:job:{id}:done            set     chunk ids merged (the idempotency set)
hydra:job:{id}:parts           hash    chunk id -> merged partial result JSON
hydra:job:{id}:workers         hash    "{worker}|{field}" -> per-worker work counters
hydra:job:{id}:image           string  base64 PNG of a finished Mandelbrot job
hydra:job:{id}:counts          string  base64 zlib uint32 iteration counts of a finished Mandelbrot job
{blob key}:staged:{token}       string  a finalizer's result blob until FINISH renames it to {blob key} (expires after 1 h)
hydra:job:{id}:log             list    recent accepted chunks (worker, units, elapsed) for metrics; expires
                                       HYDRA_JOB_DETAIL_S after the job ends
hydra:job:{id}:suspect         hash    finished job: chunk id -> why suspect (JSON: worker, units, increments)
hydra:leases                   zset    "{job}:{chunk}" -> lease deadline (unix seconds): the sweeper's expiry index
hydra:job:{id}:leases          zset    chunk id -> lease deadline: the job's own leases (FINISH, straggler backups)
hydra:audits                   zset    "{job}:{audit chunk}" -> when requested: audit chunks waiting for an auditor
hydra:job:{id}:audits          hash    audit chunk id -> JSON {of: the audited chunk, worker: its worker, blocks}
hydra:lease:{job}:{chunk}      hash    worker, region, attempt, dispatched_at, queued, expiries ...
hydra:workers                  set     worker ids registered and not pruned (worker/registry.prune_offline)
hydra:workers:gen              string  the registry's generation: a new random token on every registration, state change,
                                       quarantine, prune and grid report, so a control process knows its view of the
                                       fleet is stale
hydra:worker_keys              hash    pruned worker id -> the public key it stayed bound to (registry.register
                                       refuses another key for that id; removed when it registers again)
hydra:grid:failures            list    recent carbon-provider failures, newest first (JSON), capped
hydra:grid:observed:{zone}     hash    UTC hour (s) -> gCO2/kWh seen by the provider chain, 8 days (grid/observed.py)
hydra:sustainability           hash    energy and carbon totals over all jobs (grid/accounting.py)
hydra:worker:{id}              hash    region, host, cores, speeds, state, last_seen, performance model
hydra:worker:{id}:inflight     set     "{job}:{chunk}" currently leased to the worker
hydra:worker:{id}:results      list    its merged results since it was admitted or its quarantine lifted,
                                       oldest first, JSON {job, chunk, amount, account, units, inc, keep, spec}
                                       (what a catch undoes once the job is compacted: lua.undo_fields); the newest
                                       100,000 are kept (lua/merge.lua); a catch revokes them (revoke.lua)
hydra:ledger:accounts          hash    account (Ed25519 public key, hex) -> opened_at
hydra:ledger:balances          hash    account -> balance in micro-tokens (integer)
hydra:ledger:earned            hash    account -> micro-tokens ever minted to it
hydra:ledger:nonces            hash    account -> last transfer nonce used
hydra:ledger:transfers         hash    "{from}:{nonce}" -> journal entry id (idempotent retries)
hydra:ledger:minted            set     mint idempotency keys ("{job}:{chunk}")
hydra:ledger:rank:balance      zset    account -> balance (micro-tokens): the leaderboard's order, kept with the hash
hydra:ledger:rank:earned       zset    account -> micro-tokens ever earned: the leaderboard's order
hydra:teams:earned             zset    team -> micro-tokens its members ever earned (mints, reversals, team changes)
hydra:teams:members            hash    team -> accounts in it
hydra:ledger:stats             hash    supply, minted, transferred, transfers, mints (integers)
hydra:ledger:daily             hash    "YYYY-MM-DD" (UTC) -> micro-tokens minted that day
hydra:ledger:journal           stream  every balance change, append-only and hash-chained (ledger/chain.py)
hydra:ledger:head              hash    the journal chain's newest entry: hash, id, length
hydra:results:dropped          hash    results dropped before any check, by reason -> count (jobs/collect.py)
hydra:intake:dropped           hash    intake messages dropped, by reason -> count (intake.py, worker/gate.py)
hydra:spot_checks              hash    exact spot checks of results: passed, failed, work recomputed (jobs/collect.py)
hydra:profiles                 hash    account -> JSON {display_name, team, nonce, updated_at}: what the
                                       account's key signed last (ledger/profiles.py, POST /api/profile)
hydra:profile_teams            hash    account -> its team, for accounts in a team (the team leaderboard)
hydra:volunteers               set     names of every volunteer ever enrolled (trust/volunteers.py)
hydra:volunteer:{name}         hash    one volunteer's enrolment: worker id, regions, state, key (fields below)
hydra:volunteer_keys           hash    public key (hex) -> the name of the volunteer it is bound to
hydra:enrolment:{hour}         hash    self-enrolment requests in one UTC hour, in total and per address
hydra:history:{hour}           hash    the dashboard's time series for one UTC hour (hour = unix s // 3600): chunks
                                       merged, worker speeds, region carbon (history.py); expires 6 h after the hour
hydra:ratelimit:LIMITER/...    string  webapp rate-limit counters per client address and window (Flask-Limiter's
                                       own names under RATE_LIMIT_PREFIX, webapp/ratelimit.py); they expire
=============================  ======  ============================================================

Fields
------
Each block lists one hash's fields as ``name  meaning (unit)``; the stream block lists its entries'
fields. ``<x>`` in a name stands for a family (``rate:<kind>`` is ``rate:pi`` and
``rate:mandelbrot``). Times are unix seconds (``repr`` floats) unless the name ends in ``_ms``.
Counters are integers (``HINCRBY``); energy and carbon are floats (``HINCRBYFLOAT``).
tests/unit/test_key_schema.py drives a real job life against a real Redis and fails on any field
written but not listed here.

hydra:job:{id}
  created by jobs/store.create_job; changed by lua/{grant,backup,requeue,merge,finish}.lua, jobs/collect.py
  (tiling), scheduling/dispatcher.py (time shifting) and grid/accounting.py (carbon)
    id                 the job id (16 hex digits)
    kind               "pi" or "mandelbrot"
    spec               the validated JobSpec as JSON: kind, params (normalised), priority, deadline_ts, confidential
    state              queued, running (set by the first GRANT), done, failed or cancelled (FINISH)
    priority           0..9; higher is dispatched first (hydra:jobs:active)
    created_at         when it was submitted (s)
    started_at         when its first chunk was leased (s; GRANT)
    finished_at        when it reached a final state (s; FINISH)
    updated_at         last merge or final state (s)
    chunks_total       chunks cut so far: grows as GRANT cuts π ranges and when tiles are cut from the preview
    chunks_done        chunks merged
    units_total        π samples, or Mandelbrot pixels, of the whole job
    units_done         units merged; progress = units_done / units_total (the preview counts 0)
    cursor             π: first sample index GRANT has not cut yet (0 for Mandelbrot)
    tiled              "1" once an adaptive Mandelbrot job's tiles were cut from its preview (exactly once)
    iters_per_px       mean iterations per pixel estimated from the preview (+1), for time shifting
    carbon_threshold   dirtiest power the job may use now (gCO2/kWh; "inf": any); jobs with a deadline only
    waiting            why a confidential job gets no worker (scheduling/dispatcher.py); absent once one qualifies
    dispatched         leases granted by GRANT (a re-sent chunk counts again; backups do not)
    redispatched       chunks put back first in the todo list by REQUEUE
    duplicates         results for chunks already merged (counted once, paid never)
    rejections         results that failed verification (the chunk is re-sent)
    failures           results reporting a kernel error (the job fails when one chunk reaches HYDRA_MAX_CHUNK_FAILURES)
    expiries           leases that expired (the job fails when one chunk reaches HYDRA_MAX_CHUNK_EXPIRIES)
    declines           chunks handed back uncomputed by paused workers (not failures)
    backups            straggler backup copies leased (lua/backup.lua)
    hits               π: points inside the quarter circle, summed over merged chunks
    iterations         Mandelbrot: escape-time iterations (sum of verified counts) over merged tiles
    energy_j           energy of its accepted chunks (J)
    carbon_g           their emissions (g CO2)
    counterfactual_g   what carbon-blind routing would have emitted (g CO2)
    renewable_kwh      energy supplied by on-site renewables (kWh)
    result             the final result as JSON (π estimate with its error bound; image facts)
    error              why the job failed (only on failed jobs)
    recomputed         merged results taken back because their worker was caught cheating (revoke.lua,
                       reopen.lua): each chunk was queued again to be recomputed elsewhere
    suspect            finished job: how many of its merged results came from a worker caught cheating
                       later (revoke.lua); absent once re-opened (``hydra jobs reopen``)
    reopened           times an operator re-opened it to recompute suspect results (reopen.lua)
    audits_requested   audit chunks requested for its results (trust/audits.py): the next audit chunk's number
    audits_pending     audit chunks not settled yet; the job is finalized only when this is 0
    audits_done        audit chunks settled by the worker that computed them (merged like chunks, units 0)
    audits_local       audit chunks settled on the control plane (no auditor took them in time)
    compacted          "1" once FINISH compacted its working state (chunk specs, parts, done set, audits, queues;
                       the chunk log expires HYDRA_JOB_DETAIL_S later): a catch then undoes a result from its
                       worker's results log, and a re-open restores the kept work as one part (jobs/store.py)

hydra:job:{id}:workers
  lua/merge.lua, per worker that returned an accepted chunk of the job
    <worker>|chunks      chunks it returned that were merged
    <worker>|units       units of those chunks (samples or pixels)
    <worker>|elapsed_ms  compute time it reported for them, summed (ms)
    <worker>|last_ms     when its last chunk was merged (unix ms)

hydra:lease:{job}:{chunk}
  lua/grant.lua creates it; BACKUP, REQUEUE and MERGE change it; MERGE and FINISH delete it
    worker             the worker holding the lease
    region             that worker's region
    attempt            how many times the chunk has been leased (1 = first)
    dispatched_at      when it was last leased (s)
    window             the chunks that worker could hold when it was leased (larger for a window of bundles)
    queued             "1" while the chunk waits in the todo list again after REQUEUE, else "0"
    backup             the worker holding a backup copy (at most one at a time)
    leased:<worker>    "1" for every worker ever sent the chunk: only they may return it (MERGE)
    expiries           times this chunk's lease expired
    failures           times its result reported an error
    rejections         times its result failed verification
    declines           times a paused worker handed it back

hydra:worker:{id}
  the volunteer writes registry.register/heartbeat; the control plane writes the performance model
  (worker/performance.py), lua/merge.lua, lua/grid_info.lua and lua/beat.lua, and marks silent workers offline
    worker_id               its Celery hostname (name@host)
    region                  the region whose queue it consumes (hydra.region.<region>)
    host                    the machine's host name
    pid                     the Celery main process id
    cores                   CPU cores of the machine
    concurrency             Celery pool processes (read capped at cores); window = this x HYDRA_INFLIGHT_PER_SLOT
    pi_samples_per_s        calibrated at start, scaled by its CPU limit (samples/s)
    mandelbrot_iters_per_s  calibrated at start, scaled by its CPU limit (iterations actually done/s)
    state                   online, paused or offline
    pause_reason            why it is paused ("on battery"), else ""
    started_at              when it registered (s)
    last_seen               its last heartbeat (s)
    left_at                 when it said goodbye, by its own clock (s): its earlier heartbeats delivered late are stale
    isa                     what its kernels were built for (avx512, avx2, aarch64, baseline)
    kernel_threads          threads one chunk's kernel uses (HYDRA_KERNEL_THREADS)
    cpu_limit               CPU cap (percent, HYDRA_CPU_LIMIT)
    watts_per_core          its power figure for energy without RAPL (W, HYDRA_WATTS_PER_CORE)
    public_key              its Ed25519 public key (64 hex digits): the token account it is paid into
    rate:<kind>             EWMA speed from accepted chunks (π samples/s; Mandelbrot work iterations/s)
    dev:<kind>              EWMA of |observation - rate| (same unit)
    n:<kind>                accepted chunks observed for that kind
    ok                      accepted chunks (reliability numerator)
    failed                  chunks that failed on it
    expired                 leases that expired on it
    chunks_done             chunks merged (MERGE)
    busy_ms                 compute time it reported for merged chunks (ms)
    grid_zone               zone it reported itself (signed POST /api/update_grid_info), used for 24 h
    grid_renewable_share    on-site renewable share it reported (0..1)
    grid_reported_at        timestamp of that signed report (s); a report must be newer to replace it
    audits_passed           spot checks passed since it was last caught: its reputation (trust/reputation.py)
    audits_failed           spot checks it failed
    quarantined             why it gets no work ("" or absent: it may), set by a failed spot check
    quarantined_at          when it was quarantined (s)
    tee                     the TEE it claims (none, sev-snp, tdx, sgx; trust/attestation.py): a claim only
    attestation             none (no TEE claimed), unverified or verified: verified only if the control plane's
                            verifier accepted its evidence (never, today: no vendor certificate chains)
    attestation_note        why its claim is not verified
    bundle_max              the most chunks it takes in one message (hydra.compute_bundle; HYDRA_BUNDLE_MAX)
    generators              the π generators its kernels compute, comma-separated (splitmix64 for a worker that names none)

hydra:sustainability
  grid/accounting.record, on every accepted chunk: the totals over all jobs
    energy_j           energy of accepted chunks (J)
    carbon_g           their emissions (g CO2)
    counterfactual_g   what carbon-blind routing would have emitted (g CO2)
    renewable_kwh      energy supplied by on-site renewables (kWh)

hydra:jobs:totals
  lua/finish.lua adds a job when it ends; lua/reopen.lua takes it back out; jobs/store.delete_job lowers the
  count of its state only (the counter sums only grow: Prometheus reads them as counters)
    done               finished jobs held in that state (failed, cancelled likewise)
    failed             (see done)
    cancelled          (see done)
    dispatched         the finished jobs' job-hash counters, summed (chunks_done, rejections, expiries,
                       failures, recomputed, audits_done and audits_local likewise)
    chunks_done        (see dispatched)
    rejections         (see dispatched)
    expiries           (see dispatched)
    failures           (see dispatched)
    recomputed         (see dispatched)
    audits_done        (see dispatched)
    audits_local       (see dispatched)

hydra:ledger:stats
  lua/merge.lua / lua/mint.lua (mints) and lua/transfer.lua; all integers
    supply             micro-tokens in existence (= minted - reversed; transfers move, never create)
    minted             micro-tokens ever minted
    reversed           micro-tokens taken back from workers caught cheating (revoke.lua)
    reversals          number of reversals
    mints              number of mints
    transferred        micro-tokens ever moved by transfers
    transfers          number of transfers
    keys_compacted     mint idempotency keys FINISH removed from hydra:ledger:minted (the job's final state
                       refuses a second mint); a reversal of one of them takes it back out of this count

hydra:ledger:journal
  stream entries (lua/_journal.lua's append_entry); ledger/audit.py replays them and checks the chain
    type               "mint", "transfer" or "reversal" (a mint taken back: its worker was caught cheating)
    to                 the receiving account (public key hex)
    amount             micro-tokens, as a decimal string
    reason             why ("chunk accepted", "transfer", ...)
    ts                 when (s)
    key                mint and reversal: the idempotency key "{job}:{chunk}" (a reversal frees it)
    detail             mint: the reward breakdown as JSON (ledger/rewards.py); reversal: the worker caught
    from               transfer: the sending account; reversal: the account debited (the mint's)
    nonce              transfer only: the sender's nonce (above its previous one)
    signature          transfer only: Ed25519 signature over the canonical transfer message (hex)
    result             mint for a chunk: the signed report that earned it (canonical JSON, trust/results.py)
    result_signature   mint for a chunk: the worker's Ed25519 signature over that report (hex)
    prev               the hash of the entry before (40 zeros for the first chained entry)
    hash               SHA-1 of prev and this entry's fields in order, each as <length>:<text>

hydra:results:dropped
  jobs/collect.py: results in the name of a worker with a registered key, not signed by it
    unsigned           results with no signature
    bad signature      results whose signature does not verify

hydra:intake:dropped
  intake.py and worker/gate.py: the reasons are intake.Dropped's values
    malformed          not an envelope, or a body that does not fit its action
    bad signature      the envelope's signature does not verify against the key it names
    unknown key        isolated mode: no active volunteer has the signing key (revoked, or a join refused)
    wrong worker       speaks for a worker id bound to another key
    wrong region       registers in a region the volunteer was not admitted to
    unknown task       a task other than hydra.intake on the intake queue
    refused            authentic but refused (a stale grid report, an unknown zone)

hydra:spot_checks
  jobs/collect.py, for every result that passed the kind's checks
    passed             results whose recomputed parts matched exactly
    failed             results with a recomputed part that differs (rejected, re-sent elsewhere)
    units:<kind>       work recomputed by the control plane's checks (π samples, Mandelbrot pixels)
    remote:<kind>      work recomputed by audit chunks on other workers (π samples; trust/audits.py)
    last_caught_at     when a worker was last caught (s): for an hour reputations count half (trust/reputation.py)

hydra:ledger:head
  lua/_journal.lua, with every journal entry
    hash               the newest entry's hash
    id                 the newest entry's stream id
    length             chained entries appended

hydra:volunteer:{name}
  trust/volunteers.py: add (invited), bind_key (active, on its first signed registration), revoke
    name               the volunteer's name: its Redis ACL user (lowercase letters, digits, '-')
    worker_id          its Celery node name, "<name>@hydra"; its direct queue is "<worker_id>.dq2"
    regions            the regions whose queues it may consume, comma-separated
    state              invited (credentials issued), active (key bound) or revoked
    created_at         when it was enrolled (s)
    joined_at          when its key was bound (s)
    revoked_at         when it was revoked (s)
    public_key         its Ed25519 public key (64 hex digits) once bound, else ""
    secret_sha256      SHA-256 (hex) of its one-time join secret while invited; cleared by bind_key

hydra:volunteer_keys
  trust/volunteers.py: bind_key binds a key to one volunteer, revoke unbinds it
    <public_key>       the name of the volunteer the key is bound to

hydra:history:{hour}
  history.py: record_chunk (from the merge in jobs/collect.py) and sample_carbon (from the sweeper); times
  <t> are unix seconds at a bucket's start; the hash expires KEEP_S (6 h) after its hour ends
    chunks:<t>                    chunks merged in the 10-second bucket starting at <t>
    speed:<kind>:<t>:<worker>     the worker's measured speed (rate:<kind>) after its last chunk merged in that minute
    carbon:<t>:<region>           the region's effective intensity in that minute (gCO2/kWh, net of on-site renewables)
    sampled:<t>                   "1": a control worker sampled that minute's carbon (HSETNX: once per minute)

hydra:enrolment:{hour}
  trust/volunteers.py: count_enrolment_request, one hash per UTC hour ("YYYYMMDDHH"), expiring after 2 h
    total              self-enrolment requests in that hour
    addr:<address>     requests from one client address in that hour

The profile hashes, and the other ledger hashes, map an account (or "{from}:{nonce}", or a UTC day) to one value, as the
table above says; hydra:job:{id}:chunks, :parts, :suspect and :audits map a chunk id to JSON; hydra:teams:members maps a team to its number of accounts.
"""

from __future__ import annotations

import secrets

PREFIX = "hydra"

JOBS = f"{PREFIX}:jobs"
JOBS_ACTIVE = f"{PREFIX}:jobs:active"
JOBS_DEADLINES = f"{PREFIX}:jobs:deadlines"
JOBS_FINISHED = f"{PREFIX}:jobs:finished"  # finished job id -> finished_at (jobs/retention.py prunes from it)
JOBS_TOTALS = f"{PREFIX}:jobs:totals"  # finished jobs: held per final state, and their counters summed
#: the job-hash counters FINISH adds to JOBS_TOTALS (the metrics read these sums plus the live jobs')
JOB_TOTAL_COUNTERS = ("dispatched", "chunks_done", "rejections", "expiries", "failures", "recomputed",
                      "audits_done", "audits_local")
LEASES = f"{PREFIX}:leases"
AUDITS = f"{PREFIX}:audits"
WORKERS = f"{PREFIX}:workers"
WORKERS_GEN = f"{PREFIX}:workers:gen"  # a new token on every registry change (scheduling/cluster.snapshot's cache)


def new_generation() -> str:
    """A fresh value for ``WORKERS_GEN``: random, not a counter, so that a generation seen before a
    flush or a failover's rollback is never mistaken for the one after it."""
    return secrets.token_hex(8)
GRID_FAILURES = f"{PREFIX}:grid:failures"
GRID_FAILURES_KEPT = 100


def grid_observed(zone: str) -> str:
    """A zone's recorded hourly carbon intensities (grid/observed.py)."""
    return f"{PREFIX}:grid:observed:{zone}"
WORKER_RESULTS_KEPT = 100_000  # a worker's results log keeps its newest merged results (what a catch revokes)
JOB_LOG_KEPT = 5_000  # a job's chunk log keeps its newest accepted chunks (the metrics' charts)
SUSTAINABILITY = f"{PREFIX}:sustainability"  # hash: energy_j, carbon_g, counterfactual_g, renewable_kwh

LEDGER_ACCOUNTS = f"{PREFIX}:ledger:accounts"
LEDGER_BALANCES = f"{PREFIX}:ledger:balances"
LEDGER_EARNED = f"{PREFIX}:ledger:earned"
LEDGER_NONCES = f"{PREFIX}:ledger:nonces"
LEDGER_TRANSFERS = f"{PREFIX}:ledger:transfers"
LEDGER_MINTED = f"{PREFIX}:ledger:minted"
LEDGER_STATS = f"{PREFIX}:ledger:stats"
LEDGER_DAILY = f"{PREFIX}:ledger:daily"
LEDGER_JOURNAL = f"{PREFIX}:ledger:journal"
LEDGER_RANK_BALANCE = f"{PREFIX}:ledger:rank:balance"  # zset account -> balance (the leaderboard; O(log n))
LEDGER_RANK_EARNED = f"{PREFIX}:ledger:rank:earned"    # zset account -> earned
TEAMS_EARNED = f"{PREFIX}:teams:earned"                # zset team -> its members' earned micro-tokens
TEAMS_MEMBERS = f"{PREFIX}:teams:members"              # hash team -> accounts in it
LEDGER_HEAD = f"{PREFIX}:ledger:head"
RESULTS_DROPPED = f"{PREFIX}:results:dropped"
INTAKE_DROPPED = f"{PREFIX}:intake:dropped"
SPOT_CHECKS = f"{PREFIX}:spot_checks"

PROFILES = f"{PREFIX}:profiles"            # ledger/profiles.py: account -> JSON profile
PROFILE_TEAMS = f"{PREFIX}:profile_teams"  # account -> team
WORKER_KEYS = f"{PREFIX}:worker_keys"      # pruned worker id -> public key (worker/registry.py)

VOLUNTEERS = f"{PREFIX}:volunteers"
VOLUNTEER_KEYS = f"{PREFIX}:volunteer_keys"
RATE_LIMIT_PREFIX = f"{PREFIX}:ratelimit"  # Flask-Limiter's counters (webapp/ratelimit.py) live under it

CONTROL_QUEUE = "hydra.control"
INTAKE_QUEUE = "hydra.intake"  # volunteers may only push here (%W~hydra.intake)
REGION_QUEUE_PREFIX = "hydra.region."
# kombu's priority sub-queues of a queue q: q + "\x06\x16" + "3" | "6" | "9" (BRPOP always names them)
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = ("3", "6", "9")


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def job_chunks(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:chunks"


def job_todo(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:todo"


def job_tiles(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:tiles"


def job_done(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:done"


def job_parts(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:parts"


def job_workers(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:workers"


def job_image(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:image"


def job_counts(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:counts"


def staged(blob_key: str, token: str) -> str:
    """A finalizer's copy of a result blob (``job_image``, ``job_counts``), renamed into place by FINISH
    only if that finalizer ends the job (lua/finish.lua)."""
    return f"{blob_key}:staged:{token}"


def job_leases(job_id: str) -> str:
    """The job's leased chunks (chunk id -> deadline), beside the fleet-wide ``LEASES``: FINISH and the
    straggler pass read one job's leases without scanning every lease in flight."""
    return f"{PREFIX}:job:{job_id}:leases"


def job_log(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:log"


def job_audits(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:audits"


AUDIT_CHUNK_PREFIX = "a"  # audit chunks' ids (trust/audits.py); π ranges are "c…", tiles "t…", the preview "preview"


def is_audit_chunk(chunk_id: str) -> bool:
    return chunk_id.startswith(AUDIT_CHUNK_PREFIX)


def job_suspect(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:suspect"


def job_keys(job_id: str) -> list[str]:
    """Every key that belongs to one job (for deletion and tests)."""
    return [
        job(job_id), job_chunks(job_id), job_todo(job_id), job_tiles(job_id), job_done(job_id), job_parts(job_id),
        job_workers(job_id), job_image(job_id), job_counts(job_id), job_log(job_id), job_suspect(job_id),
        job_audits(job_id), job_leases(job_id),
    ]


def lease_member(job_id: str, chunk_id: str) -> str:
    return f"{job_id}:{chunk_id}"


def split_lease_member(member: str) -> tuple[str, str]:
    job_id, _, chunk_id = member.partition(":")
    return job_id, chunk_id


def lease(job_id: str, chunk_id: str) -> str:
    return f"{PREFIX}:lease:{job_id}:{chunk_id}"


def worker_inflight(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}:inflight"


def worker(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}"


def worker_results(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}:results"


def region_queue(region: str) -> str:
    return f"{REGION_QUEUE_PREFIX}{region}"


def region_of_queue(queue: str) -> str | None:
    return queue[len(REGION_QUEUE_PREFIX):] if queue.startswith(REGION_QUEUE_PREFIX) else None


def history(hour: int) -> str:
    """The dashboard's time series for one UTC hour (``hour`` = unix seconds // 3600; history.py)."""
    return f"{PREFIX}:history:{hour}"


def volunteer(name: str) -> str:
    return f"{PREFIX}:volunteer:{name}"


def enrolment_rate(hour: str) -> str:
    return f"{PREFIX}:enrolment:{hour}"


def direct_queue(worker_id: str) -> str:
    """A worker's own queue (Celery's ``worker_direct`` name): ``<worker_id>.dq2``."""
    return f"{worker_id}.dq2"


def priority_queues(queue: str) -> list[str]:
    """``queue`` and the priority sub-queues kombu keeps beside it."""
    return [queue, *(f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS)]


def volunteer_unacked(name: str) -> tuple[str, str, str]:
    """A volunteer's own kombu unacked hash, index and mutex (transport options
    ``unacked_key``, ``unacked_index_key``, ``unacked_mutex_key``)."""
    return f"hydra.unacked.{name}", f"hydra.unacked_index.{name}", f"hydra.unacked_mutex.{name}"
