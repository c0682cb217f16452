"""One exception root for Hydra, with a sub-root per subsystem.

Every message says what went wrong *and* what to do next, because these
errors reach users through the CLI and the HTTP API verbatim.
"""

from __future__ import annotations


class HydraError(Exception):
    """Root of every error Hydra raises on purpose."""


# --- configuration -------------------------------------------------------------------------
class ConfigError(HydraError):
    """A HYDRA_* setting is missing or has a bad value."""


# --- jobs ----------------------------------------------------------------------------------
class JobError(HydraError):
    """Something is wrong with a job or a request about one."""


class InvalidJobSpec(JobError):
    """A submitted job specification failed validation; nothing was stored or queued."""


class JobNotFound(JobError):
    """No job with the requested id exists."""


class JobStateError(JobError):
    """The job is in a state that does not allow the requested action."""


# --- results -------------------------------------------------------------------------------
class ResultError(HydraError):
    """A chunk result could not be accepted."""


class ResultRejected(ResultError):
    """A chunk result failed verification (wrong shape, digest, or range)."""


# --- kernels -------------------------------------------------------------------------------
class SpotCheckFailed(ResultRejected):
    """A check proved the result wrong: a value the worker committed to differs from the kernel's,
    recomputed exactly, or its values contradict each other (hits outside their block, blocks that do
    not add up, smooth values that do not fit the counts), which no honest kernel produces. Its worker
    is caught (trust/consequences.py). A result of the wrong shape (a field missing, as from a worker
    running older code) is only rejected."""


class KernelError(HydraError):
    """A compute kernel was called with bad arguments or is not built."""


# --- infrastructure ------------------------------------------------------------------------
class InfrastructureError(HydraError):
    """Redis, worker processes or other local services could not be used."""


class EmbeddedRedisError(InfrastructureError):
    """The embedded Redis server could not be found, started or stopped."""


class StackError(InfrastructureError):
    """A local process (worker, beat, webapp, Flower) failed to start or stop."""


class TlsError(InfrastructureError):
    """The TLS certificates could not be created, read or used."""


# --- identity and money --------------------------------------------------------------------
class IdentityError(HydraError):
    """A worker key is missing, malformed, or belongs to someone else."""


class MalformedMessage(IdentityError):
    """A message from a volunteer is not in the form its kind requires (before any signature check)."""


class SignatureError(IdentityError):
    """A signed message did not verify, was replayed, or is too old."""


class SealError(IdentityError):
    """A sealed payload (HYDRA_ENCRYPTION) cannot be made or opened: no key pinned, a tampered box, or
    one sealed to another key."""


class LedgerError(HydraError):
    """A token operation was refused; no balance changed."""


class InvalidTransfer(LedgerError):
    """A transfer request is malformed (amount, account id, nonce)."""


class UnknownAccount(LedgerError):
    """No such token account (accounts are opened when a worker registers its key)."""


class InsufficientFunds(LedgerError):
    """The sender's balance is lower than the amount."""


class NonceReused(LedgerError):
    """A transfer's nonce is not above the sender's last one: a replay or an old message."""


class InvalidProfile(LedgerError):
    """A display name or team request is malformed (ledger/profiles.py); nothing changed."""


# --- volunteers (enrolment, join, revocation) ----------------------------------------------
class EnrolmentError(HydraError):
    """A volunteer could not be enrolled, joined or revoked."""


class VolunteerExists(EnrolmentError):
    """A volunteer (or another Redis user) already has that name."""


class UnknownVolunteer(EnrolmentError):
    """No volunteer has that name."""


class InvalidCredentials(EnrolmentError):
    """A join token or credentials file is malformed."""


class JoinRefused(EnrolmentError):
    """A volunteer's first registration was refused: wrong or used join secret, revoked, or another key."""


class EnrolmentClosed(EnrolmentError):
    """Self-enrolment is switched off (HYDRA_SELF_ENROLMENT)."""


class EnrolmentRateLimited(EnrolmentError):
    """Too many self-enrolment requests this hour; try again later (in ``retry_after_s``, if known)."""

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AttestationError(HydraError):
    """Attestation evidence was not accepted (trust/attestation.py); the worker is not attested."""


class UnverifiableEvidence(AttestationError):
    """Well-formed evidence this control plane cannot verify (it lacks the vendor's certificate chain)."""
