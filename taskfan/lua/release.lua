-- release.lua: free what the consumer of a streaming map (Client.map(...,
-- stream=True)) has read, so an endless map keeps Redis memory flat.
--
-- KEYS[1]  taskfan:{j:ID}:meta     job meta hash (field released)
-- KEYS[2]  taskfan:{j:ID}:results  results hash: the read batches' fields go
-- KEYS[3]  taskfan:{j:ID}:events   events stream, trimmed to its last ARGV[2] entries
-- ARGV[1]  released: batches 0 .. ARGV[1]-1 have been read; record.lua answers
--          "recorded before" for them, so a redelivered batch whose result was
--          freed is not counted twice
-- ARGV[2]  events to keep (more than the batches a reader may not have read yet)
-- ARGV[3..] results fields to delete
--
-- Returns 1, or -1 when the job does not exist (nothing is written).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
if #ARGV > 2 then
  redis.call('HDEL', KEYS[2], unpack(ARGV, 3))
end
local before = tonumber(redis.call('HGET', KEYS[1], 'released') or '0') or 0
if tonumber(ARGV[1]) > before then
  redis.call('HSET', KEYS[1], 'released', ARGV[1])
end
redis.call('XTRIM', KEYS[3], 'MAXLEN', tonumber(ARGV[2]))
return 1
