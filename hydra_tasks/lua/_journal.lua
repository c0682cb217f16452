-- Library (prepended to the scripts that say "-- uses: _journal"): the journal's hash chain.
--
-- Every entry carries 'prev', the hash of the entry before it (forty zeros for the first), and
-- 'hash' = SHA-1 of prev followed by the entry's own field names and values in order, each written
-- as <length>:<text>. The chain's newest hash is kept in the head hash (field 'hash'), so an entry
-- that is rewritten, removed or inserted breaks the chain; ledger/chain.py recomputes it, and
-- signed checkpoints kept outside Redis pin its length and head (ledger/audit.py).

-- Append one entry ({name, value, ...}, values as text) to the journal; returns its stream id.
local function append_entry(journal, head, fields)
  local prev = redis.call('HGET', head, 'hash') or string.rep('0', 40)
  local parts = {#prev .. ':' .. prev}
  for i = 1, #fields do
    local text = tostring(fields[i])
    fields[i] = text
    parts[#parts + 1] = #text .. ':' .. text
  end
  local hash = redis.sha1hex(table.concat(parts))
  fields[#fields + 1] = 'prev'
  fields[#fields + 1] = prev
  fields[#fields + 1] = 'hash'
  fields[#fields + 1] = hash
  local id = redis.call('XADD', journal, '*', unpack(fields))
  redis.call('HSET', head, 'hash', hash, 'id', id)
  redis.call('HINCRBY', head, 'length', 1)
  return id
end
