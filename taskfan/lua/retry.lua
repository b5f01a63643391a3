-- retry.lua: prepare a retry round of a finished job's failed items
-- (Job.retry_failed; the protocol is in _rounds.lua). The job is left as it
-- was; the producer then queues the round's entries (fields r and x) in one
-- MULTI and opens the round (open_round.lua), or the first node that records
-- one of them does.
--
-- KEYS[1]  taskfan:{j:ID}:meta     job meta hash
-- KEYS[2]  taskfan:{j:ID}:results  results hash
-- KEYS[3]  taskfan:{j:ID}:events   events stream
-- ARGV[1]  items to run again (they stop counting as failed once it opens)
-- ARGV[2]  entries the round queues
-- ARGV[3]  JSON list of the batch indexes the round retries
--
-- Returns the round's number (1, 2, ...), 0 when the job is not finished (still
-- running, or cancelled), -1 when it does not exist.
-- reserve_round comes from _rounds.lua, loaded in front of this file.
local meta = redis.call('HMGET', KEYS[1], 'state', 'retry_round')
if not meta[1] then
  return -1
end
if meta[1] ~= 'finished' then
  return 0
end
local round = reserve_round()
local prep = {items = tonumber(ARGV[1]), entries = tonumber(ARGV[2]), batches = ARGV[3],
              base = tonumber(meta[2]) or 0, finished = true}
redis.call('HSET', KEYS[1], 'prep:' .. round, cjson.encode(prep))
return round
