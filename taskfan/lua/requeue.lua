-- requeue.lua: open a retry round on a job for one dead-lettered batch, so that
-- its entry can run again (taskfan dead QUEUE ID --requeue). The caller then
-- puts the entry back on the queue stream with fields r (the round) and x (its
-- items' offsets); nodes record it into "<index>.<round>", which overlays the
-- failures the dead letter left, and the job finishes again once it is recorded.
--
-- Idempotent per dead letter: the round is remembered in the field
-- "dead:<dead-letter id>", and a second call returns it without changing anything
-- (a requeue cut short between this script and the queue write can be rerun).
--
-- KEYS[1]  taskfan:{j:ID}:meta     job meta hash
-- KEYS[2]  taskfan:{j:ID}:results  results hash (its expiry is removed)
-- KEYS[3]  taskfan:{j:ID}:events   events stream (its expiry is removed)
-- ARGV[1]  id of the dead letter
-- ARGV[2]  retry_round the caller saw when it checked the items (compare-and-set:
--          a round opened meanwhile, by `taskfan retry` or another requeue, may
--          have run the same items again)
-- ARGV[3]  items to run again (they stop counting as failed)
-- ARGV[4]  the batch index
--
-- Returns the round's number (1, 2, ...), 0 when the job changed meanwhile
-- (another round opened), -1 when the job does not exist, -2 when it was
-- cancelled, -3 when it is still being enqueued (not sealed).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return -1
end
local marker = redis.call('HGET', KEYS[1], 'dead:' .. ARGV[1])
if marker then
  return tonumber(marker)
end
if state == 'cancelled' then
  return -2
end
if redis.call('HGET', KEYS[1], 'sealed') ~= '1' then
  return -3
end
if (tonumber(redis.call('HGET', KEYS[1], 'retry_round')) or 0) ~= tonumber(ARGV[2]) then
  return 0
end
local round = redis.call('HINCRBY', KEYS[1], 'retry_round', 1)
redis.call('HINCRBY', KEYS[1], 'failed', -tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[1], 'retry_batches', 1)
redis.call('HSET', KEYS[1], 'round:' .. round, '[' .. ARGV[4] .. ']', 'dead:' .. ARGV[1], round)
if state == 'finished' then
  redis.call('HSET', KEYS[1], 'state', 'active')
  redis.call('HDEL', KEYS[1], 'finished_at')
  for i = 1, 3 do
    redis.call('PERSIST', KEYS[i])
  end
end
redis.call('XADD', KEYS[3], '*', 'retry', round)
return round
