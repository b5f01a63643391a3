-- requeue.lua: prepare the retry round that runs one dead-lettered batch again
-- (taskfan dead QUEUE ID --requeue; the protocol is in _rounds.lua). The job is
-- left as it was; the caller then moves the entry back to the queue stream with
-- fields r (the round) and x (its items' offsets), in one MULTI, and opens the
-- round (open_round.lua), or the node that records the entry does.
--
-- Once the round is open, the field "dead:<dead-letter id>" remembers it, and
-- a second call returns it without preparing anything.
--
-- KEYS[1]  taskfan:{j:ID}:meta     job meta hash
-- KEYS[2]  taskfan:{j:ID}:results  results hash
-- KEYS[3]  taskfan:{j:ID}:events   events stream
-- ARGV[1]  id of the dead letter
-- ARGV[2]  retry_round the caller saw when it checked the items (compare-and-set:
--          a round opened meanwhile, by `taskfan retry` or another requeue, may
--          have run the same items again)
-- ARGV[3]  items to run again (they stop counting as failed once it opens)
-- ARGV[4]  the batch index
--
-- Returns the round's number (1, 2, ...), 0 when the job changed meanwhile
-- (another round opened), -1 when the job does not exist, -2 when it was
-- cancelled or abandoned, -3 when it is still being enqueued (not sealed).
-- reserve_round comes from _rounds.lua, loaded in front of this file.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return -1
end
local marker = redis.call('HGET', KEYS[1], 'dead:' .. ARGV[1])
if marker then
  return tonumber(marker)
end
if state == 'cancelled' or state == 'abandoned' then
  return -2
end
if redis.call('HGET', KEYS[1], 'sealed') ~= '1' then
  return -3
end
local base = tonumber(redis.call('HGET', KEYS[1], 'retry_round')) or 0
if base ~= tonumber(ARGV[2]) then
  return 0
end
local round = reserve_round()
local prep = {items = tonumber(ARGV[3]), entries = 1, batches = '[' .. ARGV[4] .. ']',
              base = base, finished = false, dead = ARGV[1]}
redis.call('HSET', KEYS[1], 'prep:' .. round, cjson.encode(prep))
return round
