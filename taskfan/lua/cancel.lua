-- cancel.lua: cancel an active job. Batches still queued are skipped by nodes
-- (they check job states as they read), batches in flight are not recorded
-- (record.lua refuses a cancelled job), and waiting producers see end=cancelled.
--
-- KEYS[1]  taskfan:{j:ID}:meta     job meta hash
-- KEYS[2]  taskfan:{j:ID}:results  results hash (only given an expiry here)
-- KEYS[3]  taskfan:{j:ID}:events   events stream
-- ARGV[1]  now, in seconds since the epoch
-- ARGV[2]  "1" to terminate the items already running (a hard cancel): the meta
--          gets terminate=1, which nodes read with the job's state at their
--          heartbeat and kill the pool processes running the job's items. Given
--          for a job cancelled before, it upgrades that cancel to a hard one.
--
-- Returns 1 when cancelled, 0 when the job had already ended, -1 when it does not exist.
-- end_job comes from _end_job.lua, loaded in front of this file.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local meta = redis.call('HMGET', KEYS[1], 'state', 'result_ttl')
if meta[1] == 'cancelled' and ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'terminate', '1')
end
if meta[1] ~= 'active' then
  return 0
end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'terminate', '1')
end
end_job('cancelled', ARGV[1], meta[2])
return 1
