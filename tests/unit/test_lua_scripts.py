"""The Lua scripts keep the state layer's rules: each names its inputs at the top, and every key
it touches comes from KEYS (so a script's keys are known before it runs), never built in Lua."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hydra_tasks import lua

LUA_DIR = Path(lua.__file__).parent
SCRIPTS = sorted(p.stem for p in LUA_DIR.glob("*.lua") if not p.stem.startswith("_"))
# Commands whose first argument is a key (every command the scripts use is listed, see below).
KEY_COMMANDS = {"HGET", "HSET", "HDEL", "HEXISTS", "HINCRBY", "HMGET", "HGETALL", "SADD", "SREM", "SCARD",
                "SISMEMBER", "SMEMBERS", "ZADD", "ZREM", "ZSCORE", "ZRANGE", "ZREVRANGE", "ZCARD", "ZPOPMAX",
                "ZPOPMIN", "LPUSH", "LPOP", "LREM", "LRANGE", "LINDEX", "LLEN", "RPUSH", "LTRIM", "HLEN", "DEL", "XADD",
                "XRANGE", "EXISTS", "RENAME", "PERSIST", "ZINCRBY", "HKEYS", "EXPIRE", "HINCRBYFLOAT", "EXPIREAT", "SET"}
CALL = re.compile(r"redis\.call\('([A-Z]+)',\s*([^,)]+)")
KEY_LOCAL = re.compile(r"^\s*local (\w+) = KEYS\[[\w +]+\]", re.MULTILINE)
# Library helpers that hand out keys taken from KEYS: ledger_keys() fields, inflight_keys() results,
# FINISH's lease hashes read from KEYS[k] in its loops, and the parameters of library functions that
# their callers fill from KEYS (append_entry's journal and head).
LIBRARY_KEYS = {"k.accounts", "k.balances", "k.earned", "k.stats", "k.minted", "k.daily", "k.journal", "k.head",
                "k.rank_balance", "k.rank_earned", "k.teams", "k.teams_earned",
                "holder_key", "backup_key", "lease", "journal", "head"}


def test_there_are_scripts_and_each_loads_with_its_libraries() -> None:
    assert {"grant", "merge", "requeue", "finish", "backup", "mint", "transfer", "grid_info"} <= set(SCRIPTS)
    for name in SCRIPTS:
        text = lua.source(name)
        for used in re.findall(r"^-- uses: (.+)$", (LUA_DIR / f"{name}.lua").read_text(), re.MULTILINE):
            for lib in used.split(","):
                assert (LUA_DIR / f"{lib.strip()}.lua").read_text() in text


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_key_a_script_touches_comes_from_keys(name: str) -> None:
    own = (LUA_DIR / f"{name}.lua").read_text()
    text = lua.source(name)
    allowed = set(KEY_LOCAL.findall(text)) | LIBRARY_KEYS
    calls = CALL.findall(text)
    assert calls, f"{name}.lua calls no Redis command?"
    for command, first in calls:
        assert command in KEY_COMMANDS, f"{name}.lua: {command} is not in this test's list; add it knowingly"
        key = first.strip()
        assert ".." not in key and "ARGV" not in key, f"{name}.lua builds a key in Lua: {command} {key}"
        assert key in allowed or re.fullmatch(r"KEYS\[[\w +]+\]", key), f"{name}.lua: {command} on {key}"
    assert "ARGV[" not in "".join(k for _, k in calls)
    # Inputs are named at the top: the first code lines bind KEYS and ARGV to names.
    code = [line for line in own.splitlines() if line.strip() and not line.lstrip().startswith("--")]
    assert code[0].startswith("local ") and ("KEYS[" in code[0] or "ARGV[" in code[0] or "cjson" in code[0]), \
        f"{name}.lua does not start by naming its inputs: {code[0]!r}"


def test_no_chunk_spec_is_assembled_from_strings_in_lua() -> None:
    for name in SCRIPTS:
        assert '"chunk_id"' not in lua.source(name) and "'\"start\"" not in lua.source(name)
