-- record.lua: record one batch's results exactly once, and finish the job when
-- it was the last batch of a sealed job.
--
-- KEYS[1]  taskfan:{j:ID}:meta     job meta hash (counters, state, sealed, batches)
-- KEYS[2]  taskfan:{j:ID}:results  results hash, field = batch index
-- KEYS[3]  taskfan:{j:ID}:events   events stream that producers block on
-- ARGV[1]  field: the batch index, or "<index>.<round>" for a retry round
-- ARGV[2]  result entry (see taskfan/outcomes.py)
-- ARGV[3]  items of the batch that succeeded
-- ARGV[4]  items of the batch that failed
-- ARGV[5]  now, in seconds since the epoch
--
-- Returns 1 when recorded, 2 when recorded and it finished the job, 0 when the batch was recorded before (a redelivery:
-- nothing changes), -1 when the job does not exist (aborted, purged or expired:
-- nothing is written, so no orphan keys appear), -2 when the job was cancelled
-- or abandoned (its producer died mid-enqueue: abandon.lua), -3 when the field
-- belongs to a retry round that can never open (void: another round opened
-- since it was prepared; see _rounds.lua).
-- end_job and open_round come from _end_job.lua and _rounds.lua, loaded in
-- front of this file.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return -1
end
if state == 'cancelled' or state == 'abandoned' then
  return -2
end
-- A retry round's entry ("<index>.<round>") opens its round if the producer has
-- not yet (it crashed, or is slower than us); a void round's results are dropped.
local round = tonumber(string.match(ARGV[1], '%.(%d+)$'))
if round then
  if open_round(round) == 0 then
    return -3
  end
  state = redis.call('HGET', KEYS[1], 'state')
end
-- A streaming map frees the results its consumer read (release.lua): a batch
-- below that mark was recorded before, though its field is gone.
if not round and tonumber(ARGV[1]) < (tonumber(redis.call('HGET', KEYS[1], 'released')) or 0) then
  return 0
end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'ok', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'failed', ARGV[4])
local done = redis.call('HINCRBY', KEYS[1], 'batches_done', 1)
redis.call('XADD', KEYS[3], '*', 'b', ARGV[1])
local meta = redis.call('HMGET', KEYS[1], 'sealed', 'batches', 'result_ttl', 'retry_batches')
local expected = tonumber(meta[2]) + (tonumber(meta[4]) or 0)
if meta[1] == '1' and expected == done and state == 'active' then
  end_job('finished', ARGV[5], meta[3])
  return 2
end
return 1
