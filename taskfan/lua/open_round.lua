-- open_round.lua: open a prepared retry round (the protocol is in _rounds.lua):
-- its items stop counting as failed, the job is active again until the round's
-- entries are recorded, its keys lose their expiry, waiters see "retry=<n>".
-- Idempotent: a round already open answers its number again.
--
-- KEYS[1]  taskfan:{j:ID}:meta     job meta hash
-- KEYS[2]  taskfan:{j:ID}:results  results hash (its expiry is removed)
-- KEYS[3]  taskfan:{j:ID}:events   events stream (its expiry is removed)
-- ARGV[1]  the round's number
--
-- Returns the round's number when it is open, 0 when it is void (another round
-- opened since it was prepared: its entries' results will be dropped), -1 when
-- the job does not exist.
-- open_round comes from _rounds.lua, loaded in front of this file.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
return open_round(tonumber(ARGV[1]))
