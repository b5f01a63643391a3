-- seal.lua: the producer has sent every batch of a job; fix its size, and finish
-- the job when the nodes already recorded every batch (or it has none).
--
-- KEYS[1]  taskfan:{j:ID}:meta     job meta hash
-- KEYS[2]  taskfan:{j:ID}:results  results hash (only given an expiry here)
-- KEYS[3]  taskfan:{j:ID}:events   events stream
-- ARGV[1]  total number of items
-- ARGV[2]  number of batches
-- ARGV[3]  now, in seconds since the epoch
-- ARGV[4]  the signature of the totals (meta field tsig), or "" when unsigned
--
-- Returns 1 when sealed, 2 when sealed and finished, -1 when the job does not
-- exist, -2 when it was abandoned (its enqueue lease lapsed, abandon.lua): the
-- producer learns that nobody will run the rest.
-- end_job comes from _end_job.lua, loaded in front of this file.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
if redis.call('HGET', KEYS[1], 'state') == 'abandoned' then
  return -2
end
redis.call('HSET', KEYS[1], 'sealed', '1', 'total', ARGV[1], 'batches', ARGV[2])
if ARGV[4] ~= nil and ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'tsig', ARGV[4])
end
redis.call('XADD', KEYS[3], '*', 'sealed', ARGV[2])
local meta = redis.call('HMGET', KEYS[1], 'batches_done', 'result_ttl', 'state')
if (tonumber(meta[1]) or 0) == tonumber(ARGV[2]) and meta[3] == 'active' then
  end_job('finished', ARGV[3], meta[2])
  return 2
end
return 1
