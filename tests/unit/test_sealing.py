"""Sealed payloads (HYDRA_ENCRYPTION, trust/sealing.py): boxes between the control plane and one worker."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from hydra_tasks.errors import ConfigError, InvalidCredentials, SealError
from hydra_tasks.models import ChunkResult, JobKind
from hydra_tasks.settings import Settings
from hydra_tasks.trust import identity, results, sealing
from hydra_tasks.trust.volunteers import Credentials
from hydra_tasks.worker.compute import process

CHUNK = {"job_id": "a1b2c3d4e5f60718", "chunk_id": "c7", "kind": JobKind.PI.value,
         "params": {"start": 123_456_789, "count": 20_000, "seed": 987_654_321_123}, "units": 20_000}


def boxes(tmp_path: Path) -> tuple[SigningKey, object, object]:
    """A worker key, the control plane's box to it, and the worker's box to the control plane."""
    worker = SigningKey.generate()
    control = sealing.control_box(tmp_path, identity.public_hex(worker))
    return worker, control, sealing.worker_box(worker, sealing.control_public_hex(tmp_path))


def flip(text: str, at: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[at] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_a_chunk_sealed_by_the_control_plane_opens_only_for_its_worker_and_shows_no_parameters(
        tmp_path: Path) -> None:
    worker, control, mine = boxes(tmp_path)
    message = sealing.seal_chunk(control, CHUNK, 2)  # type: ignore[arg-type]
    assert set(message) == {"sealed", "job_id", "chunk_id", "box"}
    clear = json.dumps({k: v for k, v in message.items() if k != "box"}).replace(CHUNK["job_id"], "")
    for secret in ("123456789", "987654321123", "20000", "params", "pi", "units"):
        assert secret not in clear
    ciphertext = base64.b64decode(message["box"])
    for long_secret in (b"123456789", b"987654321123", b'"params"', b'"units"'):  # too long to match by chance
        assert long_secret not in ciphertext
    assert sealing.open_chunk(mine, message, 2) == CHUNK  # type: ignore[arg-type]
    # Another worker, or a box from another control plane, cannot open it.
    other = sealing.worker_box(SigningKey.generate(), sealing.control_public_hex(tmp_path))
    with pytest.raises(SealError, match="does not open"):
        sealing.open_chunk(other, message, 2)
    (tmp_path / "b").mkdir()
    impostor = sealing.worker_box(worker, sealing.control_public_hex(tmp_path / "b"))
    with pytest.raises(SealError, match="does not open"):
        sealing.open_chunk(impostor, message, 2)


def test_a_tampered_or_moved_chunk_box_is_rejected(tmp_path: Path) -> None:
    _, control, mine = boxes(tmp_path)
    message = sealing.seal_chunk(control, CHUNK, 1)  # type: ignore[arg-type]
    for at in (0, 30, -1):  # nonce, ciphertext, MAC
        with pytest.raises(SealError, match="does not open"):
            sealing.open_chunk(mine, {**message, "box": flip(message["box"], at)}, 1)  # type: ignore[arg-type]
    with pytest.raises(SealError, match="does not match"):
        sealing.open_chunk(mine, {**message, "chunk_id": "c8"}, 1)  # type: ignore[arg-type]
    with pytest.raises(SealError, match="does not match"):
        sealing.open_chunk(mine, message, 2)  # type: ignore[arg-type]  # replayed as another attempt
    with pytest.raises(SealError, match="base64"):
        sealing.open_chunk(mine, {**message, "box": "not base64!"}, 1)  # type: ignore[arg-type]
    with pytest.raises(SealError, match="exactly the fields"):
        sealing.open_chunk(mine, {**message, "params": {}}, 1)  # type: ignore[arg-type]


def test_a_sealed_result_round_trips_and_its_signature_still_covers_the_plaintext(tmp_path: Path) -> None:
    worker, control, mine = boxes(tmp_path)
    settings = Settings().with_(data_dir=tmp_path, pause_on_battery=False)
    sealed_chunk = sealing.seal_chunk(control, CHUNK, 1)  # type: ignore[arg-type]
    sent = process(sealed_chunk, attempt=1, worker_id="w@h", region="r", settings=settings, key=worker)
    assert "payload" not in sent and "error" not in sent and sealing.is_sealed(sent)
    opened = sealing.open_result_from(tmp_path, identity.public_hex(worker), sent)
    result = ChunkResult.from_json(opened)
    assert result.error is None and result.digest_ok() and result.payload["samples"] == 20_000
    results.check(result, identity.public_hex(worker))  # the signature is over the plaintext digest
    plain = process(CHUNK, attempt=1, worker_id="w@h", region="r", settings=settings, key=worker)
    assert plain["payload"] == result.payload  # bit-identical to computing it in the clear
    # Tampered, or opened as if another worker had sent it: rejected.
    with pytest.raises(SealError, match="does not open"):
        sealing.open_result(control, {**sent, "sealed": flip(sent["sealed"], 40)})  # type: ignore[arg-type]
    with pytest.raises(SealError, match="does not open"):
        sealing.open_result_from(tmp_path, identity.public_hex(SigningKey.generate()), sent)
    with pytest.raises(SealError, match="does not match"):
        sealing.open_result(control, {**sent, "chunk_id": "c9"})  # type: ignore[arg-type]
    with pytest.raises(SealError, match="only inside the box"):
        sealing.open_result(control, {**sent, "payload": {"hits": 1}})  # type: ignore[arg-type]
    # A chunk box is not a result box (no reflection).
    with pytest.raises(SealError, match="does not match"):
        sealing.open_result(control, {**sent, "sealed": sealing.seal_chunk(mine, CHUNK, 1)["box"]})  # type: ignore


def test_a_worker_never_computes_in_the_clear_what_should_be_sealed(tmp_path: Path) -> None:
    worker, control, _ = boxes(tmp_path)
    strict = Settings().with_(data_dir=tmp_path, pause_on_battery=False, encryption=True)
    refused = process(CHUNK, attempt=1, worker_id="w@h", region="r", settings=strict, key=worker)
    assert refused["payload"] == {} and "HYDRA_ENCRYPTION is on" in refused["error"]
    results.check(ChunkResult.from_json(refused), identity.public_hex(worker))
    # No key pinned (no control-box.pub in its data dir): the sealed chunk is refused, not guessed at.
    (tmp_path / "elsewhere").mkdir()
    unpinned = strict.with_(data_dir=tmp_path / "elsewhere")
    message = sealing.seal_chunk(control, CHUNK, 1)  # type: ignore[arg-type]
    refused = process(message, attempt=1, worker_id="w@h", region="r", settings=unpinned, key=worker)
    assert refused["payload"] == {} and "no control-plane box key pinned" in refused["error"]
    tampered = process({**message, "box": flip(message["box"], 50)}, attempt=1, worker_id="w@h", region="r",
                       settings=strict, key=worker)
    assert tampered["payload"] == {} and "does not open" in tampered["error"]


def test_the_control_plane_box_key_is_private_stable_and_published_for_local_workers(tmp_path: Path) -> None:
    public = sealing.control_public_hex(tmp_path)
    key_file = tmp_path / sealing.CONTROL_BOX_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (tmp_path / sealing.CONTROL_BOX_PUBLIC_FILE).read_text().strip() == public
    assert public not in key_file.read_text() and sealing.is_box_key(public)
    sealing._control_box_key.cache_clear()  # a new process reads the same key back
    assert sealing.control_public_hex(tmp_path) == public
    assert sealing.pinned_control_key(Settings().with_(data_dir=tmp_path)) == public
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / sealing.CONTROL_BOX_KEY_FILE).write_text("garbage\n")
    with pytest.raises(SealError, match="is not a box key"):
        sealing.control_box_key(tmp_path / "x")


def test_volunteer_credentials_carry_the_box_key_and_pin_it(tmp_path: Path) -> None:
    key = sealing.control_public_hex(tmp_path)
    creds = Credentials("vol1", "vol1@hydra", ("eu",), "redis://vol1:pw@host:6379/0", None, "s", key)
    assert Credentials.from_token(creds.to_token()).box_key == key
    path = tmp_path / "volunteer.json"
    creds.write(path)
    home = Settings().with_(data_dir=tmp_path / "home", join_file=str(path))
    assert sealing.pinned_control_key(home) == key  # from the credentials, not the data dir
    old = {k: v for k, v in creds.to_json().items() if k != "box_key"}  # issued before sealing existed
    assert Credentials.from_json(old).box_key is None
    with pytest.raises(InvalidCredentials, match="box_key"):
        Credentials.from_json({**creds.to_json(), "box_key": "zz"})


def test_hydra_encryption_is_a_boolean_setting_off_by_default() -> None:
    assert Settings.from_env({}).encryption is False
    assert Settings.from_env({"HYDRA_ENCRYPTION": "true"}).encryption is True
    with pytest.raises(ConfigError, match="HYDRA_ENCRYPTION"):
        Settings.from_env({"HYDRA_ENCRYPTION": "maybe"})
