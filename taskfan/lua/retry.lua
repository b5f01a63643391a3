-- retry.lua: open a retry round on a finished job. The producer then queues
-- the round's entries (fields r and x), which nodes record into the fields
-- "<index>.<round>"; the job finishes again once they are all recorded.
--
-- KEYS[1]  taskfan:{j:ID}:meta     job meta hash
-- KEYS[2]  taskfan:{j:ID}:results  results hash (its expiry is removed)
-- KEYS[3]  taskfan:{j:ID}:events   events stream (its expiry is removed)
-- ARGV[1]  items to run again (they stop counting as failed)
-- ARGV[2]  entries the round queues
-- ARGV[3]  JSON list of the batch indexes the round retries
--
-- Returns the round's number (1, 2, ...), 0 when the job is not finished (still
-- running, or cancelled), -1 when it does not exist.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return -1
end
if state ~= 'finished' then
  return 0
end
local round = redis.call('HINCRBY', KEYS[1], 'retry_round', 1)
redis.call('HINCRBY', KEYS[1], 'failed', -tonumber(ARGV[1]))
redis.call('HINCRBY', KEYS[1], 'retry_batches', ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'active', 'round:' .. round, ARGV[3])
redis.call('HDEL', KEYS[1], 'finished_at')
for i = 1, 3 do
  redis.call('PERSIST', KEYS[i])
end
redis.call('XADD', KEYS[3], '*', 'retry', round)
return round
