-- TEAM: move an account to another team (or none), carrying what it ever earned from the old team's
-- total to the new one's, so the team leaderboard is read from a sorted set, not summed per request.
-- Runs inside the profile's MULTI (ledger/profiles.set_profile). Returns 1 if the team changed, else 0.
local teams = KEYS[1]          -- hash: account -> its team
local teams_earned = KEYS[2]   -- zset: team -> its members' earned micro-tokens
local members = KEYS[3]        -- hash: team -> accounts in it
local earned = KEYS[4]         -- hash: account -> micro-tokens ever earned
local account = ARGV[1]
local team = ARGV[2]           -- '' for none

local old = redis.call('HGET', teams, account) or ''
if old == team then return 0 end
local amount = redis.call('HGET', earned, account) or '0'
if old ~= '' then
  redis.call('ZINCRBY', teams_earned, '-' .. amount, old)
  if redis.call('HINCRBY', members, old, -1) <= 0 then
    redis.call('HDEL', members, old)
    redis.call('ZREM', teams_earned, old)
  end
end
if team == '' then
  redis.call('HDEL', teams, account)
else
  redis.call('HSET', teams, account, team)
  redis.call('ZINCRBY', teams_earned, amount, team)
  redis.call('HINCRBY', members, team, 1)
end
return 1
